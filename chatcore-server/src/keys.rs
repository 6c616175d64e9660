//! Where the master key comes from.
//!
//! `CHATCORE_MASTER_KEY` when set. Otherwise, for the embedded SQLite
//! default, a key file beside the database (`<database>.key`, created with
//! 0600 permissions and a warning on first start). PostgreSQL deployments
//! run several instances that must share one key, so there it is required.

use std::io::Write;
use std::path::{Path, PathBuf};

use chatcore::crypto::Keyring;
use secrecy::{ExposeSecret, SecretString};

use crate::config::Config;

/// Why no keyring could be built.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// No key configured where one is required.
    #[error(
        "CHATCORE_MASTER_KEY must be set (base64 of 32 random bytes, e.g. `openssl rand -base64 32`) when the database is not a local SQLite file"
    )]
    Missing,
    /// The key or key file is malformed.
    #[error("master key: {0}")]
    Bad(String),
    /// The key file cannot be read or written.
    #[error("master key file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

/// The key file used beside a SQLite database.
pub fn key_file_for(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".key");
    PathBuf::from(s)
}

/// Builds the keyring from the configuration (see the module docs).
pub fn keyring(config: &Config) -> Result<Keyring, KeyError> {
    let current = match (&config.master_key, config.sqlite_path()) {
        (Some(k), _) => k.clone(),
        (None, Some(db)) => load_or_create_key_file(&key_file_for(&db))?,
        (None, None) if config.database_url.starts_with("sqlite:") => {
            tracing::warn!(
                "in-memory database without CHATCORE_MASTER_KEY: using a throwaway master key"
            );
            Keyring::generate_base64()
        }
        (None, None) => return Err(KeyError::Missing),
    };
    Keyring::from_base64(&current, &config.master_keys_old)
        .map_err(|e| KeyError::Bad(e.to_string()))
}

fn load_or_create_key_file(path: &Path) -> Result<SecretString, KeyError> {
    let file_err = |e: std::io::Error| KeyError::File {
        path: path.into(),
        reason: e.to_string(),
    };
    match std::fs::read_to_string(path) {
        Ok(s) => return Ok(SecretString::from(s.trim().to_string())),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(file_err(e)),
        Err(_) => {}
    }
    let key = Keyring::generate_base64();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(file_err)?;
    f.write_all(key.expose_secret().as_bytes())
        .map_err(file_err)?;
    f.sync_all().map_err(file_err)?;
    tracing::warn!(
        path = %path.display(),
        "no CHATCORE_MASTER_KEY: created a master key file (0600). Back it up: without it stored provider keys cannot be read"
    );
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> Config {
        Config::load_from(None, |k| {
            (k == "CHATCORE_DATABASE_URL").then(|| url.to_string())
        })
        .unwrap()
    }

    #[test]
    fn key_file_is_created_once_with_0600() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("c.db");
        let cfg = config(&format!("sqlite://{}?mode=rwc", db.display()));
        let a = keyring(&cfg).unwrap();
        let kf = key_file_for(&db);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&kf).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let b = keyring(&cfg).unwrap();
        assert_eq!(
            a.current_key_id(),
            b.current_key_id(),
            "the same key on the next start"
        );
    }

    #[test]
    fn postgres_requires_a_key() {
        assert!(matches!(
            keyring(&config("postgres://x/y")),
            Err(KeyError::Missing)
        ));
    }
}
