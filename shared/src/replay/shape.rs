//! What a record body declares, read before bitcode decodes it: how many list elements and
//! string bytes it would allocate. bitcode believes any declared length below 2^51 and
//! allocates for it while decoding; a list element can cost a single bit of input (an empty
//! string, a history frame with no positions), so 16 MiB of body could ask for gigabytes.
//! This walk follows bitcode 0.6.9's column layout for [`Record`](super::Record) without
//! allocating, adds up what decoding would allocate, and lets the reader refuse a record
//! before bitcode sees it.
//!
//! The layout, as bitcode 0.6.9 writes one value: a struct is its fields' columns in order; an
//! enum is a column of variant indices, then each variant's fields, each populated with as
//! many values as that variant has; a list is a column of lengths, then its elements' columns
//! populated with the lengths' sum. Columns of zero values take no bytes, so only the
//! record's own variant takes bytes after the first. Whatever walks here and decodes must
//! agree with the decoded record (`the_walk_counts_what_decoding_allocates` below, and the
//! `replay` fuzz target): bitcode is pinned to that version for this reason too.

use std::mem::size_of;

use glam::Vec2;

use super::{EntityRecord, HistoryFrame, Record, Role};
use crate::map::Rect;
use crate::protocol::EntityState;

/// What a body would decode to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Shape {
    /// Bytes of heap the decoded record holds: list elements at their in-memory size, and
    /// string bytes.
    pub decoded_len: usize,
    /// The longest string.
    pub longest_string: usize,
}

/// Why a walk stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// The body does not follow the layout (bitcode would refuse it too).
    Layout,
    /// It declares more than the budget [`of`] was given: the walk stops there, before it
    /// spends time on columns whose lengths it already refuses.
    OverBudget,
}

type Walk<T = ()> = Result<T, Malformed>;

/// Walks `body`, the bitcode encoding of one [`Record`], stopping as soon as it declares
/// more than `budget` bytes of heap.
pub fn of(body: &[u8], budget: usize) -> Walk<Shape> {
    let mut w = Walker {
        input: body,
        shape: Shape::default(),
        budget,
    };
    w.record()?;
    Ok(w.shape)
}

/// What `record` holds, counted from the value: what [`of`] must say of its encoding.
pub(crate) fn of_record(record: &Record) -> Shape {
    let mut s = Shape::default();
    let string = |s: &mut Shape, t: &str| {
        s.decoded_len += t.len();
        s.longest_string = s.longest_string.max(t.len());
    };
    match record {
        Record::Header(h) => {
            s.decoded_len += h.map.obstacles.len() * size_of::<Rect>();
            s.decoded_len += h.sim_args.len() * size_of::<String>();
            h.sim_args.iter().for_each(|a| string(&mut s, a));
        }
        Record::Join { name, .. } => string(&mut s, name),
        Record::Keyframe {
            entities, state, ..
        } => {
            s.decoded_len += entities.len() * size_of::<EntityState>()
                + state.entities.len() * size_of::<EntityRecord>()
                + state.history.len() * size_of::<HistoryFrame>();
            for f in &state.history {
                s.decoded_len += f.positions.len() * size_of::<(u32, Vec2)>();
            }
            for e in &state.entities {
                if let Role::Player { name, .. } = &e.role {
                    string(&mut s, name);
                }
            }
        }
        _ => {}
    }
    s
}

struct Walker<'a> {
    input: &'a [u8],
    shape: Shape,
    budget: usize,
}

/// Values a byte packed with `factor` holds (bitcode's `factor_to_divisor`).
fn per_byte(factor: u32) -> usize {
    match factor {
        2 => 8,
        3 => 5,
        4 => 4,
        6 => 3,
        _ => 2,
    }
}

