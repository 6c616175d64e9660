//! The wire benchmark: the release `chatcore-server` binary in front of a
//! local mock OpenAI upstream (`wire-mock`, a process of its own), driven
//! over loopback by a load generator in a third process (`wire-load`),
//! with the same load sent straight to the mock in the same run as the
//! baseline. Every turn is persisted (SQLite file in WAL mode, or a fresh
//! PostgreSQL schema), and afterwards the benchmark checks that the stored
//! turns are exactly the 2xx answers.
//!
//! ```sh
//! cargo build --release -p chatcore-server        # the binary it measures
//! cargo bench -p chatcore-benches --bench wire    # SQLite
//! WIRE_DB=postgres cargo bench -p chatcore-benches --bench wire
//! WIRE_DB=sqlite,postgres WIRE_SECS=10 WIRE_PERF=/tmp/perf cargo bench -p chatcore-benches --bench wire
//! ```
//!
//! Phases, each `WIRE_SECS` long (default 5), straight to the mock then
//! through chatcore: `POST /v1/chat` (new conversation each time) at 1, 16
//! and 64 concurrent connections; 32 concurrent streams (time to first
//! token); `POST /v1/chat/completions` at 64 concurrent if the server has
//! that route (skipped with a note while it answers 404); then
//! `WIRE_OPEN_STREAMS` (default 10,000) streams held open at once against
//! the slow mock (a word every 3 s), the server's resident memory measured
//! while all are open. The server's resident memory is sampled during every
//! phase, its CPU time per turn read from `/proc`.
//!
//! Settings (environment):
//! - `WIRE_DB`: `sqlite` (default), `postgres` (the server's default role,
//!   bound by row-level security), `postgres-owner` (run as the tables'
//!   owner: no row-level security), or several comma-separated.
//! - `WIRE_PG_URL`: default `postgres://postgres@127.0.0.1:5432/test`; each
//!   run uses a fresh schema (`CHATCORE_DATABASE_SCHEMA`), dropped after.
//! - `WIRE_SECS` (5), `WIRE_WARMUP_SECS` (1), `WIRE_CONCURRENCY` (`1,16,64`),
//!   `WIRE_STREAMS` (32), `WIRE_OPEN_STREAMS` (10000; 0 skips),
//!   `WIRE_HOLD_SECS` (5), `WIRE_OPEN_HTTP` (`1` or `2`; by default 1 when
//!   the server's open-file limit holds two descriptors per stream, else 2).
//! - `WIRE_SERVER`: the server binary (default: `chatcore-server` beside
//!   this benchmark's target directory, i.e. `target/release`).
//! - `WIRE_PERF=<dir>`: also profile the server with `perf record -g` during
//!   an extra 64-concurrent phase (`WIRE_PERF_SECS`, 5), and write
//!   `perf report --no-children --stdio` there.
//! - `WIRE_REPORT=<file>`: append the result tables to this file too.
//! - `WIRE_LOG`: the server's `RUST_LOG` (default `warn`).
//! - `WIRE_SERVER_ENV`: `KEY=VALUE` pairs, comma-separated, for the
//!   server's environment (its other `CHATCORE_*` variables are removed).
//! - `WIRE_LOAD_THREADS` (2), `WIRE_MOCK_THREADS` (2).
//!
//! Every child process is killed when the benchmark ends, also on a panic;
//! the mock and the load generator also exit when the benchmark dies (their
//! standard input is a pipe from it), and the mock then kills the server.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use secrecy::ExposeSecret;
use serde_json::{Value, json};

const SYSTEM_PROMPT: &str = "You are a benchmark.";
const MODEL: &str = "gpt-4o-mini";
/// The slow mock streams for models with this prefix.
const SLOW_MODEL: &str = "slow-gpt-4o-mini";

/// Raises the soft open-file limit to the hard one, then runs the program.
const RAISE_NOFILE: &str = r#"n=$(ulimit -Hn); [ "$n" = unlimited ] && n=1048576; ulimit -n "$n" 2>/dev/null; exec "$0" "$@""#;

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    match std::env::var(key) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{key}={v:?} does not parse")),
        _ => default,
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Db {
    Sqlite,
    /// The server's default on PostgreSQL: connections run as the role that
    /// row-level security binds.
    Postgres,
    /// PostgreSQL with `CHATCORE_DATABASE_ROLE=none`: as the tables' owner,
    /// whom row-level security does not bind (the cost of the wall is the
    /// difference to `Postgres`).
    PostgresOwner,
}

impl Db {
    fn name(self) -> &'static str {
        match self {
            Db::Sqlite => "SQLite (file, WAL)",
            Db::Postgres => "PostgreSQL",
            Db::PostgresOwner => "PostgreSQL as owner (no RLS)",
        }
    }
    fn short(self) -> &'static str {
        match self {
            Db::Sqlite => "sqlite",
            Db::Postgres => "postgres",
            Db::PostgresOwner => "postgres-owner",
        }
    }
}

/// What the run is asked to do.
struct Settings {
    dbs: Vec<Db>,
    pg_url: String,
    secs: f64,
    warmup_secs: f64,
    concurrency: Vec<usize>,
    streams: usize,
    open_streams: usize,
    hold_secs: f64,
    open_http: Option<u8>,
    server: PathBuf,
    perf_dir: Option<PathBuf>,
    perf_secs: f64,
    report: Option<PathBuf>,
    server_log: String,
    load_threads: usize,
    mock_threads: usize,
}

