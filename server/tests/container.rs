//! The server's container image, for real, and the shipped `deploy/Containerfile`.
//!
//! No image registry is reachable on this project's machines, so the multi-stage
//! `deploy/Containerfile` (a Rust image builds, a Debian image runs) cannot be built here. The
//! test builds what can be: a static (musl) build of the same server with the same features,
//! in an image `FROM scratch` that takes its runtime lines (ENV, USER, VOLUME, EXPOSE,
//! STOPSIGNAL, ENTRYPOINT, CMD) verbatim from the shipped file, and runs it with podman: the
//! entrypoint's pod binds overridden by later args, 20 bots at the tick rate, `podman stop`
//! draining it to exit 0, the replay written by the non-root user into the volume. The
//! shipped file's stages are checked line by line.
//!
//! Needs podman and runc (Debian: `apt-get install podman runc`), musl-gcc (`musl-tools`) and
//! the Rust target (`rustup target add x86_64-unknown-linux-musl`); `.ci/run` installs them.
//! The static build goes to `target/container` (its own target directory: it never waits on
//! the outer cargo's lock); the browser client it embeds is the one `target/wasm` already
//! holds. Run with `--nocapture` to see the figures (build time, image size, idle memory,
//! the bots' rates, the drain's length).
#![cfg(target_os = "linux")]

mod common;
mod deploy;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arena_client_sim::swarm::{self, SwarmBehaviour, SwarmConfig};
use common::{rss_kib, settled_rss_kib};
use deploy::{Containerfile, effective_config, exec_form};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Long enough for a loaded 2-core CI machine, short enough that a hang fails the test.
const WAIT: Duration = Duration::from_secs(20);
/// The static build's target.
const MUSL: &str = "x86_64-unknown-linux-musl";
/// Where the fleet's pods (and users) find the server in the image.
const BINARY: &str = "/usr/local/bin/arena-server";
/// The drain the container is started with: `podman stop` must see it exit within it.
const DRAIN_SECS: u64 = 5;
/// What the bots play before the container is stopped.
const PLAY: Duration = Duration::from_secs(5);
const BOTS: u32 = 20;

/// The tools the container test needs that this machine lacks, each with how to install it.
fn missing_tools() -> Vec<String> {
    let mut missing = Vec::new();
    if which("podman").is_none() {
        missing.push("podman (apt-get install podman)".to_string());
    }
    // Debian puts runc in /usr/sbin, which a user's PATH may lack; podman finds it there.
    if which("runc").is_none() && !Path::new("/usr/sbin/runc").exists() {
        missing.push("runc (apt-get install runc)".to_string());
    }
    if which("musl-gcc").is_none() {
        missing.push("musl-gcc (apt-get install musl-tools)".to_string());
    }
    if !musl_target_installed() {
        missing.push(format!("the Rust target {MUSL} (rustup target add {MUSL})"));
    }
    missing
}

/// `name` on `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Whether the toolchain that builds the workspace (rust-toolchain.toml's, run from the
/// root) has the musl target's standard library.
fn musl_target_installed() -> bool {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    std::process::Command::new(rustc)
        .current_dir(deploy::root())
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .is_some_and(|sysroot| sysroot.join("lib/rustlib").join(MUSL).join("lib").is_dir())
}

/// Builds the server for musl with the fleet's feature, statically linked, and returns the
/// binary. The dev profile at opt-level 1 (as `[profile.test]`): a few minutes cold on two
/// cores where a release build takes many more, and fast enough to hold the tick rate. No
/// debug info and no symbols: the image carries the binary alone.
async fn build_static_server() -> PathBuf {
    let root = deploy::root();
    let target_dir = root.join("target").join("container");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let started = Instant::now();
    let built = Command::new(cargo)
        .current_dir(&root)
        .args([
            "build",
            "--locked",
            "-p",
            "arena-server",
            "--features",
            "agones",
        ])
        .args(["--target", MUSL, "--target-dir"])
        .arg(&target_dir)
        .env("CARGO_PROFILE_DEV_OPT_LEVEL", "1")
        .env("CARGO_PROFILE_DEV_DEBUG", "false")
        .env("CARGO_PROFILE_DEV_STRIP", "symbols")
        .env_remove("CARGO_BUILD_TARGET")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("cargo runs");
    assert!(
        built.status.success(),
        "the static build failed ({}):\n{}",
        built.status,
        tail(&built.stderr, 60)
    );
    eprintln!(
        "static server build ({MUSL}, dev profile at opt-level 1): {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let binary = target_dir.join(MUSL).join("debug").join("arena-server");
    let elf = std::fs::read(&binary).unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
    assert!(
        !has_interpreter(&elf),
        "{} asks for a dynamic loader: a FROM scratch image cannot run it",
        binary.display()
    );
    binary
}

/// Whether a 64-bit little-endian ELF file has a PT_INTERP program header (a dynamic
/// loader); a static or static-pie executable has none.
fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    assert!(
        elf.len() > 64 && elf[..4] == *b"\x7fELF" && elf[4] == 2 && elf[5] == 1,
        "not a 64-bit little-endian ELF file"
    );
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    let u32_at = |at: usize| u32::from_le_bytes(elf[at..at + 4].try_into().expect("4 bytes"));
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().expect("8 bytes")) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count).any(|i| u32_at(phoff + i * size) == PT_INTERP)
}

