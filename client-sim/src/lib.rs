//! Arena's headless clients: a bot that plays over a real WebTransport connection, and a
//! swarm that runs many of them on one tokio runtime and reports what they saw.
//!
//! # Layout
//! - [`http`]: a minimal HTTP/1.1 GET for `/api/connect` (the only HTTP the bots need).
//! - [`client`]: one connection: fetch a token, connect pinning the certificate hash, `Hello`,
//!   `Welcome` or `Reject`. Also the building blocks the integration tests use to misbehave.
//! - [`impair`]: seeded loss, latency, jitter, duplication and reordering for bots and tests.
//! - [`bot`]: one bot's life: inputs at the tick rate, pings, snapshots counted.
//! - [`swarm`]: many bots, ramped, and the merged [`report::Report`].
//! - [`report`]: the flat JSON report and the summary table a person reads.

pub mod bot;
pub mod client;
pub mod http;
pub mod impair;
pub mod report;
pub mod swarm;