impl Settings {
    fn from_env() -> Self {
        let dbs = env_or("WIRE_DB", "sqlite".to_string())
            .split(',')
            .map(|s| match s.trim() {
                "sqlite" => Db::Sqlite,
                "postgres" | "postgresql" | "pg" => Db::Postgres,
                "postgres-owner" | "pg-owner" => Db::PostgresOwner,
                other => panic!("WIRE_DB: {other:?} is not sqlite or postgres"),
            })
            .collect();
        let concurrency = env_or("WIRE_CONCURRENCY", "1,16,64".to_string())
            .split(',')
            .map(|s| s.trim().parse().expect("WIRE_CONCURRENCY: numbers"))
            .collect();
        let server = std::env::var_os("WIRE_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(default_server);
        Self {
            dbs,
            pg_url: env_or(
                "WIRE_PG_URL",
                "postgres://postgres@127.0.0.1:5432/test".to_string(),
            ),
            secs: env_or("WIRE_SECS", 5.0),
            warmup_secs: env_or("WIRE_WARMUP_SECS", 1.0),
            concurrency,
            streams: env_or("WIRE_STREAMS", 32),
            open_streams: env_or("WIRE_OPEN_STREAMS", 10_000),
            hold_secs: env_or("WIRE_HOLD_SECS", 5.0),
            open_http: std::env::var("WIRE_OPEN_HTTP")
                .ok()
                .filter(|v| !v.is_empty())
                .map(|v| v.parse().expect("WIRE_OPEN_HTTP: 1 or 2")),
            server,
            perf_dir: std::env::var_os("WIRE_PERF")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            perf_secs: env_or("WIRE_PERF_SECS", 5.0),
            report: std::env::var_os("WIRE_REPORT")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            server_log: env_or("WIRE_LOG", "warn".to_string()),
            load_threads: env_or("WIRE_LOAD_THREADS", 2),
            mock_threads: env_or("WIRE_MOCK_THREADS", 2),
        }
    }
}

/// `target/release/chatcore-server`: this benchmark runs from
/// `target/release/deps/`.
fn default_server() -> PathBuf {
    let exe = std::env::current_exe().expect("the benchmark's own path");
    exe.parent()
        .and_then(Path::parent)
        .map(|release| release.join("chatcore-server"))
        .expect("the benchmark runs from target/<profile>/deps")
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("benches/ is in the workspace")
        .to_path_buf()
}

fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry.metadata().ok().and_then(|m| m.modified().ok())
        };
        newest = newest.max(t);
    }
    newest
}

/// Says loudly when the server binary is older than the sources it is
/// built from: numbers of an old binary are easily taken for new ones.
fn warn_if_stale(server: &Path) {
    let Some(built) = std::fs::metadata(server)
        .ok()
        .and_then(|m| m.modified().ok())
    else {
        panic!(
            "no server binary at {}: run `cargo build --release -p chatcore-server` first (or set WIRE_SERVER)",
            server.display()
        );
    };
    let root = workspace_root();
    let newest = ["chatcore", "chatcore-server", "migration"]
        .iter()
        .flat_map(|d| {
            [
                newest_mtime(&root.join(d).join("src")),
                std::fs::metadata(root.join(d).join("Cargo.toml"))
                    .ok()
                    .and_then(|m| m.modified().ok()),
            ]
        })
        .flatten()
        .max();
    if newest.is_some_and(|n| n > built) {
        eprintln!(
            "\nWARNING: {} is older than the sources: run `cargo build --release -p chatcore-server` to measure the current code.\n",
            server.display()
        );
    }
}

/// The last commit that changed what the server is built from (not this
/// benchmark): what the numbers are of.
fn server_commit() -> String {
    sh("git log -1 --format=%h -- chatcore chatcore-server migration Cargo.toml")
}

fn sh(cmd: &str) -> String {
    Command::new("sh")
        .args(["-c", cmd])
        .current_dir(workspace_root())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

// ---------------------------------------------------------------- /proc

fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// User plus system CPU time, in clock ticks.
fn proc_cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); the state (field 3) is f[0].
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn proc_nofile(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    s.lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

/// The machine's CPU time so far (`/proc/stat`, all CPUs, in ticks): the
/// total and the part the hypervisor gave to other guests (steal).
fn host_cpu_ticks() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let line = s.lines().next()?.strip_prefix("cpu ")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is in user).
    let total = f.iter().take(8).sum();
    Some((total, *f.get(7)?))
}