impl<'a> Walker<'a> {
    fn take(&mut self, n: usize) -> Walk<&'a [u8]> {
        if n > self.input.len() {
            return Err(Malformed::Layout);
        }
        let (head, rest) = self.input.split_at(n);
        self.input = rest;
        Ok(head)
    }

    fn byte(&mut self) -> Walk<u8> {
        Ok(self.take(1)?[0])
    }

    /// `n` values of `factor` states, `per_byte(factor)` to a byte, lowest first.
    fn packed(&mut self, n: usize, factor: u32, mut each: impl FnMut(u8)) -> Walk {
        let per = per_byte(factor);
        let bytes = self.take(n.div_ceil(per))?;
        let mut left = n;
        for &byte in bytes {
            let mut b = u32::from(byte);
            for _ in 0..per.min(left) {
                each((b % factor) as u8);
                b /= factor;
            }
            left = left.saturating_sub(per);
        }
        Ok(())
    }

    /// A column of `n` bytes (bitcode's `unpack_bytes`): raw for two or fewer, else a packing
    /// byte, an optional minimum, and the values.
    fn bytes(&mut self, n: usize, mut each: impl FnMut(u8)) -> Walk {
        if n <= 2 {
            self.take(n)?.iter().for_each(|&b| each(b));
            return Ok(());
        }
        let v = self.byte()?;
        let min = if v & 1 == 1 { self.byte()? } else { 0 };
        let factor = match v.div_ceil(2) {
            0 => {
                self.take(n)?.iter().for_each(|&b| each(b));
                return Ok(());
            }
            1 => 16,
            2 => 6,
            3 => 4,
            4 => 3,
            5 => 2,
            _ => return Err(Malformed::Layout),
        };
        self.packed(n, factor, |b| each(b.wrapping_add(min)))
    }

    /// A column of `n` unsigned integers of `size` bytes (bitcode's `unpack_ints`; signed ones
    /// are laid out as unsigned).
    fn ints(&mut self, n: usize, size: usize, mut each: impl FnMut(u64)) -> Walk {
        if size == 1 {
            return self.bytes(n, |b| each(u64::from(b)));
        }
        if n == 0 {
            return Ok(());
        }
        let raw = |w: &mut Self, width: usize, min: u64, each: &mut dyn FnMut(u64)| -> Walk {
            let bytes = w.take(n.checked_mul(width).ok_or(Malformed::Layout)?)?;
            for chunk in bytes.chunks_exact(width) {
                let mut v = [0u8; 8];
                v[..width].copy_from_slice(chunk);
                each(u64::from_le_bytes(v).wrapping_add(min));
            }
            Ok(())
        };
        if size == 2 && n == 1 {
            return raw(self, 2, 0, &mut each);
        }
        // Packings from the widest: 0 is 128 bits, 1 is 64, 2 is 32, 3 is 16, 4 is 8.
        let full = match size {
            2 => 3,
            4 => 2,
            _ => 1,
        };
        let v = self.byte()?;
        let packing = v.div_ceil(2) + full;
        let min = if v & 1 == 1 {
            let mut m = [0u8; 8];
            m[..size].copy_from_slice(self.take(size)?);
            u64::from_le_bytes(m)
        } else {
            0
        };
        // Values wrap at the integer's own width.
        let mask = if size == 8 {
            u64::MAX
        } else {
            (1u64 << (size * 8)) - 1
        };
        let mut each = |v: u64| each(v & mask);
        match packing {
            1 => raw(self, 8, min, &mut each),
            2 => raw(self, 4, min, &mut each),
            3 => raw(self, 2, min, &mut each),
            4 => self.bytes(n, |b| each(u64::from(b).wrapping_add(min))),
            _ => Err(Malformed::Layout),
        }
    }

    /// A column of `n` lengths: bytes, where 255 says "the next of a column of u64s". Returns
    /// their sum and the largest.
    fn lengths(&mut self, n: usize) -> Walk<(usize, usize)> {
        let (mut sum, mut large, mut max) = (0u64, 0usize, 0u64);
        self.bytes(n, |b| {
            sum += u64::from(b);
            if b == 255 {
                large += 1;
            } else {
                max = max.max(u64::from(b));
            }
        })?;
        if sum >= 255 {
            sum -= large as u64 * 255;
            let mut overflow = false;
            self.ints(large, 8, |v| {
                sum = sum.checked_add(v).unwrap_or_else(|| {
                    overflow = true;
                    0
                });
                max = max.max(v);
            })?;
            if overflow {
                return Err(Malformed::Layout);
            }
        }
        // bitcode refuses sums this large; anything near is far past every limit anyway.
        if sum >= 1 << 51 {
            return Err(Malformed::Layout);
        }
        Ok((sum as usize, max as usize))
    }

    /// `n` enum values of `variants` variants: how many of each.
    fn variants<const N: usize>(&mut self, n: usize) -> Walk<[usize; N]> {
        let mut histogram = [0usize; N];
        let factor = match N {
            2 => 2,
            3 => 3,
            4 => 4,
            5 | 6 => 6,
            _ => 16,
        };
        let mut bad = false;
        self.packed(n, factor, |v| match histogram.get_mut(usize::from(v)) {
            Some(count) => *count += 1,
            None => bad = true,
        })?;
        if bad {
            Err(Malformed::Layout)
        } else {
            Ok(histogram)
        }
    }

    fn bools(&mut self, n: usize) -> Walk {
        self.take(n.div_ceil(8)).map(drop)
    }

    fn floats(&mut self, n: usize) -> Walk {
        self.take(n.checked_mul(4).ok_or(Malformed::Layout)?)
            .map(drop)
    }

    fn vec2s(&mut self, n: usize) -> Walk {
        self.floats(n.checked_mul(2).ok_or(Malformed::Layout)?)
    }

    fn u8s(&mut self, n: usize) -> Walk {
        self.bytes(n, drop)
    }

    fn u16s(&mut self, n: usize) -> Walk {
        self.ints(n, 2, drop)
    }

    fn u32s(&mut self, n: usize) -> Walk {
        self.ints(n, 4, drop)
    }

    fn u64s(&mut self, n: usize) -> Walk {
        self.ints(n, 8, drop)
    }

    fn option_u32s(&mut self, n: usize) -> Walk {
        let [_, some] = self.variants::<2>(n)?;
        self.u32s(some)
    }

    /// A list column of `n` lists of `T`: returns how many elements, counted as allocated.
    fn list<T>(&mut self, n: usize) -> Walk<usize> {
        let (count, _) = self.lengths(n)?;
        self.allocates(count.saturating_mul(size_of::<T>()))?;
        Ok(count)
    }

    fn strings(&mut self, n: usize) -> Walk {
        let (bytes, longest) = self.lengths(n)?;
        self.take(bytes)?;
        self.allocates(bytes)?;
        self.shape.longest_string = self.shape.longest_string.max(longest);
        Ok(())
    }

    fn allocates(&mut self, bytes: usize) -> Walk {
        self.shape.decoded_len = self.shape.decoded_len.saturating_add(bytes);
        if self.shape.decoded_len > self.budget {
            return Err(Malformed::OverBudget);
        }
        Ok(())
    }

    fn record(&mut self) -> Walk {
        // Header, Join, Leave, Detach, Input, Event, Keyframe, Gap.
        let [header, join, leave, detach, input, event, keyframe, gap] = self.variants::<8>(1)?;
        // header: format and protocol versions, seed, map, tick rate, start, first tick, flags.
        self.u16s(header)?;
        self.u16s(header)?;
        self.u64s(header)?;
        self.map(header)?;
        self.u16s(header)?;
        self.u64s(header)?;
        self.u32s(header)?;
        let args = self.list::<String>(header)?;
        self.strings(args)?;
        // join: tick, client id, entity, name, resumed.
        self.u32s(join)?;
        self.u64s(join)?;
        self.u32s(join)?;
        self.strings(join)?;
        self.bools(join)?;
        for n in [leave, detach] {
            self.u32s(n)?;
            self.u64s(n)?;
        }
        self.u32s(input)?;
        self.u64s(input)?;
        self.inputs(input)?;
        self.u32s(event)?;
        self.u64s(event)?;
        self.events(event)?;
        // keyframe: tick, visible entities, state.
        self.u32s(keyframe)?;
        let visible = self.list::<EntityState>(keyframe)?;
        self.entity_states(visible)?;
        self.sim_states(keyframe)?;
        self.u32s(gap)?;
        self.u64s(gap)?;
        if self.input.is_empty() {
            Ok(())
        } else {
            Err(Malformed::Layout)
        }
    }

    fn map(&mut self, n: usize) -> Walk {
        self.floats(n)?;
        self.floats(n)?;
        let obstacles = self.list::<Rect>(n)?;
        self.vec2s(obstacles)?;
        self.vec2s(obstacles)
    }

    fn inputs(&mut self, n: usize) -> Walk {
        // seq, tick, movement (x, y), aim, buttons, view tick, view fraction.
        self.u32s(n)?;
        self.u32s(n)?;
        self.u8s(n)?;
        self.u8s(n)?;
        self.u16s(n)?;
        self.u8s(n)?;
        self.u32s(n)?;
        self.u8s(n)
    }

    fn events(&mut self, n: usize) -> Walk {
        let [hit, killed, respawned, score] = self.variants::<4>(n)?;
        // hit: attacker, target, damage, health.
        self.u32s(hit)?;
        self.u32s(hit)?;
        self.u16s(hit)?;
        self.u16s(hit)?;
        self.u32s(killed)?;
        self.u32s(killed)?;
        // respawned: entity, position, health.
        self.u32s(respawned)?;
        self.vec2s(respawned)?;
        self.u16s(respawned)?;
        self.u32s(score)?;
        self.u32s(score)
    }

    fn entity_states(&mut self, n: usize) -> Walk {
        // id, kind (three kinds), position, velocity.
        self.u32s(n)?;
        self.variants::<3>(n)?;
        self.vec2s(n)?;
        self.vec2s(n)
    }

    fn sim_states(&mut self, n: usize) -> Walk {
        // last id, generator, entities, history.
        self.u32s(n)?;
        self.u64s(n)?;
        let entities = self.list::<EntityRecord>(n)?;
        self.entity_records(entities)?;
        let frames = self.list::<HistoryFrame>(n)?;
        self.u32s(frames)?;
        let positions = self.list::<(u32, Vec2)>(frames)?;
        self.u32s(positions)?;
        self.vec2s(positions)
    }

    fn entity_records(&mut self, n: usize) -> Walk {
        // id, position, velocity, health, respawn tick, role.
        self.u32s(n)?;
        self.vec2s(n)?;
        self.vec2s(n)?;
        self.u32s(n)?;
        self.option_u32s(n)?;
        let [npc, player, projectile] = self.variants::<3>(n)?;
        // npc: intent (x, y), generator, wander ticks, target, next look, bolt ready.
        self.u8s(npc)?;
        self.u8s(npc)?;
        self.u64s(npc)?;
        self.u32s(npc)?;
        self.option_u32s(npc)?;
        self.u32s(npc)?;
        self.u32s(npc)?;
        // player: client id, name, lingering, last input, rifle, rocket, kills, deaths,
        // protected until.
        self.u64s(player)?;
        self.strings(player)?;
        self.bools(player)?;
        self.inputs(player)?;
        for _ in 0..5 {
            self.u32s(player)?;
        }
        // projectile: owner, damage, radius, expires.
        self.u32s(projectile)?;
        self.u32s(projectile)?;
        self.floats(projectile)?;
        self.u32s(projectile)
    }
}
