//! Arena's shared core: the game rules and the netcode that the server, the bots and the browser
//! all run. Sans-IO: no sockets, no tokio, no clock. Time and bytes come in as values, bytes and
//! events go out, so every module here is tested without a network and builds for `wasm32`.
//!
//! # Layout
//! - [`protocol`]: every message on the wire, reliable-stream framing, the protocol version, and
//!   the one codec module (`protocol::codec`) that turns messages into bytes and back.
//! - [`sim`]: the game rules as pure, deterministic functions: player movement with acceleration,
//!   friction, a speed cap, and collision against the map.
//! - [`combat`]: the combat rules: weapons, deterministic aim, hitscan and swept projectiles
//!   against the map, and lag compensation (a position history shots are rewound into).
//! - [`clock`]: the client's estimate of the server tick, the RTT, and its own input lead.
//! - [`interp`]: interpolation buffer for remote entities.
//! - [`predict`]: client prediction of its own entity and reconciliation with the server.
//! - [`client_session`]: the client's end of a session: the pieces above (handshake, framing,
//!   snapshots and acks, clock, prediction, interpolation, pings) wired once, for every client.
//! - [`map`]: the arena's bounds and rectangular obstacles, generated from a seed.
//! - [`obstacle_grid`]: a coarse grid over the map's obstacles, built once per map, that
//!   movement asks for the obstacles near a body (the same result as testing them all).
//! - [`quant`]: quantization of what crosses the wire (positions, velocities, movement, aim).
//! - [`snapshot`]: delta snapshots against acknowledged baselines, and the client's receiver.
//! - [`replay`]: the replay file format (records framed with a length and a CRC) and its
//!   streaming reader, which bounds what a file can make it allocate.
//! - [`token`]: connect tokens, signed with HMAC-SHA256, issued by the HTTP side, checked at `Hello`.
//! - [`rng`]: a small seeded generator, so maps and NPCs are the same on every platform.
//! - [`fuzzing`]: what the fuzz targets in `fuzz/` run, also replayed and proptested on stable.

pub mod client_session;
pub mod clock;
pub mod combat;
pub mod fuzzing;
pub mod interp;
pub mod map;
pub mod obstacle_grid;
pub mod predict;
pub mod protocol;
pub mod quant;
pub mod replay;
pub mod rng;
pub mod sim;
pub mod snapshot;
pub mod token;

pub use glam::Vec2;
