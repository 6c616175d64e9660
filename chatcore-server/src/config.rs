//! Server configuration: environment variables, optionally a TOML file with
//! the same keys (lower case, without the `CHATCORE_` prefix). The
//! environment wins over the file; the file wins over the defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::Deserialize;

/// Default database: SQLite beside the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://chatcore.db?mode=rwc";
/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Everything the server reads at start.
#[derive(Debug, Clone)]
pub struct Config {
    /// `CHATCORE_DATABASE_URL`.
    pub database_url: String,
    /// `CHATCORE_DATABASE_SCHEMA`: PostgreSQL schema to use (created if
    /// missing; default: the connection's search path).
    pub database_schema: Option<String>,
    /// `CHATCORE_DATABASE_ROLE`: the PostgreSQL role the server's
    /// connections run as, bound by row-level security (default
    /// `chatcore_app`, created by the migration; `none` or empty: the login
    /// user's own rights). Migrations run as the login user.
    pub database_role: Option<String>,
    /// `CHATCORE_VECTOR_CACHE_MB`: memory for datasets' vectors kept for
    /// exact search where pgvector is not used (SQLite).
    pub vector_cache_mb: u64,
    /// `CHATCORE_LISTEN`.
    pub listen: SocketAddr,
    /// `CHATCORE_MASTER_KEY`: base64 of 32 bytes (encryption at rest).
    pub master_key: Option<SecretString>,
    /// `CHATCORE_MASTER_KEYS_OLD`: comma-separated older master keys that
    /// still open values sealed before a rotation.
    pub master_keys_old: Vec<SecretString>,
    /// `CHATCORE_OPERATOR_KEY`: bearer for `/v1/admin/*` (off when unset).
    pub operator_key: Option<SecretString>,
    /// `CHATCORE_REDIS_URL`: shared rate limits.
    pub redis_url: Option<SecretString>,
    /// `CHATCORE_REDIS_FAILURE`: what rate limits do while Redis fails:
    /// `refuse` (the default: chat answers 503) or `local` (each instance
    /// counts alone meanwhile, so limits multiply by the instances).
    pub redis_failure: chatcore::ratelimit::OnRedisFailure,
    /// `CHATCORE_SQLITE_WRITER`: the connection of the store's turn writer
    /// on a SQLite file: `direct` (default; its own connection and thread,
    /// no hand-off per statement) or `sqlx` (a connection of sqlx's pool,
    /// kept for comparison).
    pub sqlite_direct_writer: bool,
    /// `CHATCORE_WRITER_TRANSACTIONS`: PostgreSQL, most group-commit
    /// transactions of the turn writer in flight at once (1 to 16,
    /// default 4).
    pub writer_transactions: usize,
    /// `CHATCORE_MAX_BODY_BYTES`: request body limit.
    pub max_body_bytes: usize,
    /// `CHATCORE_SHUTDOWN_GRACE_SECS`: how long open streams may finish.
    pub shutdown_grace_secs: u64,
    /// `CHATCORE_MAX_UPLOAD_BYTES`: document upload limit.
    pub max_upload_bytes: usize,
    /// `CHATCORE_REQUEST_TIMEOUT_SECS`: longest non-streamed chat request.
    pub request_timeout_secs: u64,
    /// `OPENAI_API_KEY`: used for the demo tenant on first start.
    pub openai_api_key: Option<SecretString>,
    /// This instance's name among the instances sharing the database
    /// (`CHATCORE_INSTANCE_NAME`; `serve` defaults to host name and listen
    /// address): stable across restarts, so that a restarted instance
    /// closes the turns its previous run left pending at once. Without a
    /// name an instance is anonymous and its orphans are found by their
    /// stale heartbeat.
    pub instance_name: Option<String>,
    /// `CHATCORE_EGRESS_ALLOW`: comma-separated CIDRs, `ip:port`, host
    /// names or `host:port` that provider calls may reach although they are
    /// internal (loopback, private, link-local, ...): local model servers.
    pub egress: chatcore::provider::EgressPolicy,
    /// `CHATCORE_METRICS_KEY`: bearer for `/metrics` (without it, `/metrics`
    /// answers only clients on loopback).
    pub metrics_key: Option<SecretString>,
    /// `CHATCORE_AUTH_FAILURES_PER_MINUTE`: failed authentications admitted
    /// per client IP per minute before 429s (default 20; 0 turns it off).
    pub auth_failures_per_minute: Option<u32>,
    /// `CHATCORE_HEADER_READ_TIMEOUT_SECS`: how long a client may take to
    /// send a request's headers (HTTP/1; also how long a kept-alive
    /// connection may wait for its next request), default 10.
    pub header_read_timeout_secs: u64,
    /// `CHATCORE_BODY_TIMEOUT_SECS`: the longest pause inside a request
    /// body before a 408, default 30.
    pub body_timeout_secs: u64,
    /// `CHATCORE_IDLE_TIMEOUT_SECS`: a connection on which nothing moves
    /// for this long is closed (after the reply in progress, if any),
    /// default 60.
    pub idle_timeout_secs: u64,
    /// `CHATCORE_MAX_CONNECTIONS`: open connections at most; beyond, new
    /// ones wait to be accepted (default 25,000).
    pub max_connections: usize,
    /// `CHATCORE_LOG_FORMAT`: `text` (default, for people) or `json` (one
    /// JSON object a line, with the fields of the request's span).
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object a line.
    Json,
}

