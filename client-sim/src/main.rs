//! `arena-bots`: a swarm of headless players over real WebTransport connections.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use arena_client_sim::impair::ImpairConfig;
use arena_client_sim::swarm::{self, SwarmBehaviour, SwarmConfig};
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Loads an Arena server with bots that play like people, then reports what they saw.
#[derive(Debug, Parser)]
#[command(name = "arena-bots", version, about)]
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
    /// How long each bot plays once connected (e.g. 30s, 2m).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
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
    /// Seed of the bots' random walks and of the impairment.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// QUIC idle timeout of each bot's connection.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
    /// Write the flat JSON report here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// tracing filter.
    #[arg(long, default_value = "warn")]
    log: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
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
    let config = SwarmConfig {
        server: args.server.clone(),
        bots: args.bots,
        ramp_per_s: args.ramp,
        play_for: args.duration,
        seed: args.seed,
        behaviour: SwarmBehaviour::Wander,
        idle_timeout: args.idle_timeout,
        impair: ImpairConfig {
            loss: args.loss.clamp(0.0, 1.0),
            latency: args.latency,
            jitter: args.jitter,
            duplicate: args.duplicate.clamp(0.0, 1.0),
            reorder: args.reorder.clamp(0.0, 1.0),
        },
    };
    eprintln!(
        "arena-bots: {} bots against {} for {:?} (ramp {}/s)",
        args.bots, args.server, args.duration, args.ramp
    );
    let result = runtime.block_on(swarm::run(config));
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
    if result.report.bots_failed > 0 {
        for b in result.bots.iter().filter(|b| !b.connected()).take(5) {
            if let Err(e) = &b.connect {
                eprintln!("{}: {e}", b.name);
            }
        }
        eprintln!("{} bots failed to connect", result.report.bots_failed);
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
