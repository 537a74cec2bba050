//! Arena's headless clients: a bot that plays over a real WebTransport connection, and a
//! swarm that runs many of them on one tokio runtime and reports what they saw.
//!
//! # Layout
//! - [`http`]: a minimal HTTP/1.1 GET for `/api/connect` (the only HTTP the bots need).
//! - [`client`]: one connection: fetch a token, connect pinning the certificate hash, `Hello`,
//!   `Welcome` or `Reject`. Also the building blocks the integration tests use to misbehave.
//! - [`impair`]: seeded loss, latency, jitter, duplication and reordering for bots and tests.
//! - [`behaviour`]: what a bot does (wander, chase, idle), and the weighted mix that decides
//!   which bot does what.
//! - [`backoff`]: when a dropped or refused bot tries again (exponential, full jitter).
//! - [`bot`]: one bot's life: sessions, inputs at the tick rate, pings, snapshots counted,
//!   reconnects.
//! - [`swarm`]: many bots, ramped, and the merged [`report::Report`].
//! - [`live`]: counters the bots bump while they play, and the progress line on stderr.
//! - [`report`]: the flat JSON report and the summary table a person reads.
//! - [`gate`]: `--fail-under` / `--fail-over` bounds on report keys, for CI.

pub mod backoff;
pub mod behaviour;
pub mod bot;
pub mod client;
pub mod gate;
pub mod http;
pub mod impair;
pub mod live;
pub mod report;
pub mod swarm;
