//! What the tests that run the real `arena-server` binary share: the child process with its
//! log, and a swarm of bots against it. Each test binary uses a part of it.
#![allow(dead_code)]

use std::process::{ExitStatus, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arena_client_sim::swarm::{SwarmBehaviour, SwarmConfig, SwarmResult};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Long enough for a loaded 2-core CI machine, short enough that a hang fails the test.
pub const WAIT: Duration = Duration::from_secs(20);

/// A token secret file the servers of one fleet read (`--token-secret-file`), removed on drop.
pub struct SecretFile(std::path::PathBuf);

impl SecretFile {
    /// `secret` (at least 32 bytes) in a file of this test process named after `name`.
    pub fn new(name: &str, secret: &[u8]) -> Self {
        let path =
            std::env::temp_dir().join(format!("arena-secret-{}-{name}.secret", std::process::id()));
        std::fs::write(&path, secret).expect("secret file written");
        Self(path)
    }

    pub fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temp path")
    }
}

impl Drop for SecretFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The real server binary, running as a child of the test. Killed on drop, so a failing test
/// never leaves a server behind.
pub struct ServerProcess {
    pub child: Child,
    pub pid: u32,
    /// `http://127.0.0.1:PORT`, from the server's own log line.
    pub http: String,
    /// Every line the server wrote (stdout and stderr), in arrival order. Kept whole: a test
    /// writes a few thousand lines at most.
    pub log: Arc<Mutex<Vec<String>>>,
    /// The tasks draining stdout and stderr; they end when the server closes its pipes.
    pub readers: Vec<JoinHandle<()>>,
    /// Its `--replay-dir`.
    pub replays: std::path::PathBuf,
}

impl ServerProcess {
    /// Starts `arena-server` on loopback port 0 with `extra` flags, and learns its ports from
    /// its log.
    pub async fn start(extra: &[&str]) -> Self {
        Self::start_with_env(extra, &[]).await
    }

    /// [`start`](Self::start) with environment variables set for the server.
    pub async fn start_with_env(extra: &[&str], env: &[(&str, String)]) -> Self {
        // Each server records into a directory of its own, removed on drop.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let replays = std::env::temp_dir().join(format!(
            "arena-process-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Relaxed)
        ));
        let mut child = Command::new(env!("CARGO_BIN_EXE_arena-server"))
            .args([
                "--wt-bind",
                "127.0.0.1:0",
                "--http-bind",
                "127.0.0.1:0",
                "--viewer-bind",
                "127.0.0.1:0",
                "--log",
                "info",
            ])
            .arg("--replay-dir")
            .arg(&replays)
            .args(extra)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            // Plain text: the log is parsed.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("arena-server starts");
        let pid = child.id().expect("a running child has a pid");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (http_tx, mut http_rx) = watch::channel(None);
        let http_tx = Arc::new(http_tx);
        let stdout = child.stdout.take().expect("stdout piped");
        let stderr = child.stderr.take().expect("stderr piped");
        let readers = vec![
            tokio::spawn(drain(stdout, log.clone(), http_tx.clone())),
            tokio::spawn(drain(stderr, log.clone(), http_tx)),
        ];
        let mut server = Self {
            child,
            pid,
            http: String::new(),
            log,
            readers,
            replays,
        };
        // Both senders drop when both pipes close: a server that exits before saying where it
        // listens fails here at once, with its log.
        let found = tokio::time::timeout(WAIT, http_rx.wait_for(Option::is_some)).await;
        match found {
            Ok(Ok(http)) => server.http = http.clone().unwrap_or_default(),
            _ => panic!(
                "the server never logged its addresses:\n{}",
                server.log_text()
            ),
        }
        server
    }

    /// Sends SIGTERM, as an orchestrator stopping the server would.
    pub fn sigterm(&self) {
        let pid = libc::pid_t::try_from(self.pid).expect("pid fits pid_t");
        // SAFETY: kill(2) has no memory effects; the pid is our own unreaped child.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(
            rc,
            0,
            "kill -TERM {pid}: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Waits for the server to exit, at most `within`.
    pub async fn exit_within(&mut self, within: Duration) -> Option<ExitStatus> {
        let status = tokio::time::timeout(within, self.child.wait()).await.ok()?;
        Some(status.expect("waiting on the child"))
    }

    /// Waits until the server's pipes are closed and every line it wrote is in `log`.
    pub async fn log_complete(&mut self) {
        for reader in self.readers.drain(..) {
            tokio::time::timeout(WAIT, reader)
                .await
                .expect("the server's pipes close when it exits")
                .expect("log reader task");
        }
    }

    pub fn log_text(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    /// `GET` a path on the server's HTTP side.
    pub async fn get(&self, path: &str) -> String {
        let body = arena_client_sim::http::get(&self.http, path, WAIT)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        String::from_utf8(body).expect("UTF-8 body")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // SIGKILL if it still runs (the tokio child reaps it); harmless once it has exited.
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            eprintln!("--- arena-server log ---\n{}", self.log_text());
        }
        let _ = std::fs::remove_dir_all(&self.replays);
    }
}

