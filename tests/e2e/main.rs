//! End-to-end tests: the real server in-process on loopback port 0, real WebTransport clients.
//! One test binary (modules below) so the workspace links it once.

mod admission;
mod browser;
mod browser_selftest;
mod cert_rotation;
mod combat;
mod common;
mod flood;
mod handoff;
mod http_edges;
mod metrics;
mod misbehaving;
mod moved;
mod names;
mod page;
mod play;
mod relay;
mod replay;
mod replication;
mod resume;
mod shared_endpoints;
mod swarm;
mod three_drivers;
mod viewer;
mod viewer_limits;
