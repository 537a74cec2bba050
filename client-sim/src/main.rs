//! `arena-bots`: a swarm of headless players over real WebTransport connections.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use arena_client_sim::behaviour::Mix;
use arena_client_sim::endpoints::DEFAULT_BOTS_PER_ENDPOINT;
use arena_client_sim::gate::{self, Gate};
use arena_client_sim::impair::ImpairConfig;
use arena_client_sim::swarm::{self, SwarmBehaviour, SwarmConfig};
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Exit status when a `--fail-under` / `--fail-over` bound is crossed.
const EXIT_GATE: u8 = 2;
/// Exit status for a bad command line (sysexits' EX_USAGE; clap's own would be 2).
const EXIT_USAGE: u8 = 64;

/// Loads an Arena server with bots that play like people, then reports what they saw.
#[derive(Debug, Parser)]
#[command(
    name = "arena-bots",
    version,
    about,
    after_help = "Exit status: 0 when every bot connected at least once and every gate held; \
                  1 when some bot never got a Welcome (or the report could not be written); \
                  2 when a --fail-under or --fail-over bound was crossed (each violation is \
                  printed); 64 for a bad command line. Ctrl-C ends every bot at once and \
                  still reports."
)]
struct Args {
    /// The server's HTTP side.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// How many bots.
    #[arg(long, default_value_t = 10)]
    bots: u32,
    /// New connections per second while ramping up.
    #[arg(long, default_value_t = 100.0)]
    ramp: f64,
    /// How long each bot stays from its launch, reconnects included (e.g. 30s, 2m).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// What the bots do, by weight, chosen per bot from --seed and its index: wander (random
    /// walk), chase (heads for the nearest entity it sees, aiming and firing), idle (connected,
    /// only acknowledges snapshots).
    #[arg(long, default_value_t = Mix::default(), value_parser = parse_mix)]
    behaviour: Mix,
    /// Probability each datagram is lost, each way (e.g. 0.05).
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// One-way delay added to everything each bot sends and receives (e.g. 50ms).
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    latency: Duration,
    /// Extra one-way delay, uniform between 0 and this (e.g. 10ms).
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    jitter: Duration,
    /// Probability each datagram is delivered twice.
    #[arg(long, default_value_t = 0.0)]
    duplicate: f64,
    /// Probability each datagram is held back one more latency (reordered).
    #[arg(long, default_value_t = 0.0)]
    reorder: f64,
    /// Seed of the bots' behaviours, random walks, reconnect jitter and impairment.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Dial this WebTransport address (HOST:PORT, UDP) instead of the one /api/connect names:
    /// through a proxy or a port forward, or when the server advertises an address the bots
    /// cannot reach.
    #[arg(long)]
    connect_via: Option<std::net::SocketAddr>,
    /// At most this many bots share one flock: one UDP socket and one task driving their QUIC
    /// connections; every bot is still its own connection. 1: a socket each.
    #[arg(long, default_value_t = DEFAULT_BOTS_PER_ENDPOINT, value_parser = clap::value_parser!(u32).range(1..))]
    bots_per_endpoint: u32,
    /// QUIC idle timeout of each bot's connection.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
    /// Write the flat JSON report here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Fail (exit 2) when report KEY is below VALUE, e.g. snapshots_per_bot_hz=27. Repeatable.
    #[arg(long, value_name = "KEY=VALUE", value_parser = Gate::under)]
    fail_under: Vec<Gate>,
    /// Fail (exit 2) when report KEY is above VALUE, e.g. rtt_ms_p99=50. Repeatable.
    #[arg(long, value_name = "KEY=VALUE", value_parser = Gate::over)]
    fail_over: Vec<Gate>,
    /// No live progress line on stderr (it is never drawn when stderr is not a terminal).
    #[arg(long)]
    no_progress: bool,
    /// tracing filter.
    #[arg(long, default_value = "warn")]
    log: String,
}