/// Steal between two readings of [`host_cpu_ticks`], in % of the CPU time.
fn steal_pct(a: Option<(u64, u64)>, b: Option<(u64, u64)>) -> Option<f64> {
    let ((t0, s0), (t1, s1)) = (a?, b?);
    (t1 > t0).then(|| 100.0 * s1.saturating_sub(s0) as f64 / (t1 - t0) as f64)
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Samples the resident memory of some processes while a phase runs: the
/// maximum over the phase, and over the time `holding` was set.
struct Sampler {
    stop: Arc<AtomicBool>,
    holding: Arc<AtomicBool>,
    handle: JoinHandle<(Vec<u64>, Vec<u64>)>,
}

impl Sampler {
    fn start(pids: Vec<u32>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let holding = Arc::new(AtomicBool::new(false));
        let (s, h) = (stop.clone(), holding.clone());
        let handle = std::thread::spawn(move || {
            let mut max = vec![0u64; pids.len()];
            let mut hold_max = vec![0u64; pids.len()];
            while !s.load(Relaxed) {
                for (i, pid) in pids.iter().enumerate() {
                    let rss = proc_status_kib(*pid, "VmRSS:").unwrap_or(0);
                    max[i] = max[i].max(rss);
                    if h.load(Relaxed) {
                        hold_max[i] = hold_max[i].max(rss);
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (max, hold_max)
        });
        Self {
            stop,
            holding,
            handle,
        }
    }

    fn finish(self) -> (Vec<u64>, Vec<u64>) {
        self.stop.store(true, Relaxed);
        self.handle.join().expect("the sampler does not panic")
    }
}

// ---------------------------------------------------------------- processes

/// A child process killed (and reaped) when dropped: on every way out of
/// the benchmark, a panic included.
struct Proc {
    name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then SIGKILL after `grace`; returns how long it took to
    /// exit and whether it exited by itself.
    fn terminate(&mut self, grace: Duration) -> (Duration, bool) {
        let t = Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        while t.elapsed() < grace {
            if let Ok(Some(_)) = self.child.try_wait() {
                return (t.elapsed(), true);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        (t.elapsed(), false)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if std::thread::panicking() {
                eprintln!("killing {} (pid {})", self.name, self.child.id());
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Runs `bin args` with the open-file limit raised.
fn raised(bin: &Path) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c").arg(RAISE_NOFILE).arg(bin);
    c
}

struct Mock {
    proc: Proc,
    base: String,
}

impl Mock {
    fn start(threads: usize) -> Self {
        let mut child = raised(Path::new(env!("CARGO_BIN_EXE_wire-mock")))
            .args(["--listen", "127.0.0.1:0", "--exit-on-stdin-eof"])
            .args(["--threads", &threads.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("wire-mock starts");
        let stdin = child.stdin.take();
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("wire-mock says where it listens");
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("wire-mock said {line:?}"))
            .to_string();
        Self {
            proc: Proc {
                name: "wire-mock",
                child,
                stdin,
            },
            base: format!("http://{addr}"),
        }
    }

    /// The mock kills `pid` if the benchmark dies before it does.
    fn watch(&mut self, pid: u32, watch: bool) {
        if let Some(s) = &mut self.proc.stdin {
            let verb = if watch { "watch" } else { "unwatch" };
            let _ = writeln!(s, "{verb} {pid}");
        }
    }
}

// ---------------------------------------------------------------- load

/// One run of `wire-load`, with what the server and the mock did meanwhile.
struct Phase {
    label: String,
    out: Value,
    /// Max resident memory (KiB) of the server and of the mock.
    rss_max: [u64; 2],
    /// The same while the open streams were held.
    rss_hold: [u64; 2],
    /// CPU seconds of the server and of the mock.
    cpu: [f64; 2],
    /// PostgreSQL only: write transactions (transaction ids assigned) and
    /// WAL bytes during the phase, all of the cluster.
    pg: Option<(i64, i64)>,
    /// The CPU time the hypervisor took from this machine during the
    /// phase (steal), in %: at 30% everything runs at about half speed.
    steal: Option<f64>,
}

impl Phase {
    fn ok(&self) -> u64 {
        self.out["ok"].as_u64().unwrap_or(0)
    }
    fn rps(&self) -> f64 {
        self.out["rps"].as_f64().unwrap_or(0.0)
    }
    fn lat_ms(&self, key: &str, p: &str) -> Option<f64> {
        self.out[key][p].as_f64().map(|us| us / 1000.0)
    }
    fn stream_errors(&self) -> u64 {
        self.out["stream_error_events"].as_u64().unwrap_or(0)
    }
    /// Answers that were not 2xx, transport errors, timeouts, and streams
    /// that failed or ended early after a 2xx.
    fn failures(&self) -> u64 {
        let non2xx: u64 = self.out["status"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| !k.starts_with('2'))
                    .filter_map(|(_, v)| v.as_u64())
                    .sum()
            })
            .unwrap_or(0);
        non2xx
            + [
                "transport_errors",
                "timeouts",
                "stream_error_events",
                "stream_unfinished",
            ]
            .iter()
            .filter_map(|k| self.out[*k].as_u64())
            .sum::<u64>()
    }
}

struct Loader<'a> {
    settings: &'a Settings,
    ticks: f64,
    server_pid: u32,
    mock_pid: u32,
    /// The PostgreSQL database, to read its transaction and WAL counters.
    pg: Option<String>,
}

/// PostgreSQL's next transaction id (without taking one) and WAL position,
/// read with `psql`: exact at once, unlike the statistics views, which
/// backends flush up to seconds late.
fn pg_counters(url: &str) -> Option<(i64, i64)> {
    let o = Command::new("psql")
        .args([url, "-XtAc"])
        .arg("SELECT pg_snapshot_xmax(pg_current_snapshot())::text || ' ' || pg_current_wal_lsn()::text")
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&o.stdout);
    let (xid, lsn) = s.trim().split_once(' ')?;
    let (hi, lo) = lsn.split_once('/')?;
    let lsn = (i64::from_str_radix(hi, 16).ok()? << 32) + i64::from_str_radix(lo, 16).ok()?;
    Some((xid.parse().ok()?, lsn))
}

/// What a load run sends, where.
struct Load<'a> {
    label: String,
    url: String,
    bearer: &'a str,
    body: Value,
    mode: &'static str,
    sse: &'static str,
    connections: usize,
    secs: f64,
    extra: Vec<String>,
}

impl Loader<'_> {
    fn run(&self, l: Load) -> Phase {
        let threads = if l.connections <= 1 && l.mode != "open" {
            1
        } else {
            self.settings.load_threads
        };
        let mut cmd = raised(Path::new(env!("CARGO_BIN_EXE_wire-load")));
        cmd.args(["--url", &l.url, "--mode", l.mode, "--sse", l.sse])
            .args(["--body", &l.body.to_string()])
            .args(["--header", &format!("authorization: Bearer {}", l.bearer)])
            .args(["--connections", &l.connections.to_string()])
            .args(["--secs", &l.secs.to_string()])
            .args(["--threads", &threads.to_string()])
            .arg("--exit-on-stdin-eof")
            .args(&l.extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let pids = vec![self.server_pid, self.mock_pid];
        let cpu0: Vec<u64> = pids
            .iter()
            .map(|p| proc_cpu_ticks(*p).unwrap_or(0))
            .collect();
        let pg0 = self.pg.as_deref().and_then(pg_counters);
        let host0 = host_cpu_ticks();
        let sampler = Sampler::start(pids.clone());
        let mut child = cmd.spawn().expect("wire-load starts");
        let stdout = child.stdout.take().expect("piped");
        let stdin = child.stdin.take();
        let mut load = Proc {
            name: "wire-load",
            child,
            stdin,
        };
        let mut last = None;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if v.get("hold").is_some() {
                eprintln!(
                    "  {} streams open after {:.1} s; holding them {} s",
                    v["open"],
                    v["open_secs"].as_f64().unwrap_or(0.0),
                    self.settings.hold_secs
                );
                // Give the memory a moment to settle before measuring it.
                std::thread::sleep(Duration::from_millis(500));
                sampler.holding.store(true, Relaxed);
            } else {
                last = Some(v);
            }
        }
        let status = load.child.wait().expect("wire-load is waited for");
        drop(load.stdin.take());
        let (max, hold) = sampler.finish();
        let steal = steal_pct(host0, host_cpu_ticks());
        let cpu: Vec<f64> = pids
            .iter()
            .zip(cpu0)
            .map(|(p, c0)| proc_cpu_ticks(*p).unwrap_or(c0).saturating_sub(c0) as f64 / self.ticks)
            .collect();
        let out = last.unwrap_or_else(|| panic!("wire-load ({status}) printed no result"));
        let pg = match (pg0, self.pg.as_deref().and_then(pg_counters)) {
            (Some((x0, l0)), Some((x1, l1))) => Some((x1 - x0, l1 - l0)),
            _ => None,
        };
        let phase = Phase {
            label: l.label,
            out,
            rss_max: [max[0], max[1]],
            rss_hold: [hold[0], hold[1]],
            cpu: [cpu[0], cpu[1]],
            pg,
            steal,
        };
        let (rate, key) = if phase.out["mode"] == "open" {
            (format!("{} open", phase.out["opened"]), "ttft_us")
        } else if phase.out["mode"] == "sse" {
            (format!("{:.0}/s", phase.rps()), "ttft_us")
        } else {
            (format!("{:.0}/s", phase.rps()), "lat_us")
        };
        eprintln!(
            "  {:<44} {:>11}  {} p50 {:>8.3} ms  p99 {:>8.3} ms  failed {}  server RSS max {:.0} MiB  steal {:.0}%",
            phase.label,
            rate,
            if key == "ttft_us" { "TTFT" } else { "    " },
            phase.lat_ms(key, "p50").unwrap_or(0.0),
            phase.lat_ms(key, "p99").unwrap_or(0.0),
            phase.failures(),
            mib(phase.rss_max[0]),
            phase.steal.unwrap_or(0.0),
        );
        if let Some(e) = phase.out["first_error"].as_str() {
            eprintln!("    first failure: {}", truncate(e, 300));
        }
        phase
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

// ---------------------------------------------------------------- HTTP set-up

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    bearer: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let build = || {
        let mut rb = http.request(method.clone(), url).bearer_auth(bearer);
        if let Some(b) = &body {
            rb = rb.json(b);
        }
        rb
    };
    // A pooled connection that sat idle through a phase may have been
    // closed by the server's keep-alive timeout as the request went out:
    // try once more on a fresh one.
    let r = match build().send().await {
        Ok(r) => r,
        Err(_) => build()
            .send()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}")),
    };
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn created(http: &reqwest::Client, url: &str, bearer: &str, body: Value) -> Value {
    let (status, v) = call(http, reqwest::Method::POST, url, bearer, Some(body)).await;
    assert_eq!(status, 201, "POST {url}: {v}");
    v
}

/// What the benchmark set up through the API.
struct Tenant {
    admin_key: String,
    chat_key: String,
}

/// Operator: a tenant without rate limits; its admin key: the OpenAI
/// provider pointed at the mock, a fast and a slow bot, a chat key.
async fn provision(http: &reqwest::Client, server: &str, operator: &str, mock: &str) -> Tenant {
    let t = created(
        http,
        &format!("{server}/v1/admin/tenants"),
        operator,
        json!({"name": "wire benchmark", "slug": "wire-bench"}),
    )
    .await;
    let admin = t["admin_key"].as_str().expect("an admin key").to_string();
    let p = created(
        http,
        &format!("{server}/v1/providers"),
        &admin,
        json!({"provider": "openai", "name": "wire mock", "api_key": "sk-wire-bench",
               "base_url": format!("{mock}/v1"), "default_model": MODEL}),
    )
    .await;
    for (slug, model) in [("bench", MODEL), ("bench-slow", SLOW_MODEL)] {
        created(
            http,
            &format!("{server}/v1/bots"),
            &admin,
            json!({"name": slug, "slug": slug, "system_prompt": SYSTEM_PROMPT,
                   "provider_id": p["id"], "model": model}),
        )
        .await;
    }
    let k = created(
        http,
        &format!("{server}/v1/api-keys"),
        &admin,
        json!({"name": "wire chat", "permissions": ["chat"]}),
    )
    .await;
    Tenant {
        admin_key: admin,
        chat_key: k["key"].as_str().expect("a chat key").to_string(),
    }
}

fn openai_body(model: &str, stream: bool) -> Value {
    let mut b = json!({
        "model": model,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": "hello"}
        ],
        "max_tokens": 64
    });
    if stream {
        b["stream"] = json!(true);
        b["stream_options"] = json!({"include_usage": true});
    }
    b
}

// ---------------------------------------------------------------- turns in the database

/// Messages by (role, status), read from the database itself.
async fn count_messages(url: &str, schema: Option<&str>) -> BTreeMap<(String, String), i64> {
    use sea_orm::{ConnectionTrait, Database, Statement};
    let db = Database::connect(url)
        .await
        .unwrap_or_else(|e| panic!("opening {url}: {e}"));
    let table = match schema {
        Some(s) => format!("\"{s}\".messages"),
        None => "messages".into(),
    };
    let sql = format!("SELECT role, status, COUNT(*) AS n FROM {table} GROUP BY role, status");
    let rows = db
        .query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .expect("counting messages");
    let mut out = BTreeMap::new();
    for r in rows {
        let role: String = r.try_get("", "role").expect("role");
        let status: String = r.try_get("", "status").expect("status");
        let n: i64 = r.try_get("", "n").expect("n");
        out.insert((role, status), n);
    }
    let _ = db.close().await;
    out
}

async fn drop_schema(url: &str, schema: &str) {
    use sea_orm::{ConnectionTrait, Database};
    if let Ok(db) = Database::connect(url).await {
        let _ = db
            .execute_unprepared(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await;
        let _ = db.close().await;
    }
}

fn assistant_turns(c: &BTreeMap<(String, String), i64>) -> (i64, i64, String) {
    let mut stored = 0;
    let mut pending = 0;
    let mut parts = Vec::new();
    for ((role, status), n) in c {
        if role != "assistant" {
            continue;
        }
        if status == "pending" {
            pending += n;
        } else {
            stored += n;
        }
        parts.push(format!("{status} {}", thousands(*n as f64)));
    }
    (stored, pending, parts.join(", "))
}

// ---------------------------------------------------------------- one backend

/// One line of a backend's table: a scenario straight to the mock and
/// through chatcore, or a note why it was skipped.
type Row = (String, Option<Phase>, Option<Phase>, Option<String>);

struct Backend {
    db: Db,
    rows: Vec<Row>,
    notes: Vec<String>,
    check_failed: Option<String>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn tail(path: &Path, n: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The server log's WARN and ERROR lines, grouped by message (the text
/// before its first `key=value` field), most frequent first.
fn log_summary(path: &Path) -> Option<String> {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let mut groups: BTreeMap<String, (usize, &str)> = BTreeMap::new();
    for line in s.lines() {
        let Some((level, rest)) = [" WARN ", " ERROR "]
            .iter()
            .find_map(|l| line.split_once(l).map(|(_, r)| (l.trim(), r)))
        else {
            continue;
        };
        let msg: Vec<&str> = rest
            .split_whitespace()
            .take_while(|w| !w.contains('='))
            .collect();
        let e = groups
            .entry(format!("{level} {}", msg.join(" ")))
            .or_insert((0, line));
        e.0 += 1;
    }
    if groups.is_empty() {
        return None;
    }
    let mut v: Vec<_> = groups.into_iter().collect();
    v.sort_by_key(|(_, (n, _))| std::cmp::Reverse(*n));
    let total: usize = v.iter().map(|(_, (n, _))| n).sum();
    let mut out = format!("server log: {total} WARN/ERROR lines");
    for (key, (n, example)) in v.iter().take(6) {
        let _ = write!(
            out,
            "\n    - {n} x {}\n      e.g. `{}`",
            truncate(key, 160),
            truncate(example, 600)
        );
    }
    Some(out)
}

async fn run_backend(s: &Settings, db: Db, mock: &mut Mock, ticks: f64) -> Backend {
    let dir = tempfile::tempdir().expect("a temp dir");
    let schema = format!(
        "wire_{}_{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    );
    let (db_url, db_schema, count_url) = match db {
        Db::Sqlite => {
            let path = dir.path().join("wire.db");
            (
                format!("sqlite://{}?mode=rwc", path.display()),
                None,
                format!("sqlite://{}?mode=ro", path.display()),
            )
        }
        Db::Postgres | Db::PostgresOwner => {
            (s.pg_url.clone(), Some(schema.clone()), s.pg_url.clone())
        }
    };
    let port = free_port();
    let server = format!("http://127.0.0.1:{port}");
    let operator = chatcore::crypto::Keyring::generate_base64()
        .expose_secret()
        .to_string();
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).expect("the server log");
    let mut cmd = raised(&s.server);
    cmd.arg("serve");
    for (k, _) in std::env::vars() {
        if k.starts_with("CHATCORE_")
            || k.ends_with("_API_KEY")
            || k == "RUST_LOG"
            || k == "DATABASE_URL"
        {
            cmd.env_remove(k);
        }
    }
    // `WIRE_SERVER_ENV=K=V,K=V`: settings of the server under test.
    for kv in std::env::var("WIRE_SERVER_ENV")
        .unwrap_or_default()
        .split(',')
    {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k.trim(), v.trim());
        }
    }
    cmd.env("CHATCORE_DATABASE_URL", &db_url)
        .env("CHATCORE_LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "CHATCORE_MASTER_KEY",
            chatcore::crypto::Keyring::generate_base64().expose_secret(),
        )
        .env("CHATCORE_OPERATOR_KEY", &operator)
        .env("CHATCORE_EGRESS_ALLOW", "127.0.0.1")
        .env("CHATCORE_SHUTDOWN_GRACE_SECS", "5")
        .env("RUST_LOG", &s.server_log)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("the log"))
        .stderr(log);
    if let Some(sc) = &db_schema {
        cmd.env("CHATCORE_DATABASE_SCHEMA", sc);
    }
    if db == Db::PostgresOwner {
        cmd.env("CHATCORE_DATABASE_ROLE", "none");
    }
    let mut server_proc = Proc {
        name: "chatcore-server",
        child: cmd.spawn().expect("chatcore-server starts"),
        stdin: None,
    };
    let server_pid = server_proc.pid();
    mock.watch(server_pid, true);

    let http = reqwest::Client::new();
    let ready = Instant::now();
    loop {
        if let Ok(Some(st)) = server_proc.child.try_wait() {
            panic!(
                "chatcore-server exited ({st}) before it was ready:\n{}",
                tail(&log_path, 40)
            );
        }
        if let Ok(r) = http.get(format!("{server}/readyz")).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(
            ready.elapsed() < Duration::from_secs(120),
            "chatcore-server not ready after 120 s:\n{}",
            tail(&log_path, 40)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "\n{}: chatcore-server (pid {server_pid}, open-file limit {}) ready in {:.1} s",
        db.name(),
        proc_nofile(server_pid).unwrap_or(0),
        ready.elapsed().as_secs_f64()
    );
    let tenant = provision(&http, &server, &operator, &mock.base).await;
    let loader = Loader {
        settings: s,
        ticks,
        server_pid,
        mock_pid: mock.proc.pid(),
        pg: matches!(db, Db::Postgres | Db::PostgresOwner).then(|| s.pg_url.clone()),
    };
    let chat_url = format!("{server}/v1/chat");
    let mock_url = format!("{}/v1/chat/completions", mock.base);
    let mock_key = "sk-wire-bench";
    let chat_body = |stream: bool| json!({"bot_id": "bench", "message": "hello", "stream": stream});
    let direct = |label: String, c: usize, stream: bool, secs: f64| Load {
        label,
        url: mock_url.clone(),
        bearer: mock_key,
        body: openai_body(MODEL, stream),
        mode: if stream { "sse" } else { "json" },
        sse: "openai",
        connections: c,
        secs,
        extra: vec![],
    };
    let through = |label: String, c: usize, stream: bool, secs: f64| Load {
        label,
        url: chat_url.clone(),
        bearer: &tenant.chat_key,
        body: chat_body(stream),
        mode: if stream { "sse" } else { "json" },
        sse: "chatcore",
        connections: c,
        secs,
        extra: vec![],
    };
    // Every 2xx answer of chatcore is a turn that must be stored.
    let mut answered_2xx = 0u64;
    // Streams answered 2xx that then failed are stored as errors, as are
    // the provider failures answered 502: the check allows for those.
    let mut stream_errors = 0u64;
    let mut failed_answers = 0u64;
    let mut out = Backend {
        db,
        rows: Vec::new(),
        notes: Vec::new(),
        check_failed: None,
    };

    // Warm up both paths (connections, caches, the token encoders).
    loader.run(direct("warm-up, direct".into(), 8, false, s.warmup_secs));
    let w = loader.run(through("warm-up, chatcore".into(), 8, false, s.warmup_secs));
    answered_2xx += w.ok();
    failed_answers += w.failures();

    for &c in &s.concurrency {
        let d = loader.run(direct(format!("direct, {c} concurrent"), c, false, s.secs));
        let t = loader.run(through(
            format!("POST /v1/chat, {c} concurrent"),
            c,
            false,
            s.secs,
        ));
        answered_2xx += t.ok();
        failed_answers += t.failures();
        stream_errors += t.stream_errors();
        out.rows.push((
            format!("`POST /v1/chat`, {c} concurrent"),
            Some(d),
            Some(t),
            None,
        ));
    }
    let mut hwm_at_load = proc_status_kib(server_pid, "VmHWM:").unwrap_or(0);

    if let Some(dir) = &s.perf_dir {
        let load = through(
            "POST /v1/chat, 64 concurrent, under perf".into(),
            64,
            false,
            s.perf_secs + 2.0,
        );
        let (p, note) = profile(&loader, s, dir, db, server_pid, load);
        answered_2xx += p.ok();
        failed_answers += p.failures();
        stream_errors += p.stream_errors();
        out.notes.push(note);
    }

    let sc = s.streams;
    let d = loader.run(direct(format!("direct, {sc} streams"), sc, true, s.secs));
    let t = loader.run(through(
        format!("POST /v1/chat stream, {sc} concurrent"),
        sc,
        true,
        s.secs,
    ));
    answered_2xx += t.ok();
    failed_answers += t.failures();
    stream_errors += t.stream_errors();
    out.rows.push((
        format!("stream, {sc} concurrent: time to first token"),
        Some(d),
        Some(t),
        None,
    ));
    hwm_at_load = hwm_at_load.max(proc_status_kib(server_pid, "VmHWM:").unwrap_or(0));

    // The OpenAI-compatible route, once the server has it.
    let completions_url = format!("{server}/v1/chat/completions");
    let completions = json!({
        "model": "bench",
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": "hello"}
        ],
        "max_tokens": 64
    });
    let (status, body) = call(
        &http,
        reqwest::Method::POST,
        &completions_url,
        &tenant.chat_key,
        Some(completions.clone()),
    )
    .await;
    let label = "`POST /v1/chat/completions`, 64 concurrent".to_string();
    if (200..300).contains(&status) {
        answered_2xx += 1;
        let d = loader.run(direct("direct, 64 concurrent".into(), 64, false, s.secs));
        let t = loader.run(Load {
            label: "POST /v1/chat/completions, 64 concurrent".into(),
            url: completions_url,
            bearer: &tenant.chat_key,
            body: completions,
            mode: "json",
            sse: "openai",
            connections: 64,
            secs: s.secs,
            extra: vec![],
        });
        answered_2xx += t.ok();
        failed_answers += t.failures();
        stream_errors += t.stream_errors();
        out.rows.push((label, Some(d), Some(t), None));
    } else {
        let why = if status == 404 {
            "skipped: the server answers 404 (route not there yet)".to_string()
        } else {
            format!(
                "skipped: the probe answered {status} {}",
                truncate(&body.to_string(), 200)
            )
        };
        eprintln!("  POST /v1/chat/completions {why}");
        out.rows.push((label, None, None, Some(why)));
    }

    // Many streams held open at once against the slow mock.
    if s.open_streams > 0 {
        let n = s.open_streams;
        let limit = proc_nofile(server_pid).unwrap_or(0);
        let http_v = s
            .open_http
            .unwrap_or(if limit >= 2 * n as u64 + 512 { 1 } else { 2 });
        let how = if http_v == 1 {
            "HTTP/1.1, a connection each".to_string()
        } else {
            format!(
                "HTTP/2 in, 100 per connection: the server needs a descriptor for each stream's upstream connection and its open-file limit here is {limit}, short of two per stream"
            )
        };
        let t = loader.run(Load {
            label: format!("{n} open streams"),
            url: chat_url.clone(),
            bearer: &tenant.chat_key,
            body: json!({"bot_id": "bench-slow", "message": "hello", "stream": true}),
            mode: "open",
            sse: "chatcore",
            connections: 1,
            secs: 0.0,
            extra: vec![
                "--streams".into(),
                n.to_string(),
                "--hold-secs".into(),
                s.hold_secs.to_string(),
                "--http".into(),
                http_v.to_string(),
            ],
        });
        answered_2xx += t.ok();
        failed_answers += t.failures();
        stream_errors += t.stream_errors();
        let opened = t.out["opened"].as_u64().unwrap_or(0);
        out.notes.push(format!(
            "{} concurrent open streams ({how}): {} open after {:.1} s (time to first token p50 {:.1} ms, p99 {:.1} ms), {} failed, {} ended before the client closed them; server RSS with all open {:.0} MiB (max during the phase {:.0} MiB), mock {:.0} MiB; server CPU {:.1} s for the phase",
            thousands(n as f64),
            thousands(opened as f64),
            t.out["open_secs"].as_f64().unwrap_or(0.0),
            t.lat_ms("ttft_us", "p50").unwrap_or(0.0),
            t.lat_ms("ttft_us", "p99").unwrap_or(0.0),
            t.failures(),
            t.out["ended_early"].as_u64().unwrap_or(0),
            mib(t.rss_hold[0]),
            mib(t.rss_max[0]),
            mib(t.rss_hold[1]),
            t.cpu[0],
        ));
        out.rows.push((
            format!("{} open streams", thousands(n as f64)),
            None,
            Some(t),
            None,
        ));
    }

    // Turns stored = 2xx answers. The cancelled ones (open streams closed by
    // the client) are written after the disconnect: wait until nothing is
    // pending and the count stops moving.
    // A count that has not moved for 10 s will not move any more.
    let settle = Instant::now();
    let mut last = (None, Instant::now());
    let (counts, stored, pending, parts) = loop {
        let counts = count_messages(&count_url, db_schema.as_deref()).await;
        let (stored, pending, parts) = assistant_turns(&counts);
        if last.0 != Some((stored, pending)) {
            last = (Some((stored, pending)), Instant::now());
        }
        let still = last.1.elapsed();
        if (pending == 0 && still >= Duration::from_secs(1))
            || still >= Duration::from_secs(10)
            || settle.elapsed() > Duration::from_secs(180)
        {
            break (counts, stored, pending, parts);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!(
        "  turns settled after {:.1} s: {parts}",
        settle.elapsed().as_secs_f64()
    );
    let users: i64 = counts
        .iter()
        .filter(|((r, _), _)| r == "user")
        .map(|(_, n)| n)
        .sum();
    let (ust, usage) = call(
        &http,
        reqwest::Method::GET,
        &format!("{server}/v1/usage"),
        &tenant.admin_key,
        None,
    )
    .await;
    let usage_turns: i64 = usage["data"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["requests"].as_i64()).sum())
        .unwrap_or(-1);
    let hwm_end = proc_status_kib(server_pid, "VmHWM:").unwrap_or(0);
    let error_turns = counts
        .get(&("assistant".to_string(), "error".to_string()))
        .copied()
        .unwrap_or(0);
    let mut problems = Vec::new();
    // Every 2xx answer is a stored turn; those stored as errors are the
    // streams that failed after their 2xx, and the failed answers.
    if stored - error_turns != answered_2xx as i64 - stream_errors as i64 {
        problems.push(format!(
            "{} turns stored without error but {} answers were 2xx ({} of them streams that then failed)",
            stored - error_turns,
            answered_2xx,
            stream_errors
        ));
    }
    if error_turns > failed_answers as i64 {
        problems.push(format!(
            "{error_turns} turns stored as errors but only {failed_answers} answers failed"
        ));
    }
    if pending != 0 {
        problems.push(format!("{pending} turns still pending"));
    }
    if ust != 200 || usage_turns != stored {
        problems.push(format!(
            "GET /v1/usage ({ust}) counts {usage_turns} turns, the messages table {stored}"
        ));
    }
    out.notes.push(format!(
        "stored turns (assistant messages): {} ({parts}); user messages {}; 2xx answers {}, failed answers {}; usage rollup {}: {}",
        thousands(stored as f64),
        thousands(users as f64),
        thousands(answered_2xx as f64),
        thousands(failed_answers as f64),
        thousands(usage_turns as f64),
        if problems.is_empty() { "OK".to_string() } else { format!("MISMATCH: {}", problems.join("; ")) }
    ));
    if !problems.is_empty() {
        out.check_failed = Some(problems.join("; "));
    }
    out.notes.push(format!(
        "server peak RSS (VmHWM): {:.0} MiB after the request and stream phases, {:.0} MiB at the end",
        mib(hwm_at_load),
        mib(hwm_end)
    ));

    let (took, clean) = server_proc.terminate(Duration::from_secs(20));
    mock.watch(server_pid, false);
    out.notes.push(format!(
        "shutdown on SIGTERM: {} in {:.2} s",
        if clean { "exited" } else { "KILLED after" },
        took.as_secs_f64()
    ));
    if let Some(l) = log_summary(&log_path) {
        out.notes.push(l);
    }
    if out.check_failed.is_some() || std::env::var_os("WIRE_KEEP_LOG").is_some() {
        let kept = std::env::temp_dir().join(format!(
            "wire-server-{}-{}.log",
            db.short(),
            std::process::id()
        ));
        if std::fs::copy(&log_path, &kept).is_ok() {
            out.notes
                .push(format!("server log kept: {}", kept.display()));
        }
    }
    if let Some(sc) = &db_schema {
        drop_schema(&s.pg_url, sc).await;
    }
    out
}

/// An extra 64-concurrent phase with `perf record -g` attached to the
/// server for `WIRE_PERF_SECS`; writes `perf report` beside the data.
fn profile(
    loader: &Loader,
    s: &Settings,
    dir: &Path,
    db: Db,
    pid: u32,
    load: Load,
) -> (Phase, String) {
    std::fs::create_dir_all(dir).expect("the perf directory");
    let stem = format!(
        "perf-{}-{}-{}",
        db.short(),
        sh("date -u +%Y%m%d-%H%M"),
        server_commit()
    );
    let data = dir.join(format!("{stem}.data"));
    let secs = s.perf_secs;
    let data2 = data.clone();
    let recorder = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        Command::new("perf")
            .args(["record", "-g", "-p", &pid.to_string(), "-o"])
            .arg(&data2)
            .args(["--", "sleep", &secs.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
    });
    let phase = loader.run(load);
    let recorded = recorder.join().expect("the perf thread");
    let txt = dir.join(format!("{stem}.txt"));
    let note = match recorded {
        Ok(st) if st.success() => {
            // The flat profile by thread and symbol, then by symbol over all
            // threads, then the share of each thread.
            let report = |sort: Option<&str>| {
                let mut c = Command::new("perf");
                c.args(["report", "--no-children", "--stdio", "-i"])
                    .arg(&data);
                if let Some(k) = sort {
                    c.args(["--sort", k]);
                }
                c.stderr(Stdio::null()).output()
            };
            match report(None) {
                Ok(o) => {
                    let mut text = o.stdout;
                    for sort in ["sym", "comm"] {
                        if let Ok(more) = report(Some(sort)) {
                            text.extend_from_slice(
                                format!("\n\n# ===== perf report --no-children --stdio --sort {sort}\n\n").as_bytes(),
                            );
                            text.extend_from_slice(&more.stdout);
                        }
                    }
                    let _ = std::fs::write(&txt, &text);
                    format!(
                        "perf profile of the server at 64 concurrent ({:.0} turns/s under perf): {}",
                        phase.rps(),
                        txt.display()
                    )
                }
                Err(e) => format!("perf report failed: {e}"),
            }
        }
        Ok(st) => format!("perf record failed ({st}); is perf installed (Debian: linux-perf)?"),
        Err(e) => format!("perf record did not run: {e}; install linux-perf"),
    };
    eprintln!("  {note}");
    (phase, note)
}

// ---------------------------------------------------------------- report

fn thousands(x: f64) -> String {
    let n = x.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn f3(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into())
}

fn table(b: &Backend, head: &str) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "### {}: {head}\n", b.db.name());
    let _ = writeln!(
        t,
        "| scenario | direct: req/s | p50 ms | p99 ms | chatcore: turns/s | p50 ms | p99 ms | added p50 ms | failed | server CPU ms/turn | server RSS max MiB | PG write txns/turn | PG WAL KiB/turn | steal % (direct / chatcore) |"
    );
    let _ = writeln!(
        t,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (label, d, c, note) in &b.rows {
        if let Some(n) = note {
            let _ = writeln!(t, "| {label} | {n} | | | | | | | | | | | | |");
            continue;
        }
        let open = c.as_ref().is_some_and(|c| c.out["mode"] == "open");
        // Streams are measured to their first text.
        let key = if label.starts_with("stream") || open {
            "ttft_us"
        } else {
            "lat_us"
        };
        let (drps, dp50, dp99) = match d {
            Some(d) => (
                thousands(d.rps()),
                f3(d.lat_ms(key, "p50")),
                f3(d.lat_ms(key, "p99")),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let Some(c) = c else { continue };
        let added = match d {
            Some(d) => match (c.lat_ms(key, "p50"), d.lat_ms(key, "p50")) {
                (Some(a), Some(b)) => format!("{:+.3}", a - b),
                _ => "-".into(),
            },
            None => "-".into(),
        };
        let turns = if open {
            thousands(c.out["opened"].as_f64().unwrap_or(0.0)) + " open"
        } else {
            thousands(c.rps())
        };
        let cpu_per = if c.ok() > 0 {
            format!("{:.3}", 1000.0 * c.cpu[0] / c.ok() as f64)
        } else {
            "-".into()
        };
        let rss = if open { c.rss_hold[0] } else { c.rss_max[0] };
        let (txns, wal) = match c.pg {
            Some((x, w)) if c.ok() > 0 => (
                format!("{:.2}", x as f64 / c.ok() as f64),
                format!("{:.1}", w as f64 / 1024.0 / c.ok() as f64),
            ),
            _ => ("-".into(), "-".into()),
        };
        let pct = |p: Option<&Phase>| {
            p.and_then(|p| p.steal)
                .map_or("-".into(), |s| format!("{s:.0}"))
        };
        let steal = format!("{} / {}", pct(d.as_ref()), pct(Some(c)));
        let _ = writeln!(
            t,
            "| {label} | {drps} | {dp50} | {dp99} | {turns} | {} | {} | {added} | {} | {cpu_per} | {:.0} | {txns} | {wal} | {steal} |",
            f3(c.lat_ms(key, "p50")),
            f3(c.lat_ms(key, "p99")),
            c.failures(),
            mib(rss),
        );
    }
    let _ = writeln!(t);
    let by_c = |c: usize| {
        b.rows.iter().find_map(|(l, d, t, _)| {
            (l == &format!("`POST /v1/chat`, {c} concurrent")).then_some((d.as_ref()?, t.as_ref()?))
        })
    };
    if let Some((d, c)) = by_c(64) {
        let _ = writeln!(
            t,
            "- at 64 concurrent chatcore does {:.1}% of the mock's rate; the mock used {:.0} MiB and {:.3} ms CPU per request",
            100.0 * c.rps() / d.rps().max(1e-9),
            mib(d.rss_max[1]),
            1000.0 * d.cpu[1] / d.ok().max(1) as f64
        );
    }
    for n in &b.notes {
        let _ = writeln!(t, "- {n}");
    }
    t
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let s = Settings::from_env();
    warn_if_stale(&s.server);
    let ticks = clock_ticks();
    let commit = format!(
        "{} (benchmark {})",
        server_commit(),
        sh("git rev-parse --short HEAD")
    );
    let dirty =
        if sh("git status --porcelain --untracked-files=no -- chatcore chatcore-server migration Cargo.toml")
            .is_empty()
        {
            ""
        } else {
            " (with uncommitted changes)"
        };
    let date = sh("date -u '+%Y-%m-%d %H:%M UTC'");
    // Other work on the machine moves the numbers: say how busy it was.
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let head = format!(
        "chatcore {commit}{dirty}, {date}, {cpus} CPUs (load average {load} at start), {} s per phase",
        s.secs
    );
    eprintln!("wire benchmark: {head}");
    eprintln!("server binary: {}", s.server.display());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut backends = Vec::new();
    for &db in &s.dbs {
        // A fresh mock for each backend: its memory is measured too.
        let mut mock = Mock::start(s.mock_threads);
        backends.push(rt.block_on(run_backend(&s, db, &mut mock, ticks)));
    }
    let mut report = String::new();
    for b in &backends {
        report.push_str(&table(b, &head));
        report.push('\n');
    }
    println!("\n{report}");
    if let Some(path) = &s.report {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("the report file");
        let _ = f.write_all(report.as_bytes());
    }
    let failed: Vec<String> = backends
        .iter()
        .filter_map(|b| Some(format!("{}: {}", b.db.name(), b.check_failed.as_ref()?)))
        .collect();
    assert!(
        failed.is_empty(),
        "stored turns do not match the 2xx answers: {}",
        failed.join(" | ")
    );
}
