//! Arena's headless clients: a bot that plays over a real WebTransport connection, and a
//! swarm that runs many of them on one tokio runtime and reports what they saw.
//!
//! # Layout
//! - [`http`]: a minimal HTTP/1.1 GET for `/api/connect` (the only HTTP the bots need).
//! - [`connect`]: one connection's transport: fetch a token, connect over WebTransport pinning
//!   the certificate hash, and the errors a bot counts. Also the building blocks the
//!   integration tests use to speak the protocol by hand (`Hello`, `Welcome` or `Reject`) and
//!   to misbehave.
//! - [`endpoints`]: the swarm's QUIC endpoints, each shared by a bounded number of bots
//!   (one socket, driver and TLS configuration for many connections).
//! - [`impair`]: seeded loss, latency, jitter, duplication and reordering for bots and tests.
//! - [`behaviour`]: what a bot does (wander, chase, idle), and the weighted mix that decides
//!   which bot does what.
//! - [`backoff`]: when a dropped or refused bot tries again (exponential, full jitter).
//! - [`route`]: where the next connection goes: `/api/connect`, or after a move straight to
//!   the new server with the resume token (sans-IO).
//! - [`player`]: one bot's client, sans-IO: the shared client session
//!   (`arena_shared::client_session`: the netcode, inputs at the tick rate, pings, acks) plus
//!   the bot's steering and what it counts, fed bytes and times.
//! - [`bot`]: one bot's life, the IO: its transport, frame timer, impairment delay lines,
//!   sessions and reconnects.
//! - [`outcome`]: what a bot saw ([`outcome::BotOutcome`]: sessions, counts, histograms).
//! - [`swarm`]: many bots, ramped, and the merged [`report::Report`].
//! - [`live`]: counters the bots bump while they play, and the progress line on stderr.
//! - [`report`]: the flat JSON report and the summary table a person reads.
//! - [`gate`]: `--fail-under` / `--fail-over` bounds on report keys, for CI.

pub mod backoff;
pub mod behaviour;
pub mod bot;
pub mod connect;
pub mod endpoints;
pub mod flock;
pub mod gate;
pub mod http;
pub mod impair;
pub mod live;
pub mod outcome;
pub mod player;
pub mod report;
pub mod route;
pub mod swarm;
