//! Arena's authoritative game server.
//!
//! # Layout
//! - [`config`]: every flag and bound, with its default.
//! - [`net`]: the WebTransport endpoint and one task per session: the only code with sockets.
//!   It decodes client frames, admits or rejects a `Hello` before anything is allocated, and
//!   moves inputs into the simulation's inbox and snapshots out of the session's outbox.
//! - [`tick`]: the one place the simulation is assembled: the game's systems, replication and
//!   the recorder in one fixed-tick schedule per phase, and the loop that runs it on its own
//!   OS thread.
//! - [`game`]: the rules on a bevy_ecs world: components, systems, combat, names and the
//!   keyframe state. Systems call `arena_shared::sim` to move anything. It imports neither
//!   replication, replay nor the tick (`tests/imports.rs` checks the whole picture).
//! - [`outbox`]: what the simulation leaves for one session to send (snapshots and events),
//!   bounded, dropping the oldest: the one thing the tick thread and a session share.
//! - [`replication`]: what each client is sent each tick: interest, priority, byte budget and
//!   delta snapshots against the newest view the client acknowledged; it keeps each client's
//!   state on the player's entity.
//! - [`recording`]: recording the run off the tick thread (a leaf the game's systems use).
//! - [`replay`]: reading a run back: re-simulation through [`tick`], `replay verify`, `replay info`.
//! - [`http`]: the axum side: `/healthz`, `/api/connect` (connect tokens), `/metrics`.
//! - [`stats`]: counters and gauges the server keeps about itself, read by tests and the log.
//! - [`memory`]: handing the heap that connections freed back to the kernel (`malloc_trim`).
//! - [`metrics`]: the Prometheus side of those: histograms, labelled counters, rendering.
//! - [`handoff`]: live handoff's parts without sockets: the state bundle and its decoder, the
//!   signed request, the old server's freeze-and-confirm state machine.
//! - [`takeover`]: `--take-over-from`: the new server's side of a live handoff (ask, restore,
//!   tick, confirm); the old server's side is the HTTP route `http::handoff`.
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
pub mod handoff;
pub mod http;
pub mod memory;
pub mod metrics;
pub mod net;
pub mod outbox;
pub mod recording;
pub mod replay;
pub mod replication;
pub mod stats;
pub mod takeover;
pub mod tick;

mod server;

pub use config::Config;
pub use server::{Seated, Server, ServerError};
