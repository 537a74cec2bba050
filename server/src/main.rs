//! `arena-server`: flags, logging, signals. Everything else lives in the library.

use arena_server::config::{Command, ReplayCommand};
use arena_server::{Config, Server};
use arena_shared::replay::End;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    let config = Config::parse();
    match &config.command {
        Some(Command::Replay { action }) => return replay_tool(action),
        Some(Command::Token {
            secret_file,
            url,
            client_id,
            name,
            ttl,
        }) => return token_tool(secret_file, url, *client_id, name, *ttl),
        None => {}
    }
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|e| {
        eprintln!("bad --log filter {:?}: {e}; using \"info\"", config.log);
        EnvFilter::new("info")
    });
    tracing_subscriber::fmt().with_env_filter(filter).init();
    // Before the runtime, the tick and the replication workers make their threads: a thread
    // is given its arena at its first allocation.
    let arenas = arena_server::memory::limit_arenas(config.malloc_arenas);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Some(n) = arenas {
        tracing::debug!(arenas = n, "malloc arenas limited");
    }
    match runtime.block_on(serve(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "server failed");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(#[allow(unused_mut)] mut config: Config) -> Result<(), arena_server::ServerError> {
    // The signal handler first: a SIGTERM while the sidecar is being reached still drains.
    let shutdown = CancellationToken::new();
    tokio::spawn(signal_shutdown(shutdown.clone()));
    #[cfg(feature = "agones")]
    let fleet = if config.agones {
        let agones = arena_server::agones::connect(&config)
            .await
            .map_err(arena_server::ServerError::Agones)?;
        match &config.public_url {
            Some(url) => info!(
                public_url = url.as_str(),
                game_server_url = agones.public_url.as_str(),
                "--public-url given: players are handed it, not the GameServer's address"
            ),
            None => config.public_url = Some(agones.public_url.clone()),
        }
        Some(agones)
    } else {
        None
    };
    #[cfg(not(feature = "agones"))]
    if config.agones {
        return Err(arena_server::ServerError::Agones(
            "--agones: this arena-server was built without Agones support; build it with \
             `cargo build --release -p arena-server --features agones` (needs protoc)"
                .into(),
        ));
    }
    let server = Server::bind(config).await?;
    let http = server.http_addr();
    info!(
        "WebTransport on {} (UDP), HTTP on http://{http} -- next: cargo run --release -p arena-client-sim -- --server http://{http} --bots 50",
        server.wt_addr()
    );
    // A takeover's confirmation, for the fleet loop (a confirmed server allocates itself).
    let (confirmed, _) = tokio::sync::watch::channel(false);
    #[cfg(feature = "agones")]
    let drained = CancellationToken::new();
    #[cfg(feature = "agones")]
    let fleet = fleet.map(|agones| {
        tokio::spawn(agones.run(
            server.stats(),
            server.seated(),
            server.watch_cert_hashes(),
            confirmed.subscribe(),
            shutdown.clone(),
            drained.clone(),
        ))
    });
    let served = match server.config().take_over_from.clone() {
        Some(from) => arena_server::takeover::run(server, &from, confirmed, shutdown).await,
        None => server.run(shutdown).await,
    };
    // Shutdown once the last session has closed (or the server failed).
    #[cfg(feature = "agones")]
    if let Some(fleet) = fleet {
        drained.cancel();
        let _ = fleet.await;
    }
    served
}

/// `arena-server token ...`: prints one connect token and exits 0, or says why not and exits 1.
fn token_tool(
    secret_file: &std::path::Path,
    url: &str,
    client_id: u64,
    name: &str,
    ttl: std::time::Duration,
) -> std::process::ExitCode {
    let secret = match arena_server::config::read_token_secret(secret_file) {
        Ok(secret) => secret,
        Err(e) => {
            eprintln!("token secret file {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let claims = arena_shared::token::Claims {
        client_id,
        name: name.to_string(),
        expires_at_ms: now_ms.saturating_add(ttl.as_millis() as u64),
        server: url.to_string(),
    };
    println!("{}", arena_shared::token::sign(&secret, &claims));
    std::process::ExitCode::SUCCESS
}

/// `arena-server replay ...`: prints, exits 0, or says why not and exits 1.
fn replay_tool(action: &ReplayCommand) -> std::process::ExitCode {
    match action {
        ReplayCommand::Info { file } => match arena_server::replay::info(file) {
            // A file cut off inside its last record (still being written, or its server
            // killed) is a file like any other; one the reader refuses is not.
            Ok((text, End::Clean | End::Truncated { .. })) => {
                print!("{text}");
                std::process::ExitCode::SUCCESS
            }
            Ok((text, end)) => {
                print!("{text}");
                eprintln!("{}: {end}", file.display());
                std::process::ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                std::process::ExitCode::FAILURE
            }
        },
        ReplayCommand::View { files, bind } => {
            let id =
                arena_server::http::replays::id_of(&files[0]).unwrap_or_else(|| "arena-0".into());
            // The server's viewer bounds, without the per-address rate: this viewer is one
            // person's, on their own machine.
            let settings = arena_server::http::replays::Settings {
                requests_per_sec: 0.0,
                ..arena_server::http::replays::Settings::of(&Config::default(), None)
            };
            let library = std::sync::Arc::new(arena_server::http::replays::Library::files(
                id.clone(),
                files.clone(),
                settings,
                std::sync::Arc::new(arena_server::stats::Stats::default()),
            ));
            let served = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .and_then(|rt| {
                    rt.block_on(async {
                        let listener = tokio::net::TcpListener::bind(bind).await?;
                        println!(
                            "replay viewer: http://{}/replays/{id}",
                            listener.local_addr()?
                        );
                        arena_server::http::replays::serve(
                            library,
                            listener,
                            tokio_util::sync::CancellationToken::new(),
                        )
                        .await;
                        Ok(())
                    })
                });
            match served {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("replay viewer on {bind}: {e}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        ReplayCommand::Verify { files } => match arena_server::replay::verify(files) {
            Ok(v) => {
                println!(
                    "verified: {} stretches between keyframes, {} ticks re-simulated, {} records and {} keyframes reproduced bit for bit",
                    v.segments, v.ticks, v.records, v.keyframes
                );
                if v.skipped.is_empty() {
                    std::process::ExitCode::SUCCESS
                } else {
                    let stretches: Vec<String> = v
                        .skipped
                        .iter()
                        .map(|(a, b)| format!("{a}..={b}"))
                        .collect();
                    eprintln!(
                        "not checked: ticks {} (the recorder dropped records there)",
                        stretches.join(", ")
                    );
                    // Nothing differs, but not everything was checked.
                    std::process::ExitCode::from(2)
                }
            }
            Err(e) => {
                eprintln!("does not verify: {e}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}

/// Cancels `shutdown` on SIGINT or SIGTERM.
async fn signal_shutdown(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down"),
                    _ = term.recv() => info!("SIGTERM: shutting down"),
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                info!("SIGINT: shutting down");
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    shutdown.cancel();
}
