//! Arena's authoritative game server.
//!
//! # Layout
//! - [`config`]: every flag and bound, with its default.
//! - [`net`]: the WebTransport endpoint and one task per session: the only code with sockets.
//!   It decodes client frames, admits or rejects a `Hello` before anything is allocated, and
//!   moves inputs into the simulation's inbox and snapshots out of the session's outbox.
//! - [`game`]: the bevy_ecs world and its fixed-tick schedule, run on its own OS thread.
//!   Systems call `arena_shared::sim` to move anything.
//! - [`replication`]: what each client is sent each tick: interest, priority, byte budget and
//!   delta snapshots against the newest view the client acknowledged.
//! - [`replay`]: recording the run off the tick thread, and the `replay` tools.
//! - [`http`]: the axum side: `/healthz`, `/api/connect` (connect tokens), `/metrics`.
//! - [`stats`]: counters and gauges the server keeps about itself, read by tests and the log.
//! - [`metrics`]: the Prometheus side of those: histograms, labelled counters, rendering.
//! - [`fleet`]: the rules of running as one GameServer of an Agones fleet (sans-IO), and
//!   `agones` (cargo feature `agones`, flag `--agones`): the SDK calls that carry them out.
//!
//! [`Server::bind`] binds both sockets (port 0 works) and returns the bound addresses;
//! [`Server::run`] serves until the cancellation token fires, then drains and returns.

#[cfg(feature = "agones")]
pub mod agones;
pub mod config;
pub mod fleet;
pub mod game;
pub mod http;
pub mod metrics;
pub mod net;
pub mod replay;
pub mod replication;
pub mod stats;

mod server;

pub use config::Config;
pub use server::{Seated, Server, ServerError};
