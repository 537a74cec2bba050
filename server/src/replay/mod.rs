//! Reading a recorded run back: re-simulation through the server's own tick, `replay verify`
//! and `replay info`. Recording lives in [`crate::recording`], a leaf the game's systems use;
//! this module builds its worlds with [`crate::tick`], which assembles the same systems the
//! live server runs, so a verified run is a run of the code that ships.
//!
//! - `resim`: the [`Replayer`] (re-simulation from the start or any keyframe) and `replay verify`;
//! - `info`: `replay info`.

mod info;
mod resim;

pub use info::*;
pub use resim::*;