/// The last `lines` lines of a command's output.
fn tail(bytes: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `podman --runtime runc ARGS`: runc, because crun refuses this host's hybrid cgroups.
fn podman() -> Command {
    let mut cmd = Command::new("podman");
    cmd.args(["--runtime", "runc"]).stdin(Stdio::null());
    cmd
}

/// Runs a podman command to its end; panics with its output if it fails.
async fn podman_ok(args: &[&str]) -> Output {
    let out = podman().args(args).output().await.expect("podman runs");
    assert!(
        out.status.success(),
        "podman {}: {}\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `podman ... --format F NAME`, trimmed.
async fn podman_format(args: &[&str]) -> String {
    let out = podman_ok(args).await;
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A name no other run of this test uses at the same time.
fn unique(what: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!("arena-test-{what}-{}-{nanos}", std::process::id())
}

/// The test image: its build context and its tag, both removed on drop.
struct Image {
    tag: String,
    context: PathBuf,
}

impl Image {
    /// The image `FROM scratch`: the static `binary` where the shipped file puts the server,
    /// a passwd and group line for its USER, the replay directory owned by that user, and the
    /// shipped runtime stage's other instructions word for word.
    async fn build(binary: &Path, shipped: &Containerfile) -> Self {
        let context = std::env::temp_dir().join(unique("context"));
        let image = Self {
            tag: format!("localhost/{}:latest", unique("image")),
            context,
        };
        let runtime = shipped.runtime();
        let user = runtime.last("USER").expect("the runtime stage has a USER");
        let (uid, gid) = user.split_once(':').unwrap_or((user, user));
        let replays = effective_config(&shipped.entrypoint(), &[]).replay_dir;
        let replays = replays.to_str().expect("a UTF-8 path");

        let ctx = &image.context;
        std::fs::create_dir_all(ctx.join("etc")).expect("context");
        std::fs::create_dir_all(ctx.join("replays")).expect("context");
        std::fs::copy(binary, ctx.join("arena-server")).expect("copy the binary");
        std::fs::write(
            ctx.join("etc/passwd"),
            format!("arena:x:{uid}:{gid}:Arena:/nonexistent:/usr/sbin/nologin\n"),
        )
        .expect("passwd");
        std::fs::write(ctx.join("etc/group"), format!("arena:x:{gid}:\n")).expect("group");
        let mut file = format!(
            "FROM scratch\n\
             COPY etc/ /etc/\n\
             COPY --chown={uid}:{gid} replays/ {replays}/\n\
             COPY arena-server {BINARY}\n"
        );
        // RUN and COPY make the shipped image's files, which the lines above stand in for.
        for i in &runtime.instructions {
            if i.keyword != "RUN" && i.keyword != "COPY" {
                file.push_str(&format!("{} {}\n", i.keyword, i.args));
            }
        }
        std::fs::write(ctx.join("Containerfile"), &file).expect("Containerfile");
        // No intermediate images: removing the tag removes everything the build made.
        let context = ctx.to_str().expect("a UTF-8 path");
        podman_ok(&["build", "--layers=false", "-q", "-t", &image.tag, context]).await;
        image
    }

    /// The image's size as podman counts it, bytes.
    async fn size(&self) -> u64 {
        podman_format(&["image", "inspect", "--format", "{{.Size}}", &self.tag])
            .await
            .parse()
            .expect("a size in bytes")
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = std::process::Command::new("podman")
            .args(["rmi", "-f", &self.tag])
            .output();
        let _ = std::fs::remove_dir_all(&self.context);
    }
}

/// A running container of the test image and its log, followed as it is written. Removed
/// (with its anonymous volume) on drop.
struct Container {
    name: String,
    /// `podman logs -f`: ends when the container does.
    follower: Child,
    log: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
    /// `http://127.0.0.1:PORT` and the WebTransport address, from the "Arena serving" line.
    http: String,
    wt: SocketAddr,
}

impl Container {
    /// `podman run` with the host's network, as the notes on this host say it must be run
    /// (runc, explicit ulimits), then waits for the server to say where it listens.
    async fn run(image: &Image, args: &[&str]) -> Self {
        let name = unique("container");
        let mut run = vec!["run", "-d", "--name", &name];
        run.extend([
            "--ulimit",
            "nofile=4096:4096",
            "--ulimit",
            "nproc=4096:4096",
        ]);
        run.extend(["--network", "host", &image.tag]);
        run.extend(args);
        podman_ok(&run).await;
        let mut follower = podman()
            .args(["logs", "-f", &name])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("podman logs runs");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, mut rx) = watch::channel(None);
        let tx = Arc::new(tx);
        let readers = vec![
            tokio::spawn(follow(
                follower.stdout.take().expect("piped"),
                log.clone(),
                tx.clone(),
            )),
            tokio::spawn(follow(
                follower.stderr.take().expect("piped"),
                log.clone(),
                tx,
            )),
        ];
        let mut container = Self {
            name,
            follower,
            log,
            readers,
            http: String::new(),
            wt: SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        // Both senders drop when the log ends: a server that exits before serving fails here
        // at once, with its log.
        match tokio::time::timeout(WAIT, rx.wait_for(Option::is_some)).await {
            Ok(Ok(found)) => {
                let (wt, http) = (*found).expect("found");
                container.wt = wt;
                container.http = format!("http://{http}");
            }
            _ => panic!(
                "the server in the container never logged \"Arena serving\":\n{}",
                container.log_text()
            ),
        }
        container
    }

    fn log_text(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    /// The container's process (the server, PID 1 inside) as the host sees it.
    async fn host_pid(&self) -> u32 {
        podman_format(&["inspect", "--format", "{{.State.Pid}}", &self.name])
            .await
            .parse()
            .expect("a pid")
    }

    /// Waits for the container's log to end (it has exited) and every line to be read.
    async fn log_complete(&mut self) {
        for reader in self.readers.drain(..) {
            tokio::time::timeout(WAIT, reader)
                .await
                .expect("podman logs -f ends with the container")
                .expect("log reader task");
        }
        let _ = tokio::time::timeout(WAIT, self.follower.wait()).await;
    }

    /// The host directory of the volume mounted at `path` in the container.
    async fn volume_source(&self, path: &str) -> PathBuf {
        let format = format!(
            "{{{{range .Mounts}}}}{{{{if eq .Destination \"{path}\"}}}}{{{{.Source}}}}{{{{end}}}}{{{{end}}}}"
        );
        let source = podman_format(&["inspect", "--format", &format, &self.name]).await;
        assert!(!source.is_empty(), "no volume at {path} in the container");
        PathBuf::from(source)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- the container's log ---\n{}", self.log_text());
        }
        // -v: its anonymous volume (the replays) goes with it.
        let _ = std::process::Command::new("podman")
            .args(["--runtime", "runc", "rm", "-f", "-v", &self.name])
            .output();
    }
}

/// Reads the log to its end and publishes the addresses once the start line appears.
async fn follow(
    pipe: impl AsyncRead + Unpin,
    log: Arc<Mutex<Vec<String>>>,
    serving: Arc<watch::Sender<Option<(SocketAddr, SocketAddr)>>>,
) {
    let mut pipe = BufReader::new(pipe);
    let mut line = Vec::new();
    loop {
        line.clear();
        match pipe.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        // server.rs: `Arena serving wt=ADDR http=ADDR viewer=...`
        if text.contains("Arena serving") {
            let field = |key: &str| {
                text.split_whitespace()
                    .find_map(|w| w.strip_prefix(key))
                    .and_then(|a| a.parse::<SocketAddr>().ok())
            };
            if let (Some(wt), Some(http)) = (field("wt="), field("http=")) {
                serving.send_replace(Some((wt, http)));
            }
        }
        log.lock().unwrap_or_else(|e| e.into_inner()).push(text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scratch_image_of_the_static_server_serves_20_bots_at_tick_rate_and_podman_stop_drains_it()
{
    let missing = missing_tools();
    assert!(
        missing.is_empty(),
        "the container test needs {}; on Debian: apt-get install podman runc musl-tools, and \
         rustup target add {MUSL}",
        missing.join(", ")
    );
    let shipped = Containerfile::shipped();
    let binary = build_static_server().await;
    let image = Image::build(&binary, &shipped).await;
    let size = image.size().await;

    // The entrypoint's pod binds (0.0.0.0, fixed ports), overridden by later args: loopback
    // port 0 here, on the host's network. No viewer: its default port may be taken.
    let drain = DRAIN_SECS.to_string();
    let mut container = Container::run(
        &image,
        &[
            "--wt-bind",
            "127.0.0.1:0",
            "--http-bind",
            "127.0.0.1:0",
            "--viewer-bind",
            "off",
            "--npcs",
            "200",
            "--drain-secs",
            &drain,
        ],
    )
    .await;
    assert!(
        container.wt.ip().is_loopback() && container.wt.port() != 0,
        "the later --wt-bind won: {}",
        container.wt
    );
    let pid = container.host_pid().await;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|u| u.split_whitespace().next().map(str::to_string))
        .expect("Uid in /proc status");
    assert_eq!(
        Some(uid.as_str()),
        shipped
            .runtime()
            .last("USER")
            .and_then(|u| u.split(':').next()),
        "the server runs as the image's USER"
    );
    let idle = settled_rss_kib(pid).await;
    eprintln!(
        "image {:.1} MB; the server in it idle (200 NPCs): {:.1} MiB RSS",
        size as f64 / 1e6,
        idle as f64 / 1024.0
    );

    let config = SwarmConfig {
        server: container.http.clone(),
        bots: BOTS,
        ramp_per_s: 200.0,
        // Longer than the test: the drain ends their sessions, and the swarm is stopped.
        play_for: Duration::from_secs(60),
        seed: 18,
        behaviour: SwarmBehaviour::default(),
        idle_timeout: Duration::from_secs(10),
        ..Default::default()
    };
    let bots = tokio::spawn(swarm::run(config.clone()));
    let mut welcomes = config.live.watch_welcomes();
    let welcomed = matches!(
        tokio::time::timeout(WAIT, welcomes.wait_for(|w| *w >= u64::from(BOTS))).await,
        Ok(Ok(_))
    );
    assert!(
        welcomed,
        "the bots never got {BOTS} welcomes (got {})",
        *welcomes.borrow()
    );
    // The play that is measured: the bots' snapshot rates over their sessions.
    tokio::time::sleep(PLAY).await;
    let playing = rss_kib(pid);

    let stopping = Instant::now();
    podman_ok(&["stop", "-t", "15", &container.name]).await;
    let took = stopping.elapsed();
    let state = podman_format(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.ExitCode}}",
        &container.name,
    ])
    .await;
    eprintln!(
        "podman stop with {BOTS} bots playing: {state} after {:.2} s (--drain-secs \
         {DRAIN_SECS}); RSS while they played {:.1} MiB",
        took.as_secs_f64(),
        playing as f64 / 1024.0
    );
    assert_eq!(
        state, "exited 0",
        "podman stop: the server drains and exits 0"
    );
    // The server exits within its drain; the margin is podman's own work (about 0.1 s).
    let bound = Duration::from_secs(DRAIN_SECS + 3);
    assert!(took < bound, "podman stop took {took:?}, over {bound:?}");
    container.log_complete().await;
    let log = container.log_text();
    assert!(
        log.contains("SIGTERM: shutting down"),
        "the server saw SIGTERM itself"
    );
    assert!(
        log.contains("Arena stopped"),
        "the server finished its drain"
    );

    config.stop.cancel();
    let result = tokio::time::timeout(WAIT, bots)
        .await
        .expect("the swarm stops in time")
        .expect("swarm task");
    let r = &result.report;
    assert_eq!(
        (r.bots_connected, r.bots_failed),
        (u64::from(BOTS), 0),
        "{}",
        r.table()
    );
    let tick_rate = f64::from(result.bots[0].tick_rate);
    eprintln!(
        "{BOTS} bots against the container: {:.2} snapshots/s each on average, worst bot \
         {:.2}, tick rate {tick_rate}",
        r.snapshots_per_bot_hz, r.snapshots_per_bot_hz_min
    );
    assert!(
        r.snapshots_per_bot_hz_min >= 0.95 * tick_rate,
        "the worst bot got {:.2} snapshots/s, under 95% of {tick_rate}",
        r.snapshots_per_bot_hz_min
    );
    for bot in &result.bots {
        assert!(
            bot.sessions.first().is_some_and(|s| s
                .lost
                .as_deref()
                .is_some_and(|l| l.starts_with("disconnected: ServerShutdown"))),
            "{} lost its session to the drain: {:?}",
            bot.name,
            bot.sessions
        );
    }

    // The non-root user wrote the run into the image's VOLUME, and the drain closed it.
    let replays = effective_config(&shipped.entrypoint(), &[]).replay_dir;
    let volume = container
        .volume_source(replays.to_str().expect("a UTF-8 path"))
        .await;
    let files: Vec<PathBuf> = std::fs::read_dir(&volume)
        .unwrap_or_else(|e| panic!("{}: {e}", volume.display()))
        .map(|e| e.expect("an entry").path())
        .collect();
    let [file] = &files[..] else {
        panic!("one replay file in the volume: {files:?}");
    };
    let read = arena_shared::replay::read(&std::fs::read(file).expect("readable"));
    assert_eq!(read.end, arena_shared::replay::End::Clean);
    let summary = arena_shared::replay::Summary::of(&read.records);
    assert_eq!(summary.players, BOTS as usize, "{summary:?}");
}

#[test]
fn shipped_containerfile_builds_in_two_stages_and_runs_the_server_as_non_root() {
    let file = Containerfile::shipped();
    assert_eq!(file.stages.len(), 2, "a build stage and a runtime stage");

    // The build stage: the toolchain rust-toolchain.toml names, protoc for the SDK, the wasm
    // target for the embedded client, the fleet's feature and the locked versions.
    let build = file.stage("build");
    let toolchain = deploy::read("rust-toolchain.toml");
    let channel = toolchain
        .lines()
        .find_map(|l| l.strip_prefix("channel = "))
        .map(|c| c.trim_matches('"'))
        .expect("rust-toolchain.toml names a channel");
    assert!(
        file.global_args
            .contains(&format!("RUST_VERSION={channel}")),
        "the Rust image is rust-toolchain.toml's {channel}: {:?}",
        file.global_args
    );
    assert!(
        build.base.starts_with("rust:${RUST_VERSION}-"),
        "{}",
        build.base
    );
    let runs = build.runs();
    for needed in [
        "protobuf-compiler",
        "libprotobuf-dev",
        "rustup target add wasm32-unknown-unknown",
        "cargo build --profile production -p arena-server --features agones --locked",
    ] {
        assert!(runs.contains(needed), "the build stage runs {needed:?}");
    }

    // The runtime stage: the same Debian release (the binary's glibc), the binary from the
    // build stage where the fleet expects it, a numeric non-root user that exists.
    let runtime = file.runtime();
    assert_ne!(runtime.name.as_deref(), Some("build"));
    assert!(
        runtime.base.starts_with("debian:${DEBIAN_RELEASE}"),
        "{}",
        runtime.base
    );
    assert!(build.base.ends_with("-${DEBIAN_RELEASE}"), "{}", build.base);
    assert!(
        runtime
            .all("COPY")
            .iter()
            .any(|c| c.starts_with("--from=build ") && c.ends_with(&format!(" {BINARY}"))),
        "the runtime stage copies the binary to {BINARY}"
    );
    let user = runtime.last("USER").expect("a USER");
    let uid = user.split(':').next().unwrap_or(user);
    assert!(
        uid.parse::<u32>().is_ok_and(|u| u != 0),
        "USER {user}: a numeric uid other than 0 (runAsNonRoot can only check a number)"
    );
    assert!(
        runtime.runs().contains(&format!("useradd --uid {uid} ")),
        "the runtime stage makes the user {uid}"
    );

    // The entrypoint: the server itself in exec form (PID 1, gets SIGTERM), with binds a pod
    // needs (every interface, fixed ports) and the replays in the volume.
    let entrypoint = file.entrypoint();
    assert_eq!(entrypoint[0], BINARY);
    let config = effective_config(&entrypoint, &[]);
    assert!(config.wt_bind.ip().is_unspecified() && config.wt_bind.port() != 0);
    assert!(config.http_bind.ip().is_unspecified() && config.http_bind.port() != 0);
    assert_eq!(
        runtime.all("VOLUME"),
        [config.replay_dir.to_str().expect("UTF-8")],
        "the replays go to the image's volume"
    );
    let mut exposed = file.exposed();
    exposed.sort();
    let mut binds = vec![
        (config.wt_bind.port(), "udp".to_string()),
        (config.http_bind.port(), "tcp".to_string()),
    ];
    binds.sort();
    assert_eq!(
        exposed, binds,
        "EXPOSE names the bound ports with their protocols"
    );
    assert_eq!(runtime.last("STOPSIGNAL"), Some("SIGTERM"));
    if let Some(cmd) = runtime.last("CMD") {
        assert_eq!(exec_form(cmd), Some(Vec::new()), "CMD adds no flags: {cmd}");
    }

    // A later flag wins (args_override_self): how a pod's args, and this test, move a bind.
    let moved = effective_config(&entrypoint, &["--wt-bind".into(), "127.0.0.1:0".into()]);
    assert_eq!(moved.wt_bind, SocketAddr::from(([127, 0, 0, 1], 0)));
}