/// Reads the server's lines to the end of the pipe, so the server never blocks on a full
/// pipe, and publishes the HTTP address once its start line appears.
pub async fn drain(
    pipe: impl AsyncRead + Unpin,
    log: Arc<Mutex<Vec<String>>>,
    http: Arc<watch::Sender<Option<String>>>,
) {
    let mut pipe = BufReader::new(pipe);
    let mut line = Vec::new();
    loop {
        line.clear();
        match pipe.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        // Lossy: a stray byte must not stop the draining.
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        // main.rs: "WebTransport on {wt} (UDP), HTTP on http://{http} -- next: ..."
        if let Some(addr) = between(&text, "HTTP on http://", " ") {
            http.send_replace(Some(format!("http://{addr}")));
        }
        log.lock().unwrap_or_else(|e| e.into_inner()).push(text);
    }
}

/// The text between the first `start` and the next `end` after it.
pub fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

/// A process's resident set size now, KiB (`VmRSS` in `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc status")
}

/// `bots` bots of the default mix playing for a long while against `server`: the tests stop
/// them (their `stop` token) when they are done with them.
pub fn swarm(server: &ServerProcess, bots: u32, seed: u64) -> SwarmConfig {
    SwarmConfig {
        server: server.http.clone(),
        bots,
        ramp_per_s: 200.0,
        play_for: Duration::from_secs(60),
        seed,
        behaviour: SwarmBehaviour::default(),
        idle_timeout: Duration::from_secs(10),
        // No progress line, no impairment, a fresh stop token and counters.
        ..Default::default()
    }
}

/// Waits until the bots have received `n` `Welcome`s in all.
pub async fn welcomes_reach(config: &SwarmConfig, n: u64) {
    let mut rx = config.live.watch_welcomes();
    let reached = matches!(
        tokio::time::timeout(WAIT, rx.wait_for(|w| *w >= n)).await,
        Ok(Ok(_))
    );
    assert!(
        reached,
        "the bots never got {n} welcomes (got {})",
        *rx.borrow()
    );
}

/// Stops a swarm and waits for its report.
pub async fn stop(config: &SwarmConfig, swarm: JoinHandle<SwarmResult>) -> SwarmResult {
    config.stop.cancel();
    tokio::time::timeout(WAIT, swarm)
        .await
        .expect("the swarm stops in time")
        .expect("swarm task")
}

/// Every one of `n` bots connected and none failed or lost its session.
pub fn assert_all_played(r: &arena_client_sim::report::Report, n: u32) {
    assert_eq!(
        (r.bots_connected, r.bots_failed, r.bots_disconnected),
        (u64::from(n), 0, 0),
        "{}",
        r.table()
    );
}

/// RSS once it has settled: polled every 250 ms (there is no event for "memory settled")
/// until the last 2 s of readings lie within 1% of each other, at most 10 s.
pub async fn settled_rss_kib(pid: u32) -> u64 {
    const WINDOW: usize = 8;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut every = tokio::time::interval(Duration::from_millis(250));
    let mut readings = Vec::new();
    loop {
        every.tick().await;
        readings.push(rss_kib(pid));
        let last = &readings[readings.len().saturating_sub(WINDOW)..];
        let (lo, hi) = (last.iter().min(), last.iter().max());
        let steady = last.len() == WINDOW && lo.zip(hi).is_some_and(|(lo, hi)| hi - lo <= hi / 100);
        if steady || tokio::time::Instant::now() >= deadline {
            return *last.last().unwrap_or(&0);
        }
    }
}
