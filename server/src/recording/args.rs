//! The simulation's flags in a replay header: written from the config when a run is
//! recorded, read back (range-checked) when it is re-simulated.

use std::time::Duration;

use arena_shared::replay::Header;

use crate::config::Config;

/// The flags that decide what the simulation does with the same inputs: a re-simulation
/// parses them to build the same world.
pub fn sim_args(config: &Config) -> Vec<String> {
    let d = |d: Duration| format!("{}ms", d.as_millis());
    [
        ("--seed", config.seed.to_string()),
        ("--npcs", config.npcs.to_string()),
        ("--world-size", config.world_size.to_string()),
        ("--obstacles", config.obstacles.to_string()),
        ("--tick-rate", config.tick_rate.to_string()),
        ("--input-window", config.input_window.to_string()),
        ("--inbox-capacity", config.inbox_capacity.to_string()),
        ("--npc-combat", config.npc_combat.to_string()),
        ("--respawn-delay", d(config.respawn_delay)),
        ("--spawn-protection", d(config.spawn_protection)),
        ("--npc-max-engaged", config.npc_max_engaged.to_string()),
        ("--npc-reaction", d(config.npc_reaction)),
        ("--lag-comp-history", d(config.lag_comp_history)),
        ("--max-rewind", d(config.max_rewind)),
        (
            "--replay-keyframe-ticks",
            config.replay_keyframe_ticks.to_string(),
        ),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_string(), value])
    .collect()
}

/// The bounds a replayed header's flags must keep: what a real server could have been run
/// with, no more. A replay file is untrusted input, and these flags size the world a
/// re-simulation builds (NPCs, obstacles the map generator tries to place, history it keeps)
/// and how long its ticks take.
mod sim_bounds {
    use std::time::Duration;
    pub const NPCS: u32 = 100_000;
    pub const WORLD_SIZE: std::ops::RangeInclusive<f32> = 64.0..=65_536.0;
    pub const OBSTACLES: u32 = 10_000;
    pub const INPUT_WINDOW: u32 = 1024;
    pub const INBOX_CAPACITY: usize = 1 << 20;
    pub const NPC_MAX_ENGAGED: u32 = 1000;
    pub const RESPAWN_DELAY: Duration = Duration::from_secs(3600);
    pub const SPAWN_PROTECTION: Duration = Duration::from_secs(3600);
    pub const NPC_REACTION: Duration = Duration::from_secs(60);
    pub const LAG_COMP_HISTORY: Duration = Duration::from_secs(10);
    /// A keyframe at least this often: the reader's largest tick step
    /// ([`arena_shared::replay::Limits::max_tick_step`]).
    pub const KEYFRAME_TICKS: u32 = 1 << 16;
}

/// Parses a recording header's `sim_args` into the settings a re-simulation runs with, as
/// untrusted input: only the flags [`sim_args`] writes (no `--replay-dir`, `--log` or any
/// other), each at most once and given as `--flag=value` so a value is never read as a flag,
/// every value within what a server could really have used ([`sim_bounds`]), and the
/// header's own seed and tick rate.
pub fn validate_sim_args(header: &Header) -> Result<Config, String> {
    use clap::Parser;
    let allowed: Vec<String> = sim_args(&Config::default())
        .into_iter()
        .step_by(2)
        .collect();
    let args = &header.sim_args;
    // Each flag at most once, from the list: that bounds the count too.
    if !args.len().is_multiple_of(2) {
        return Err(format!("{} words are not --flag value pairs", args.len()));
    }

    let mut seen = Vec::new();
    let mut parse = vec!["arena-server".to_string(), "--no-replays".to_string()];
    for pair in args.chunks_exact(2) {
        let (flag, value) = (&pair[0], &pair[1]);
        if !allowed.contains(flag) {
            return Err(format!("{flag:?} is not a flag a recording carries"));
        }
        if seen.contains(&flag) {
            return Err(format!("{flag} is given twice"));
        }
        seen.push(flag);
        parse.push(format!("{flag}={value}"));
    }
    let c = Config::try_parse_from(parse).map_err(|e| e.to_string())?;
    let out_of_range = |flag: &str, value: String, bound: String| {
        Err(format!("--{flag} {value} is out of range ({bound})"))
    };
    use sim_bounds as b;
    if !b::WORLD_SIZE.contains(&c.world_size) {
        return out_of_range(
            "world-size",
            c.world_size.to_string(),
            format!("{:?}", b::WORLD_SIZE),
        );
    }
    // Counts: (flag, value, least, most).
    for (flag, value, least, most) in [
        ("npcs", u64::from(c.npcs), 0, u64::from(b::NPCS)),
        (
            "obstacles",
            u64::from(c.obstacles),
            0,
            u64::from(b::OBSTACLES),
        ),
        (
            "input-window",
            u64::from(c.input_window),
            1,
            u64::from(b::INPUT_WINDOW),
        ),
        (
            "inbox-capacity",
            c.inbox_capacity as u64,
            1,
            b::INBOX_CAPACITY as u64,
        ),
        (
            "npc-max-engaged",
            u64::from(c.npc_max_engaged),
            0,
            u64::from(b::NPC_MAX_ENGAGED),
        ),
        (
            "replay-keyframe-ticks",
            u64::from(c.replay_keyframe_ticks),
            1,
            u64::from(b::KEYFRAME_TICKS),
        ),
    ] {
        if !(least..=most).contains(&value) {
            let bound = if least == 0 {
                format!("at most {most}")
            } else {
                format!("{least}..={most}")
            };
            return out_of_range(flag, value.to_string(), bound);
        }
    }
    for (flag, value, max) in [
        ("respawn-delay", c.respawn_delay, b::RESPAWN_DELAY),
        ("spawn-protection", c.spawn_protection, b::SPAWN_PROTECTION),
        ("npc-reaction", c.npc_reaction, b::NPC_REACTION),
        ("lag-comp-history", c.lag_comp_history, b::LAG_COMP_HISTORY),
        ("max-rewind", c.max_rewind, c.lag_comp_history),
    ] {
        if value > max {
            return out_of_range(flag, format!("{value:?}"), format!("at most {max:?}"));
        }
    }
    if (c.seed, c.tick_rate) != (header.seed, header.tick_rate) {
        return Err(format!(
            "seed {} at {} Hz, where the header says seed {} at {} Hz",
            c.seed, c.tick_rate, header.seed, header.tick_rate
        ));
    }
    Ok(c)
}
