//! Live handoff: a running world moves to a new server process and every player keeps their
//! entity. This module holds the parts that need no socket and no clock, each tested alone:
//!
//! - [`bundle`]: the state carried from the old server to the new (the simulation at a tick,
//!   the seats by resume-token hash, the replay run's continuation), and its total decoder;
//! - [`auth`]: the HMAC-SHA256 signature that lets only a holder of the fleet's token secret
//!   ask for the state;
//! - [`handover`]: the old server's state machine (serving, freezing, frozen, confirmed, or
//!   expired back to serving).
//!
//! The simulation's side is in `crate::tick` (`Simulation::freezer`, `Simulation::restore_from`)
//! and the seats' in [`crate::net::registry`] (`Registry::export`, `Registry::import`).
//!
//! The flow they are for: the new server signs a request ([`auth::sign`]); the old one
//! verifies it ([`auth::Verifier`]), moves its [`handover::Handover`] to `Freezing`, freezes
//! the simulation between two ticks and builds a [`bundle::Bundle`] from the capture and its
//! registry; the new server decodes it ([`bundle::decode`], bounded by `--handoff-max-bytes`),
//! imports the seats, restores the simulation and runs the next tick, then confirms; only then
//! does the old server move its players over and stop. Without a confirmation within
//! `--handoff-timeout` the old server unfreezes and carries on.

pub mod auth;
pub mod bundle;
pub mod handover;