fn parse_mix(s: &str) -> Result<Mix, String> {
    s.parse().map_err(|e| format!("{e}"))
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        // --help and --version print and exit 0; a bad flag exits EX_USAGE, so that 2 only
        // ever means a crossed gate.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(EXIT_USAGE);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&args.log).unwrap_or_else(|_| EnvFilter::new("warn")))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stop = CancellationToken::new();
    let config = SwarmConfig {
        server: args.server.clone(),
        bots: args.bots,
        ramp_per_s: args.ramp,
        play_for: args.duration,
        seed: args.seed,
        behaviour: SwarmBehaviour::Mix(args.behaviour),
        idle_timeout: args.idle_timeout,
        impair: ImpairConfig {
            loss: args.loss.clamp(0.0, 1.0),
            latency: args.latency,
            jitter: args.jitter,
            duplicate: args.duplicate.clamp(0.0, 1.0),
            reorder: args.reorder.clamp(0.0, 1.0),
        },
        connect_via: args.connect_via,
        bots_per_endpoint: args.bots_per_endpoint,
        bind: None,
        progress: !args.no_progress && std::io::stderr().is_terminal(),
        stop: stop.clone(),
        live: Default::default(),
    };
    eprintln!(
        "arena-bots: {} bots ({}) against {} for {:?} (ramp {}/s)",
        args.bots, args.behaviour, args.server, args.duration, args.ramp
    );
    let interrupted = stop.clone();
    let result = runtime.block_on(async {
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.cancel();
            }
        });
        swarm::run(config).await
    });
    if interrupted.is_cancelled() {
        eprintln!("arena-bots: stopped early (Ctrl-C); the report covers the time played");
    }
    println!("{}", result.report.table());
    if let Some(path) = &args.report {
        let json = match serde_json::to_string_pretty(&result.report) {
            Ok(j) => j,
            Err(e) => {
                eprintln!("cannot serialise the report: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Err(e) = std::fs::write(path, json + "\n") {
            eprintln!("cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    let gates: Vec<Gate> = args.fail_under.into_iter().chain(args.fail_over).collect();
    let violations = gate::check(&result.report, &gates);
    for v in &violations {
        eprintln!("arena-bots: FAILED {v}");
    }
    if result.report.bots_failed > 0 {
        for b in result.bots.iter().filter(|b| !b.connected()).take(5) {
            if let Err(e) = &b.connect {
                eprintln!("{}: {e}", b.name);
            }
        }
        eprintln!("{} bots never connected", result.report.bots_failed);
    }
    if !violations.is_empty() {
        ExitCode::from(EXIT_GATE)
    } else if result.report.bots_failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("arena-bots").chain(extra.iter().copied()))
    }

    #[test]
    fn gates_repeat_and_a_bad_one_stops_the_run_before_it_starts() {
        let args = parse(&[
            "--fail-under",
            "snapshots_per_bot_hz=27",
            "--fail-over",
            "rtt_ms_p99=50",
            "--fail-over",
            "bots_failed=0",
        ])
        .unwrap();
        assert_eq!(args.fail_under.len(), 1);
        assert_eq!(args.fail_over.len(), 2);
        for bad in ["rtt_p99=5", "rtt_ms_p99", "rtt_ms_p99=x"] {
            let err = parse(&["--fail-over", bad]).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation, "{bad}");
        }
        assert!(
            parse(&["--fail-under", "nope=1"])
                .unwrap_err()
                .to_string()
                .contains("no numeric key 'nope'")
        );
    }

    #[test]
    fn the_behaviour_mix_defaults_to_six_three_one_and_refuses_nonsense() {
        assert_eq!(parse(&[]).unwrap().behaviour, Mix::default());
        assert_eq!(
            parse(&["--behaviour", "idle=1"])
                .unwrap()
                .behaviour
                .to_string(),
            "idle=1"
        );
        let err = parse(&["--behaviour", "wander=1,fly=1"]).unwrap_err();
        assert!(err.to_string().contains("unknown behaviour 'fly'"), "{err}");
    }
}
