//! The bytes of `ServerDatagram::Delta` written directly: the same bytes bitcode 0.6.9's
//! derived encoder writes, without its encoders.
//!
//! The server writes one of these per client per tick; bitcode's derived encoder, general over
//! any shape of message, gathers each field into a column buffer of its own and then packs the
//! columns one after another (~4,400 instructions for a 67-byte snapshot of the replication
//! bench's arena). This writes the packed columns straight from the snapshot's own.
//!
//! The format, as bitcode lays out a message whose fields are scalars, arrays and `Vec`s:
//! every field is a column, written in declaration order, depth first; an enum's variant
//! indices come before its fields; a `Vec` is its length, then its elements' column.
//! - An integer column of `u32`, `i32` or `u64` ([`pack_ints`]): nothing when empty; else a
//!   packing byte, then, when the values are offset by their minimum, that minimum whole,
//!   then every value at the chosen width (little-endian), the one-byte width by
//!   [`pack_bytes`].
//! - A byte column of `u8` or `i8` ([`pack_bytes`]): up to two bytes as they are; else a
//!   packing byte, the minimum when offset, and several values to a byte when they are few
//!   enough to allow it.
//! - A length: one byte below 255; else 255, and the length in a `u64` column after the
//!   column of small lengths (one length here, so just after it).
//! - An enum's variant indices: packed with no packing byte, since their bound is known.
//!
//! `bitcode` is pinned to an exact version in the workspace manifest, and
//! `the_delta_writer_writes_what_bitcode_writes` compares the two on random snapshots and at
//! every packing's edge, so a change on either side fails a test rather than a client.

use super::super::{InputStatus, SnapshotPong};
use crate::protocol::EntityKind;
use crate::snapshot::DeltaSnapshot;