/// A configuration error, said in words a deployer can act on.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML file cannot be read or parsed.
    #[error("config file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A value does not parse.
    #[error("{key}: {reason}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    database_url: Option<String>,
    database_schema: Option<String>,
    database_role: Option<String>,
    vector_cache_mb: Option<u64>,
    listen: Option<String>,
    master_key: Option<String>,
    master_keys_old: Option<String>,
    operator_key: Option<String>,
    redis_url: Option<String>,
    redis_failure: Option<String>,
    sqlite_writer: Option<String>,
    writer_transactions: Option<u64>,
    max_body_bytes: Option<usize>,
    shutdown_grace_secs: Option<u64>,
    request_timeout_secs: Option<u64>,
    max_upload_bytes: Option<usize>,
    instance_name: Option<String>,
    egress_allow: Option<String>,
    metrics_key: Option<String>,
    auth_failures_per_minute: Option<u32>,
    header_read_timeout_secs: Option<u64>,
    body_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    max_connections: Option<u64>,
    log_format: Option<String>,
}

impl Config {
    /// Reads the environment, and `file` if given.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, |k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// Like [`Config::load`], with the environment given as a function (tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let fc: FileConfig = match file {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError::File {
                    path: p.into(),
                    reason: e.to_string(),
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::File {
                    path: p.into(),
                    reason: e.to_string(),
                })?
            }
            None => FileConfig::default(),
        };
        let pick = |key: &str, from_file: Option<String>| env(key).or(from_file);
        let listen_s = pick("CHATCORE_LISTEN", fc.listen).unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen = listen_s.parse().map_err(|_| ConfigError::Invalid {
            key: "CHATCORE_LISTEN",
            reason: format!("{listen_s:?} is not host:port"),
        })?;
        let num =
            |key: &'static str, from_file: Option<u64>, default: u64| -> Result<u64, ConfigError> {
                match env(key) {
                    Some(v) => v.parse().map_err(|_| ConfigError::Invalid {
                        key,
                        reason: format!("{v:?} is not a number"),
                    }),
                    None => Ok(from_file.unwrap_or(default)),
                }
            };
        let secret = |s: String| SecretString::from(s);
        let egress = match pick("CHATCORE_EGRESS_ALLOW", fc.egress_allow) {
            Some(list) => chatcore::provider::EgressPolicy::parse(&list).map_err(|reason| {
                ConfigError::Invalid {
                    key: "CHATCORE_EGRESS_ALLOW",
                    reason,
                }
            })?,
            None => chatcore::provider::EgressPolicy::default(),
        };
        let auth_failures_per_minute = match env("CHATCORE_AUTH_FAILURES_PER_MINUTE") {
            Some(v) => Some(v.parse().map_err(|_| ConfigError::Invalid {
                key: "CHATCORE_AUTH_FAILURES_PER_MINUTE",
                reason: format!("{v:?} is not a number"),
            })?),
            None => fc.auth_failures_per_minute,
        };
        let redis_failure = match pick("CHATCORE_REDIS_FAILURE", fc.redis_failure) {
            None => Default::default(),
            Some(v) => v.parse().map_err(|reason| ConfigError::Invalid {
                key: "CHATCORE_REDIS_FAILURE",
                reason,
            })?,
        };
        let sqlite_direct_writer = match pick("CHATCORE_SQLITE_WRITER", fc.sqlite_writer).as_deref()
        {
            None | Some("direct") => true,
            Some("sqlx") => false,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: "CHATCORE_SQLITE_WRITER",
                    reason: format!("{other:?} is not direct or sqlx"),
                });
            }
        };
        let writer_transactions = match num(
            "CHATCORE_WRITER_TRANSACTIONS",
            fc.writer_transactions,
            chatcore::store::DEFAULT_WRITER_TRANSACTIONS as u64,
        )? {
            n @ 1..=16 => n as usize,
            n => {
                return Err(ConfigError::Invalid {
                    key: "CHATCORE_WRITER_TRANSACTIONS",
                    reason: format!("{n} is not between 1 and 16"),
                });
            }
        };
        let log_format = match pick("CHATCORE_LOG_FORMAT", fc.log_format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: "CHATCORE_LOG_FORMAT",
                    reason: format!("{other:?} is not text or json"),
                });
            }
        };
        Ok(Self {
            header_read_timeout_secs: num(
                "CHATCORE_HEADER_READ_TIMEOUT_SECS",
                fc.header_read_timeout_secs,
                10,
            )?,
            body_timeout_secs: num("CHATCORE_BODY_TIMEOUT_SECS", fc.body_timeout_secs, 30)?,
            idle_timeout_secs: num("CHATCORE_IDLE_TIMEOUT_SECS", fc.idle_timeout_secs, 60)?,
            max_connections: num("CHATCORE_MAX_CONNECTIONS", fc.max_connections, 25_000)?.max(1)
                as usize,
            log_format,
            database_url: pick("CHATCORE_DATABASE_URL", fc.database_url)
                .unwrap_or_else(|| DEFAULT_DATABASE_URL.into()),
            database_schema: pick("CHATCORE_DATABASE_SCHEMA", fc.database_schema),
            database_role: match pick("CHATCORE_DATABASE_ROLE", fc.database_role) {
                None => Some(chatcore::store::DEFAULT_DATABASE_ROLE.to_string()),
                Some(r) if r.trim().is_empty() || r.trim().eq_ignore_ascii_case("none") => None,
                Some(r) => Some(r.trim().to_string()),
            },
            vector_cache_mb: num("CHATCORE_VECTOR_CACHE_MB", fc.vector_cache_mb, 512)?,
            listen,
            master_key: pick("CHATCORE_MASTER_KEY", fc.master_key).map(secret),
            master_keys_old: pick("CHATCORE_MASTER_KEYS_OLD", fc.master_keys_old)
                .map(|s| {
                    s.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| secret(s.into()))
                        .collect()
                })
                .unwrap_or_default(),
            operator_key: pick("CHATCORE_OPERATOR_KEY", fc.operator_key).map(secret),
            redis_url: pick("CHATCORE_REDIS_URL", fc.redis_url).map(secret),
            redis_failure,
            sqlite_direct_writer,
            writer_transactions,
            max_body_bytes: num(
                "CHATCORE_MAX_BODY_BYTES",
                fc.max_body_bytes.map(|v| v as u64),
                1 << 20,
            )? as usize,
            shutdown_grace_secs: num("CHATCORE_SHUTDOWN_GRACE_SECS", fc.shutdown_grace_secs, 30)?,
            max_upload_bytes: num(
                "CHATCORE_MAX_UPLOAD_BYTES",
                fc.max_upload_bytes.map(|v| v as u64),
                10 << 20,
            )? as usize,
            request_timeout_secs: num(
                "CHATCORE_REQUEST_TIMEOUT_SECS",
                fc.request_timeout_secs,
                300,
            )?,
            openai_api_key: env("OPENAI_API_KEY").map(secret),
            instance_name: pick("CHATCORE_INSTANCE_NAME", fc.instance_name),
            metrics_key: pick("CHATCORE_METRICS_KEY", fc.metrics_key).map(secret),
            egress,
            auth_failures_per_minute,
        })
    }

    /// How to open the store.
    pub fn store_options(&self) -> chatcore::store::StoreOptions {
        chatcore::store::StoreOptions {
            schema: self.database_schema.clone(),
            database_role: self.database_role.clone(),
            vector_cache_bytes: (self.vector_cache_mb as usize).saturating_mul(1024 * 1024),
            instance_name: self.instance_name.clone(),
            sqlite_direct_writer: self.sqlite_direct_writer,
            writer_transactions: self.writer_transactions,
            ..Default::default()
        }
    }

    /// The instance name the server uses when none is configured: host
    /// name and listen address, unique among live processes and the same
    /// after a restart.
    pub fn default_instance_name(&self) -> String {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        format!("{host}:{}", self.listen)
    }

    /// The SQLite database file, if the database is a SQLite file.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        let rest = self.database_url.strip_prefix("sqlite:")?;
        let rest = rest.trim_start_matches("//");
        let path = rest.split('?').next().unwrap_or("");
        if path.is_empty() || path == ":memory:" || self.database_url.contains("mode=memory") {
            return None;
        }
        Some(PathBuf::from(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn defaults() {
        let c = Config::load_from(None, env(&[])).unwrap();
        assert_eq!(c.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert!(c.master_key.is_none() && c.operator_key.is_none());
        assert_eq!(c.sqlite_path(), Some(PathBuf::from("chatcore.db")));
    }

    #[test]
    fn env_wins_over_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "listen = \"127.0.0.1:9000\"\noperator_key = \"from-file\"\nmaster_keys_old = \"a, b\"\n").unwrap();
        let c = Config::load_from(Some(&f), env(&[("CHATCORE_LISTEN", "0.0.0.0:7000")])).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:7000");
        assert_eq!(c.operator_key.unwrap().expose_secret(), "from-file");
        assert_eq!(c.master_keys_old.len(), 2);
    }

    #[test]
    fn errors_name_the_key_and_never_echo_secrets() {
        let e = Config::load_from(None, env(&[("CHATCORE_LISTEN", "nope")])).unwrap_err();
        assert!(e.to_string().contains("CHATCORE_LISTEN"));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "bogus_key = 1\n").unwrap();
        assert!(
            Config::load_from(Some(&f), env(&[]))
                .unwrap_err()
                .to_string()
                .contains("bogus_key")
        );
        let c =
            Config::load_from(None, env(&[("CHATCORE_OPERATOR_KEY", "super-secret-op")])).unwrap();
        assert!(!format!("{c:?}").contains("super-secret-op"));
    }

    #[test]
    fn egress_allow_list_from_env_or_file() {
        let c = Config::load_from(
            None,
            env(&[(
                "CHATCORE_EGRESS_ALLOW",
                "127.0.0.1:11434, 10.0.0.0/8, ollama.lan",
            )]),
        )
        .unwrap();
        assert_eq!(c.egress.rules().len(), 3);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "egress_allow = \"192.168.0.0/16\"\nmetrics_key = \"m-key\"\n",
        )
        .unwrap();
        let c = Config::load_from(Some(&f), env(&[])).unwrap();
        assert_eq!(c.egress.rules().len(), 1);
        assert!(c.metrics_key.is_some());
        let e =
            Config::load_from(None, env(&[("CHATCORE_EGRESS_ALLOW", "not a rule!")])).unwrap_err();
        assert!(e.to_string().contains("CHATCORE_EGRESS_ALLOW"), "{e}");
        assert!(
            Config::load_from(None, env(&[]))
                .unwrap()
                .egress
                .rules()
                .is_empty()
        );
    }

    #[test]
    fn writer_transactions_from_env_or_file_and_bounded() {
        let load = |v: &str| {
            Config::load_from(None, env(&[("CHATCORE_WRITER_TRANSACTIONS", v)]))
                .map(|c| c.store_options().writer_transactions)
        };
        assert_eq!(
            Config::load_from(None, env(&[]))
                .unwrap()
                .store_options()
                .writer_transactions,
            chatcore::store::DEFAULT_WRITER_TRANSACTIONS
        );
        assert_eq!(load("1").unwrap(), 1);
        assert_eq!(load("16").unwrap(), 16);
        for bad in ["0", "17", "four"] {
            let e = load(bad).unwrap_err().to_string();
            assert!(e.contains("CHATCORE_WRITER_TRANSACTIONS"), "{bad}: {e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "writer_transactions = 2\n").unwrap();
        let c = Config::load_from(Some(&f), env(&[])).unwrap();
        assert_eq!(c.store_options().writer_transactions, 2);
    }

    #[test]
    fn sqlite_paths() {
        let with = |u: &str| {
            Config::load_from(None, env(&[("CHATCORE_DATABASE_URL", u)]))
                .unwrap()
                .sqlite_path()
        };
        assert_eq!(
            with("sqlite:///tmp/x.db?mode=rwc"),
            Some(PathBuf::from("/tmp/x.db"))
        );
        assert_eq!(with("sqlite::memory:"), None);
        assert_eq!(with("postgres://localhost/db"), None);
    }
}