/// Writes `ServerDatagram::Delta(input, snap)` at the start of `buf`, byte for byte as
/// `bitcode::encode` does, and returns its length. `buf` is working memory: it is grown to a
/// bound on the datagram's bytes when shorter, and what follows the datagram is left as it is.
pub(super) fn write_delta(input: &InputStatus, snap: &DeltaSnapshot, buf: &mut Vec<u8>) -> usize {
    let DeltaSnapshot {
        tick,
        baseline,
        origin,
        removed,
        entered,
        entered_kind,
        entered_fields,
        changed,
        changed_mask,
        small,
        large,
    } = snap;
    // Every part's most: the scalars and the pong (42), eight lengths (10 each from 255 on),
    // each integer column's packing byte, minimum and values (7 and 4 a value at most), each
    // byte column's packing byte, minimum and values; and 8 spare for [`Out::le`]'s whole-word
    // writes.
    let ints = removed.len() + entered.len() + entered_fields.len() + changed.len() + large.len();
    let bytes = entered_kind.len() + changed_mask.len() + small.len();
    let bound = 42 + 8 * 10 + 5 * 7 + 3 * 2 + 8 + 4 * ints + bytes;
    if buf.len() < bound {
        buf.resize(bound, 0);
    }
    let o = &mut Out { buf, at: 0 };
    // `ServerDatagram`'s variant: `Delta` is the first of two, packed 8 to a byte.
    o.byte(0);
    let InputStatus {
        last_seq,
        late,
        lead,
        pong,
    } = *input;
    o.scalar::<u32>(last_seq.into());
    o.scalar::<u32>(late.into());
    // A single `i8` is written as it is.
    o.byte(lead as u8);
    o.byte(u8::from(pong.is_some()));
    if let Some(SnapshotPong { nonce, held_us }) = pong {
        o.scalar::<u32>(nonce.into());
        o.scalar::<u32>(held_us.into());
    }
    o.scalar::<u32>((*tick).into());
    o.scalar::<u32>((*baseline).into());
    pack_ints(origin, o);
    o.length(removed.len());
    pack_ints(removed, o);
    o.length(entered.len());
    pack_ints(entered, o);
    o.length(entered_kind.len());
    let kind = |k: &EntityKind| match k {
        EntityKind::Player => 0u8,
        EntityKind::Npc => 1,
        EntityKind::Projectile => 2,
    };
    // `EntityKind`'s indices: three variants, packed five to a byte without a packing byte.
    arithmetic::<3>(entered_kind.len(), |i| kind(&entered_kind[i]), o);
    o.length(entered_fields.len());
    pack_ints(entered_fields, o);
    o.length(changed.len());
    pack_ints(changed, o);
    o.length(changed_mask.len());
    let (lo, hi) = changed_mask
        .iter()
        .fold((u8::MAX, 0u8), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    pack_bytes(changed_mask.len(), lo, hi, true, |i| changed_mask[i], o);
    o.length(small.len());
    let (lo, hi) = small
        .iter()
        .fold((i8::MAX, i8::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    pack_bytes(
        small.len(),
        lo as u8,
        hi as u8,
        lo >= 0,
        |i| small[i] as u8,
        o,
    );
    o.length(large.len());
    pack_ints(large, o);
    debug_assert!(o.at + 8 <= bound, "the bound holds the datagram");
    o.at
}

/// The datagram being written into a buffer sized beforehand to its bound: no write checks the
/// capacity or grows the buffer (each is still an index into the slice, which the bound keeps
/// inside it).
struct Out<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Out<'_> {
    #[inline(always)]
    fn byte(&mut self, b: u8) {
        self.buf[self.at] = b;
        self.at += 1;
    }

    /// `x`'s lowest `w` bytes, little-endian, written as one 8-byte store.
    #[inline(always)]
    fn le(&mut self, x: u64, w: usize) {
        self.buf[self.at..self.at + 8].copy_from_slice(&x.to_le_bytes());
        self.at += w;
    }

    /// A column of one integer of type `T`: its packing byte, then the value at its width (one
    /// byte written as it is).
    #[inline(always)]
    fn scalar<T: Int>(&mut self, x: u64) {
        let w = width(x);
        self.byte(int_packing::<T>(w, false));
        self.le(x, w);
    }

    /// One `Vec`'s length: a byte, and, from 255 on, the length itself in a `u64` column.
    #[inline(always)]
    fn length(&mut self, n: usize) {
        if n < 255 {
            self.byte(n as u8);
        } else {
            self.byte(255);
            self.scalar::<u64>(n as u64);
        }
    }
}

/// An integer type bitcode packs by width: its bits as a `u64` and its order.
trait Int: Copy + Ord {
    /// Bytes of the type.
    const BYTES: usize;
    /// Its bits, zero-extended.
    fn bits(self) -> u64;
    fn non_negative(self) -> bool;
}

impl Int for u32 {
    const BYTES: usize = 4;
    #[inline]
    fn bits(self) -> u64 {
        u64::from(self)
    }
    #[inline]
    fn non_negative(self) -> bool {
        true
    }
}

impl Int for i32 {
    const BYTES: usize = 4;
    #[inline]
    fn bits(self) -> u64 {
        u64::from(self as u32)
    }
    #[inline]
    fn non_negative(self) -> bool {
        self >= 0
    }
}

impl Int for u64 {
    const BYTES: usize = 8;
    #[inline]
    fn bits(self) -> u64 {
        self
    }
    #[inline]
    fn non_negative(self) -> bool {
        true
    }
}

/// The bytes a value of these bits needs: 1, 2, 4 or 8.
#[inline(always)]
fn width(bits: u64) -> usize {
    match bits {
        0..=0xFF => 1,
        0x100..=0xFFFF => 2,
        0x1_0000..=0xFFFF_FFFF => 4,
        _ => 8,
    }
}

/// The packing byte of values written `w` bytes wide in a column of `T` (0: at `T`'s own width;
/// each halving adds 2; offset by the minimum subtracts 1).
#[inline(always)]
fn int_packing<T: Int>(w: usize, offset: bool) -> u8 {
    ((T::BYTES.trailing_zeros() - w.trailing_zeros()) * 2) as u8 - u8::from(offset)
}

/// bitcode's `pack_ints` for a column of `u32`, `i32` or `u64`.
#[inline]
fn pack_ints<T: Int>(v: &[T], o: &mut Out) {
    let Some(&first) = v.first() else {
        return;
    };
    let mask = if T::BYTES == 8 {
        u64::MAX
    } else {
        (1u64 << (8 * T::BYTES)) - 1
    };
    // bitcode looks at the first 16 values first, and packs nothing if their spread needs the
    // whole width. Then the maximum needs it too (or the minimum is negative), so the whole
    // column's rule below, which never packs such a column either, writes the same bytes.
    let (min, max) = v
        .iter()
        .fold((first, first), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    let basic = if min.non_negative() {
        width(max.bits())
    } else {
        T::BYTES
    };
    let spread = width(max.bits().wrapping_sub(min.bits()) & mask);
    if spread < basic && v.len() > 5 {
        o.byte(int_packing::<T>(spread, true));
        let m = min.bits();
        o.le(m, T::BYTES);
        put(v.len(), spread, |i| v[i].bits().wrapping_sub(m) & mask, o);
    } else {
        o.byte(int_packing::<T>(basic, false));
        put(v.len(), basic, |i| v[i].bits(), o);
    }
}

/// Writes `n` values, `value(i)` the i-th, each `w` bytes wide, little-endian; one byte wide,
/// by [`pack_bytes`] (which bitcode applies to ints that fit a byte).
#[inline(always)]
fn put(n: usize, w: usize, value: impl Fn(usize) -> u64, o: &mut Out) {
    if w == 1 {
        let (lo, hi) = (0..n).fold((u8::MAX, 0u8), |(lo, hi), i| {
            let x = value(i) as u8;
            (lo.min(x), hi.max(x))
        });
        pack_bytes(n, lo, hi, true, |i| value(i) as u8, o);
        return;
    }
    for i in 0..n {
        o.le(value(i), w);
    }
}

/// How many states a packed byte's values take, bitcode's `pack::Packing` (0: a whole byte
/// each, then 16, 6, 4, 3 and 2 states; a larger code packs more values to a byte).
#[inline(always)]
fn byte_packing(max: u8) -> u8 {
    match max {
        0..=1 => 5,
        2 => 4,
        3 => 3,
        4..=5 => 2,
        6..=15 => 1,
        _ => 0,
    }
}

/// bitcode's `pack_bytes` of `n` bytes, `byte(i)` the i-th, whose minimum and maximum as
/// unsigned bytes are `lo` and `hi`; `non_negative` when they may be packed without an offset
/// (always for `u8`; for `i8`, when none is negative).
#[inline]
fn pack_bytes(
    n: usize,
    lo: u8,
    hi: u8,
    non_negative: bool,
    byte: impl Fn(usize) -> u8,
    o: &mut Out,
) {
    if n <= 2 {
        for i in 0..n {
            o.byte(byte(i));
        }
        return;
    }
    let basic = if non_negative { byte_packing(hi) } else { 0 };
    let offset = byte_packing(hi.wrapping_sub(lo));
    let (p, min) = if offset > basic && n > 5 {
        o.byte(offset * 2 - 1);
        o.byte(lo);
        (offset, lo)
    } else {
        o.byte(basic * 2);
        (basic, 0)
    };
    let at = |i| byte(i).wrapping_sub(min);
    match p {
        0 => {
            for i in 0..n {
                o.byte(at(i));
            }
        }
        1 => arithmetic::<16>(n, at, o),
        2 => arithmetic::<6>(n, at, o),
        3 => arithmetic::<4>(n, at, o),
        4 => arithmetic::<3>(n, at, o),
        _ => arithmetic::<2>(n, at, o),
    }
}

/// bitcode's `pack_arithmetic`: `n` values below `F`, as many to a byte as fit (8, 5, 4, 3 or
/// 2), the first in the lowest place.
#[inline]
fn arithmetic<const F: u8>(n: usize, value: impl Fn(usize) -> u8, o: &mut Out) {
    let per = match F {
        2 => 8,
        3 => 5,
        4 => 4,
        6 => 3,
        16 => 2,
        _ => unreachable!("bitcode packs 2, 3, 4, 6 or 16 states"),
    };
    let mut i = 0;
    while i < n {
        let end = (i + per).min(n);
        let mut acc = 0u8;
        let mut place = 1u8;
        for j in i..end {
            acc = acc.wrapping_add(value(j).wrapping_mul(place));
            place = place.wrapping_mul(F);
        }
        o.byte(acc);
        i = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ServerDatagram;
    use crate::rng::SplitMix64;

    /// Column lengths at every edge of bitcode's rules: up to two bytes unpacked, offsets from
    /// six values on, a sample of 16, lengths from 255 on in a column of their own.
    const LENGTHS: [usize; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 15, 16, 17, 33, 254, 255, 300];

    /// Spreads of values at every edge of a packing: 2, 3, 4, 6 and 16 states, a byte, two
    /// bytes, four.
    const SPREADS: [u64; 14] = [
        1,
        2,
        3,
        4,
        5,
        6,
        7,
        16,
        17,
        256,
        257,
        65_536,
        65_537,
        1 << 32,
    ];

    /// `n` values as bits of a `bits`-wide integer: from a base, within a spread, and, now and
    /// then, the first 16 within one spread and the rest within another.
    fn column(rng: &mut SplitMix64, n: usize, bits: u32) -> Vec<u64> {
        let mask = if bits == 64 {
            u64::MAX
        } else {
            (1 << bits) - 1
        };
        let draw = |rng: &mut SplitMix64| {
            let spread = SPREADS[rng.below(SPREADS.len() as u32) as usize];
            let base = match rng.below(4) {
                0 => 0,
                1 => rng.next_u64() & 0xFF,
                // Near the top: negative for a signed type, wrapping for an unsigned one.
                2 => mask - (rng.next_u64() & 0xFF),
                _ => rng.next_u64(),
            };
            (base, spread)
        };
        let first = draw(rng);
        let second = if rng.below(4) == 0 { draw(rng) } else { first };
        (0..n)
            .map(|i| {
                let (base, spread) = if i < 16 { first } else { second };
                base.wrapping_add(rng.next_u64() % spread) & mask
            })
            .collect()
    }

    fn random_delta(rng: &mut SplitMix64) -> (InputStatus, DeltaSnapshot) {
        let len = |rng: &mut SplitMix64| LENGTHS[rng.below(LENGTHS.len() as u32) as usize];
        let u32s = |rng: &mut SplitMix64, n| {
            column(rng, n, 32)
                .into_iter()
                .map(|x| x as u32)
                .collect::<Vec<_>>()
        };
        let i32s = |rng: &mut SplitMix64, n| {
            column(rng, n, 32)
                .into_iter()
                .map(|x| x as u32 as i32)
                .collect::<Vec<_>>()
        };
        let one = |rng: &mut SplitMix64| column(rng, 1, 32)[0] as u32;
        let input = InputStatus {
            last_seq: one(rng),
            late: one(rng),
            lead: column(rng, 1, 8)[0] as u8 as i8,
            pong: (rng.below(2) == 0).then(|| SnapshotPong {
                nonce: one(rng),
                held_us: one(rng),
            }),
        };
        let (n_removed, n_entered, n_fields, n_kinds) = (len(rng), len(rng), len(rng), len(rng));
        let (n_changed, n_mask, n_small, n_large) = (len(rng), len(rng), len(rng), len(rng));
        let kind_spread = 1 + rng.below(3);
        let snap = DeltaSnapshot {
            tick: one(rng),
            baseline: one(rng),
            origin: [one(rng) as i32, one(rng) as i32],
            removed: u32s(rng, n_removed),
            entered: u32s(rng, n_entered),
            entered_kind: (0..n_kinds)
                .map(|_| match rng.below(kind_spread) {
                    0 => EntityKind::Npc,
                    1 => EntityKind::Player,
                    _ => EntityKind::Projectile,
                })
                .collect(),
            entered_fields: i32s(rng, n_fields),
            changed: u32s(rng, n_changed),
            changed_mask: column(rng, n_mask, 8)
                .into_iter()
                .map(|x| x as u8)
                .collect(),
            small: column(rng, n_small, 8)
                .into_iter()
                .map(|x| x as u8 as i8)
                .collect(),
            large: i32s(rng, n_large),
        };
        (input, snap)
    }

    #[test]
    fn the_delta_writer_writes_what_bitcode_writes() {
        let mut rng = SplitMix64::new(21);
        let mut out = Vec::new();
        for case in 0..20_000 {
            let (input, snap) = random_delta(&mut rng);
            let n = write_delta(&input, &snap, &mut out);
            let datagram = ServerDatagram::Delta(input, snap);
            assert_eq!(
                out[..n],
                bitcode::encode(&datagram),
                "case {case}: {datagram:?}"
            );
        }
    }

    #[test]
    fn the_delta_writer_writes_what_bitcode_writes_at_each_packings_edge() {
        let mut out = Vec::new();
        // Each column in turn, every length, values at every spread from the bottom, the top
        // and the middle of the type.
        for n in LENGTHS {
            for spread in SPREADS {
                for base in [0u64, 1, 200, (1 << 31) - 3, u64::MAX - spread + 1] {
                    let v = |i: usize| base.wrapping_add(i as u64 % spread);
                    let mut snap = DeltaSnapshot {
                        removed: (0..n).map(|i| v(i) as u32).collect(),
                        entered_fields: (0..n).map(|i| v(i) as u32 as i32).collect(),
                        changed_mask: (0..n).map(|i| v(i) as u8).collect(),
                        small: (0..n).map(|i| v(i) as u8 as i8).collect(),
                        ..DeltaSnapshot::default()
                    };
                    snap.tick = v(0) as u32;
                    let n = write_delta(&InputStatus::default(), &snap, &mut out);
                    let datagram = ServerDatagram::Delta(InputStatus::default(), snap);
                    assert_eq!(out[..n], bitcode::encode(&datagram), "{datagram:?}");
                }
            }
        }
    }

    /// The buffer is grown to a bound computed beforehand and the writes are not checked
    /// against its capacity: the largest datagram of each column length, written into a buffer
    /// of its own, stays within it (an index past it panics).
    #[test]
    fn the_largest_datagrams_stay_within_the_bound() {
        for n in LENGTHS {
            // Every integer at full width and no two alike enough to pack; bytes that do not
            // pack either; a pong.
            let wide = |i: usize| {
                if i.is_multiple_of(2) {
                    u32::MAX
                } else {
                    i as u32
                }
            };
            let wide_signed = |i: usize| {
                if i.is_multiple_of(2) {
                    i32::MIN
                } else {
                    i as i32
                }
            };
            let snap = DeltaSnapshot {
                tick: u32::MAX,
                baseline: u32::MAX,
                origin: [i32::MIN, i32::MAX],
                removed: (0..n).map(wide).collect(),
                entered: (0..n).map(wide).collect(),
                entered_kind: vec![EntityKind::Projectile; n],
                entered_fields: (0..n).map(wide_signed).collect(),
                changed: (0..n).map(wide).collect(),
                changed_mask: (0..n).map(|i| (i * 97) as u8).collect(),
                small: (0..n).map(|i| (i * 97) as u8 as i8).collect(),
                large: (0..n).map(wide_signed).collect(),
            };
            let input = InputStatus {
                last_seq: u32::MAX,
                late: u32::MAX,
                lead: i8::MIN,
                pong: Some(SnapshotPong {
                    nonce: u32::MAX,
                    held_us: u32::MAX,
                }),
            };
            let mut out = Vec::new();
            let len = write_delta(&input, &snap, &mut out);
            let datagram = ServerDatagram::Delta(input, snap);
            assert_eq!(out[..len], bitcode::encode(&datagram), "{n}");
        }
    }
}
