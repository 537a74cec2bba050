//! Delta snapshots against acknowledged baselines.
//!
//! A client's knowledge of the world at a tick is a [`View`]: the entities it knows, each with
//! the quantized state it was last sent and the tick that state belongs to. A
//! [`DeltaSnapshot`] turns the view at its `baseline` tick (one the client acknowledged) into
//! the view at its `tick`:
//! - `removed`: entities that left the client's interest (or the world);
//! - `entered`: entities new to the client, with their full state;
//! - `changed`: entities whose state differs from what the client would *predict* from its
//!   baseline record (dead reckoning: position advanced by the recorded velocity). Each field
//!   is coded as "as predicted", a small residual (`i8`) or a large one (`i32`).
//!
//! Entities of the baseline that are not mentioned keep their record unchanged: either they
//! moved exactly as predicted, or the server's byte budget left them for a later tick. Either
//! way the client renders them from the record. Ids are sorted and sent as gaps; every list is
//! a column, which bitcode packs (residuals of a few steps cost a few bits).
//!
//! Invariant: [`encode`] returns the view the client will compute with [`apply`], bit for bit;
//! the server stores that view as the next baseline. Both are pure and total.

use std::sync::Arc;

use bitcode::{Decode, Encode};
use glam::Vec2;

use crate::protocol::EntityKind;
use crate::quant::{dequantize_pos, dequantize_vel};

/// Quantized fields per entity: position x, y (1/16 unit), velocity x, y (1/16 unit/s).
pub const FIELDS: usize = 4;
/// Snapshots a client and the server each keep to serve as baselines.
pub const BASELINE_RING: usize = 32;
/// Dead reckoning never extrapolates further than this many ticks (a record that old is sent
/// as a large residual instead).
pub const MAX_PREDICT_TICKS: u32 = 64;

/// One entity as a client knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityRecord {
    pub id: u32,
    pub kind: EntityKind,
    pub fields: [i32; FIELDS],
    /// The tick `fields` describe.
    pub tick: u32,
}

impl EntityRecord {
    /// The fields dead reckoning expects at `tick`: each tick, position advances by velocity
    /// per tick rounded half away from zero, as the simulation's snapped step does, so a body
    /// moving at constant velocity is predicted exactly. Integer arithmetic only, so both ends
    /// compute the same numbers on every platform.
    #[inline]
    pub fn predict(&self, tick: u32, tick_rate: u16) -> [i32; FIELDS] {
        let [px, py, vx, vy] = self.fields;
        let ticks = i64::from(tick.saturating_sub(self.tick).min(MAX_PREDICT_TICKS));
        let rate = i64::from(tick_rate.max(1));
        // Velocity is in position steps per second (POS_STEPS == VEL_STEPS).
        let per_tick = |v: i32| -> i64 {
            let v = i64::from(v);
            v.signum() * ((2 * v.abs() + rate) / (2 * rate))
        };
        let advance = |p: i32, v: i32| -> i32 {
            (i64::from(p) + ticks * per_tick(v)).clamp(i64::from(i32::MIN), i64::from(i32::MAX))
                as i32
        };
        [advance(px, vx), advance(py, vy), vx, vy]
    }

    pub fn pos(&self) -> Vec2 {
        Vec2::new(
            dequantize_pos(self.fields[0]),
            dequantize_pos(self.fields[1]),
        )
    }

    pub fn vel(&self) -> Vec2 {
        Vec2::new(
            dequantize_vel(self.fields[2]),
            dequantize_vel(self.fields[3]),
        )
    }

    /// Position extrapolated to `tick` (what a client renders for a stale record).
    pub fn pos_at(&self, tick: u32, tick_rate: u16) -> Vec2 {
        let p = self.predict(tick, tick_rate);
        Vec2::new(dequantize_pos(p[0]), dequantize_pos(p[1]))
    }
}

/// What a client knows at `tick`, sorted by id, ids unique.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    pub tick: u32,
    pub entities: Vec<EntityRecord>,
}

impl View {
    pub fn get(&self, id: u32) -> Option<&EntityRecord> {
        self.entities
            .binary_search_by_key(&id, |e| e.id)
            .ok()
            .map(|i| &self.entities[i])
    }
}

/// The wire form of a delta snapshot. Each `Vec` is a column.
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
pub struct DeltaSnapshot {
    pub tick: u32,
    /// The view this applies to; 0 means the empty view (a full snapshot). Ticks start at 1.
    pub baseline: u32,
    /// Reference point of `entered` positions (the receiver's own position), so they are
    /// small numbers.
    pub origin: [i32; 2],
    /// Id gaps: first id, then differences (all > 0).
    pub removed: Vec<u32>,
    pub entered: Vec<u32>,
    pub entered_kind: Vec<EntityKind>,
    /// `FIELDS` per entered entity; positions relative to `origin`.
    pub entered_fields: Vec<i32>,
    pub changed: Vec<u32>,
    /// Two bits per field, field 0 lowest: 0 as predicted, 1 in `small`, 2 in `large`.
    pub changed_mask: Vec<u8>,
    pub small: Vec<i8>,
    pub large: Vec<i32>,
}

const AS_PREDICTED: u8 = 0;
const SMALL: u8 = 1;
const LARGE: u8 = 2;

/// Why a snapshot cannot be applied. None of these can happen to a snapshot the server built
/// against a view the client really has; they mean loss of the baseline or a hostile sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("baseline {0} is not the view given")]
    BaselineMismatch(u32),
    #[error("ids are not strictly increasing")]
    BadIds,
    #[error("column lengths do not agree")]
    BadLengths,
    #[error("a field code is not 0, 1 or 2")]
    BadMask,
    #[error("removed or changed an entity the baseline does not have")]
    UnknownEntity,
    #[error("entered an entity the baseline already has")]
    DuplicateEntity,
}

/// An entity's state at the snapshot's tick, as the server wants the client to have it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Update {
    pub id: u32,
    pub kind: EntityKind,
    pub fields: [i32; FIELDS],
}

fn push_gaps(ids: impl Iterator<Item = u32>, out: &mut Vec<u32>) {
    let mut prev = 0u32;
    for id in ids {
        out.push(id.wrapping_sub(prev));
        prev = id;
    }
}

/// Builds the snapshot that takes a client from `baseline` (or nothing) to `tick`.
///
/// `removed` must be sorted ids of the baseline; `updates` sorted ids not in `removed`, each
/// either in the baseline (sent as a change against its prediction; omitted if exactly as
/// predicted) or not (sent in full). Returns the wire form and the view the client will have.
pub fn encode(
    tick: u32,
    tick_rate: u16,
    baseline: Option<&View>,
    origin: [i32; 2],
    removed: &[u32],
    updates: &[Update],
) -> (DeltaSnapshot, View) {
    let (mut view, mut snap) = (View::default(), DeltaSnapshot::default());
    encode_into(
        tick, tick_rate, baseline, origin, removed, updates, &mut view, &mut snap,
    );
    (snap, view)
}

/// Where [`encode_into`] writes the view the client will have: all of it ([`View`]), or only
/// what the snapshot makes different from its baseline ([`ViewDelta`]). The calls come in id
/// order and, together, cover every record of the next view once.
pub trait ViewSink {
    /// A new view at `tick`: forget what was written before. `base` records and at most
    /// `removed` and `updates` changes follow.
    fn begin(&mut self, tick: u32, base: usize, removed: usize, updates: usize);
    /// Baseline records the snapshot leaves as they are.
    fn keep(&mut self, run: &[EntityRecord]);
    /// A baseline record the snapshot removes.
    fn remove(&mut self, id: u32);
    /// A record the snapshot sets: an entity that changed or entered.
    fn set(&mut self, record: EntityRecord);
}

impl ViewSink for View {
    fn begin(&mut self, tick: u32, base: usize, _removed: usize, updates: usize) {
        self.tick = tick;
        self.entities.clear();
        self.entities.reserve(base + updates);
    }

    fn keep(&mut self, run: &[EntityRecord]) {
        self.entities.extend_from_slice(run);
    }

    fn remove(&mut self, _id: u32) {}

    fn set(&mut self, record: EntityRecord) {
        self.entities.push(record);
    }
}

/// [`encode`], writing the client's next view into `view` and the snapshot into `snap`, both
/// cleared first (their allocations are reused). The view goes to any [`ViewSink`]: a whole
/// [`View`], or a [`ViewDelta`] for a server that keeps its unacknowledged views as what each
/// snapshot changed.
#[expect(
    clippy::too_many_arguments,
    reason = "encode's arguments and the two buffers it refills"
)]
pub fn encode_into<S: ViewSink + ?Sized>(
    tick: u32,
    tick_rate: u16,
    baseline: Option<&View>,
    origin: [i32; 2],
    removed: &[u32],
    updates: &[Update],
    view: &mut S,
    snap: &mut DeltaSnapshot,
) {
    let empty = View::default();
    let base = baseline.unwrap_or(&empty);
    snap.tick = tick;
    snap.baseline = baseline.map_or(0, |b| b.tick);
    snap.origin = origin;
    for column in [&mut snap.removed, &mut snap.entered, &mut snap.changed] {
        column.clear();
    }
    snap.entered_kind.clear();
    snap.entered_fields.clear();
    snap.changed_mask.clear();
    snap.small.clear();
    snap.large.clear();
    push_gaps(removed.iter().copied(), &mut snap.removed);

    view.begin(tick, base.entities.len(), removed.len(), updates.len());
    // Few ids change against many that stay: walk the removed and updated ids, and copy the
    // baseline's records between them as whole runs. An id both removed and updated counts
    // as updated; a removed id the baseline lacks removes nothing from the view.
    let base = base.entities.as_slice();
    let (mut bi, mut ri, mut ui) = (0, 0, 0);
    let (mut last_entered, mut last_changed) = (0u32, 0u32);
    loop {
        let next_removed = removed.get(ri).copied();
        let next_update = updates.get(ui);
        let (id, up) = match (next_removed, next_update) {
            (None, None) => break,
            (Some(r), Some(u)) if r < u.id => (r, None),
            (Some(r), None) => (r, None),
            (Some(r), Some(u)) => {
                if r == u.id {
                    ri += 1;
                }
                (u.id, Some(*u))
            }
            (None, Some(u)) => (u.id, Some(*u)),
        };
        let run = base[bi..].partition_point(|e| e.id < id);
        view.keep(&base[bi..bi + run]);
        bi += run;
        let in_base = base.get(bi).filter(|e| e.id == id).copied();
        if in_base.is_some() {
            bi += 1;
        }
        let Some(up) = up else {
            ri += 1;
            if in_base.is_some() {
                view.remove(id);
            }
            continue;
        };
        ui += 1;
        match in_base {
            Some(rec) => {
                let predicted = rec.predict(tick, tick_rate);
                if predicted == up.fields {
                    view.keep(std::slice::from_ref(&base[bi - 1]));
                    continue;
                }
                let mut mask = 0u8;
                for (f, (&truth, &guess)) in up.fields.iter().zip(&predicted).enumerate() {
                    let residual = i64::from(truth) - i64::from(guess);
                    let code = if residual == 0 {
                        AS_PREDICTED
                    } else if let Ok(small) = i8::try_from(residual) {
                        snap.small.push(small);
                        SMALL
                    } else {
                        snap.large.push(truth.wrapping_sub(guess));
                        LARGE
                    };
                    mask |= code << (2 * f);
                }
                snap.changed.push(id.wrapping_sub(last_changed));
                last_changed = id;
                snap.changed_mask.push(mask);
                view.set(EntityRecord {
                    id,
                    kind: rec.kind,
                    fields: up.fields,
                    tick,
                });
            }
            None => {
                snap.entered.push(id.wrapping_sub(last_entered));
                last_entered = id;
                snap.entered_kind.push(up.kind);
                let [px, py, vx, vy] = up.fields;
                snap.entered_fields.extend_from_slice(&[
                    px.wrapping_sub(origin[0]),
                    py.wrapping_sub(origin[1]),
                    vx,
                    vy,
                ]);
                view.set(EntityRecord {
                    id,
                    kind: up.kind,
                    fields: up.fields,
                    tick,
                });
            }
        }
    }
    view.keep(&base[bi..]);
}

/// Applies a snapshot to the view it names as baseline (`None` for a full snapshot).
pub fn apply(
    snap: &DeltaSnapshot,
    baseline: Option<&View>,
    tick_rate: u16,
) -> Result<View, SnapshotError> {
    let mut view = View::default();
    apply_into(snap, baseline, tick_rate, &mut view)?;
    Ok(view)
}

/// Sizes a reused view buffer for `needed` records with an eighth more as headroom, so a view
/// that grows a little does not double its allocation (`Vec::reserve` doubles, and a doubled
/// buffer is kept and handed on from view to view for as long as the session lasts), and one
/// far larger than needed (its owner left a crowd) is given back. The server's views and a
/// client's [`Receiver`] both size theirs with it, and the server its deltas and interest
/// sets. For a buffer about to be refilled: one of the wrong size is replaced, its contents
/// dropped.
pub fn fit_capacity<T>(buffer: &mut Vec<T>, needed: usize) {
    let target = fitted(needed);
    if buffer.capacity() < needed || buffer.capacity() > 2 * target {
        *buffer = Vec::with_capacity(target);
    }
}

/// [`fit_capacity`] for a buffer whose contents stay: grown to fit `needed` with the
/// headroom, or shrunk to that when it holds more than twice it.
pub fn fit_capacity_keeping<T>(buffer: &mut Vec<T>, needed: usize) {
    let target = fitted(needed);
    if buffer.capacity() < needed {
        buffer.reserve_exact(target - buffer.len());
    } else if buffer.capacity() > 2 * target {
        buffer.shrink_to(target);
    }
}

/// Room for `needed` items: an eighth more, and a few.
fn fitted(needed: usize) -> usize {
    needed + needed / 8 + 8
}

/// Gap-coded ids decoded as they are read, without a buffer. They must be strictly
/// increasing: every gap after the first is at least 1 (the first is the id itself, 0 only as
/// id 0), and no id passes `u32::MAX`.
struct GapIds<'a> {
    gaps: std::slice::Iter<'a, u32>,
    head: Option<u32>,
}

impl<'a> GapIds<'a> {
    fn new(gaps: &'a [u32]) -> Self {
        let mut gaps = gaps.iter();
        let head = gaps.next().copied();
        Self { gaps, head }
    }

    /// Moves past the head: the next id must be greater.
    fn advance(&mut self) -> Result<(), SnapshotError> {
        self.head = match (self.head, self.gaps.next()) {
            (_, None) => None,
            (Some(p), Some(&g)) if g != 0 => Some(p.checked_add(g).ok_or(SnapshotError::BadIds)?),
            _ => return Err(SnapshotError::BadIds),
        };
        Ok(())
    }
}

/// The smaller of two heads of [`GapIds`] (`None`: that list is done). Written out because
/// the iterator over an array of the three heads was kept on the stack, stored and loaded
/// again at every id a snapshot names: a quarter of `apply_into`'s samples at 400 bots.
fn min_head(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// [`apply`] into `view`, reusing its allocation. On error `view` holds no meaningful state.
///
/// The baseline is copied a run at a time: the records below the next id the snapshot names
/// (removed, changed or entered) are found by a scan of their ids and copied as one slice, so
/// a record the snapshot leaves alone (~90% of them) costs a compare and its share of a copy.
pub fn apply_into(
    snap: &DeltaSnapshot,
    baseline: Option<&View>,
    tick_rate: u16,
    view: &mut View,
) -> Result<(), SnapshotError> {
    let empty = View::default();
    let base = match (snap.baseline, baseline) {
        (0, _) => &empty,
        (b, Some(v)) if v.tick == b => v,
        (b, _) => return Err(SnapshotError::BaselineMismatch(b)),
    };
    let entered_len = snap.entered.len();
    if snap.entered_kind.len() != entered_len
        || snap.entered_fields.len() != entered_len * FIELDS
        || snap.changed_mask.len() != snap.changed.len()
    {
        return Err(SnapshotError::BadLengths);
    }
    let (mut removed, mut changed, mut entered) = (
        GapIds::new(&snap.removed),
        GapIds::new(&snap.changed),
        GapIds::new(&snap.entered),
    );
    let (mut small, mut large) = (snap.small.iter(), snap.large.iter());
    let (mut c, mut e) = (0usize, 0usize);

    let mut out = std::mem::take(&mut view.entities);
    out.clear();
    fit_capacity(&mut out, base.entities.len() + entered_len);
    let records = base.entities.as_slice();
    let mut i = 0;
    loop {
        // The next id the snapshot names, and the baseline's records below it as they are.
        let next = min_head(min_head(removed.head, changed.head), entered.head);
        let bound = next.unwrap_or(u32::MAX);
        let run = records[i..].iter().take_while(|r| r.id < bound).count();
        out.extend_from_slice(&records[i..i + run]);
        i += run;
        let Some(id) = next else {
            // Nothing named is left: the rest of the baseline (ids up to `u32::MAX`) stays.
            out.extend_from_slice(&records[i..]);
            break;
        };
        let in_base = records.get(i).is_some_and(|r| r.id == id);
        if entered.head == Some(id) {
            if in_base {
                return Err(SnapshotError::DuplicateEntity);
            }
            let f = &snap.entered_fields[e * FIELDS..(e + 1) * FIELDS];
            out.push(EntityRecord {
                id,
                kind: snap.entered_kind[e],
                fields: [
                    f[0].wrapping_add(snap.origin[0]),
                    f[1].wrapping_add(snap.origin[1]),
                    f[2],
                    f[3],
                ],
                tick: snap.tick,
            });
            e += 1;
            entered.advance()?;
            continue;
        }
        // Removed or changed: a record of the baseline. (Named as both, it is removed here,
        // and its change is then of a record no longer there.)
        if !in_base {
            return Err(SnapshotError::UnknownEntity);
        }
        let rec = &records[i];
        i += 1;
        if removed.head == Some(id) {
            removed.advance()?;
            continue;
        }
        let mask = snap.changed_mask[c];
        let mut fields = rec.predict(snap.tick, tick_rate);
        for (f, field) in fields.iter_mut().enumerate() {
            match (mask >> (2 * f)) & 3 {
                AS_PREDICTED => {}
                SMALL => {
                    *field = field
                        .wrapping_add(i32::from(*small.next().ok_or(SnapshotError::BadLengths)?))
                }
                LARGE => {
                    *field = field.wrapping_add(*large.next().ok_or(SnapshotError::BadLengths)?)
                }
                _ => return Err(SnapshotError::BadMask),
            }
        }
        c += 1;
        changed.advance()?;
        out.push(EntityRecord {
            id,
            kind: rec.kind,
            fields,
            tick: snap.tick,
        });
    }
    if small.next().is_some() || large.next().is_some() {
        return Err(SnapshotError::BadLengths);
    }
    view.tick = snap.tick;
    view.entities = out;
    Ok(())
}

/// The client's side: a ring of the views it reconstructed, and what it acknowledges.
///
/// A snapshot built against baseline `b` means the server has taken `b` as acknowledged, and
/// the server's acknowledged tick only moves forward: it never again builds against a view
/// older than `b`. So views older than the newest baseline seen are released (their memory
/// reused), and the ring holds about a round trip of views, not [`BASELINE_RING`]. A late
/// snapshot built against a released view is stale: nothing newer can depend on it.
///
/// Views are shared ([`Receiver::shared`]): the interpolation buffer keeps the same views
/// rather than copies, so a client holds each view once. A released view still shared is let
/// go, not reused; its memory goes when its last holder lets go of it too.
#[derive(Debug, Clone)]
pub struct Receiver {
    tick_rate: u16,
    ring: Vec<Option<Arc<View>>>,
    /// The tick of the view in each slot of `ring` (0: none), kept beside it so that a lookup,
    /// the acknowledgement's 32 and the release's walk read one small array instead of every
    /// view's heap block (a cache miss each: a bot's views are not in cache a tick later).
    ticks: [u32; BASELINE_RING],
    newest: Option<u32>,
    /// The newest baseline a received snapshot named (0: none yet).
    floor: u32,
    /// Released views' allocations, for the next ones (at most [`SPARE_VIEWS`]).
    spare: Vec<View>,
}

/// Released view allocations a [`Receiver`] keeps for reuse.
const SPARE_VIEWS: usize = 2;

/// What a client acknowledges: the newest snapshot tick it reconstructed, and bit `i` set when
/// it also has tick `newest - 1 - i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Encode, Decode)]
pub struct Ack {
    pub newest: u32,
    pub bits: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReceiveError {
    /// The baseline is not (or no longer) in the ring: the client cannot use this snapshot.
    #[error("baseline {0} is not held")]
    MissingBaseline(u32),
    /// Older than everything the ring can hold, or already received.
    #[error("stale or duplicate snapshot")]
    Stale,
    #[error(transparent)]
    Invalid(#[from] SnapshotError),
}

impl Receiver {
    pub fn new(tick_rate: u16) -> Self {
        Self {
            tick_rate,
            ring: vec![None; BASELINE_RING],
            ticks: [0; BASELINE_RING],
            newest: None,
            floor: 0,
            spare: Vec::new(),
        }
    }

    /// Views held (ring and spares): the receiver's memory is about this many views.
    pub fn held(&self) -> usize {
        self.ring.iter().flatten().count() + self.spare.len()
    }

    /// Released views' allocations kept for the next views.
    #[cfg(test)]
    pub(crate) fn spares(&self) -> usize {
        self.spare.len()
    }

    /// Bytes of view records held room for (ring and spares): the receiver's memory (views
    /// shared with the interpolation buffer included).
    pub fn view_bytes(&self) -> usize {
        let ring = self.ring.iter().flatten().map(|v| v.entities.capacity());
        let spare = self.spare.iter().map(|v| v.entities.capacity());
        ring.chain(spare).sum::<usize>() * std::mem::size_of::<EntityRecord>()
    }

    fn slot(tick: u32) -> usize {
        tick as usize % BASELINE_RING
    }

    /// The view at `tick`, if held.
    pub fn view(&self, tick: u32) -> Option<&View> {
        self.shared(tick).map(|v| &**v)
    }

    /// The view at `tick`, if held, to keep beside the receiver without a copy.
    pub fn shared(&self, tick: u32) -> Option<&Arc<View>> {
        if !self.holds(tick) {
            return None;
        }
        self.ring[Self::slot(tick)].as_ref()
    }

    /// A view at `tick` is held (read from the array of ticks, not the views).
    fn holds(&self, tick: u32) -> bool {
        tick != 0 && self.ticks[Self::slot(tick)] == tick
    }

    /// The newest view reconstructed.
    pub fn latest(&self) -> Option<&View> {
        self.newest.and_then(|t| self.view(t))
    }

    /// Reconstructs the view of `snap` and keeps it. Older snapshots that arrive late are
    /// still kept (they can serve as baselines) but do not replace the latest view.
    pub fn receive(&mut self, snap: &DeltaSnapshot) -> Result<&View, ReceiveError> {
        if snap.tick == 0 || self.holds(snap.tick) {
            return Err(ReceiveError::Stale);
        }
        if self
            .newest
            .is_some_and(|n| snap.tick.saturating_add(BASELINE_RING as u32) <= n)
        {
            return Err(ReceiveError::Stale);
        }
        if snap.baseline != 0 && snap.baseline < self.floor {
            return Err(ReceiveError::Stale);
        }
        if snap.baseline != 0 && !self.holds(snap.baseline) {
            return Err(ReceiveError::MissingBaseline(snap.baseline));
        }
        // The slot's old view (a ring ago: too old to be a baseline) lends its allocation,
        // unless it is this snapshot's baseline or still shared; else a released one does.
        let slot = Self::slot(snap.tick);
        let old = match self.ring[slot].take() {
            Some(old) if self.ticks[slot] != snap.baseline => {
                self.ticks[slot] = 0;
                Arc::try_unwrap(old).ok()
            }
            other => {
                self.ring[slot] = other;
                None
            }
        };
        // A spare first: it was let go of a few ticks ago, where the slot's old view is a
        // ring old, out of cache.
        let mut view = match (self.spare.pop(), old) {
            (Some(spare), Some(old)) => {
                self.spare.push(old);
                spare
            }
            (spare, old) => spare.or(old).unwrap_or_default(),
        };
        let base = match snap.baseline {
            0 => None,
            b => self.view(b),
        };
        apply_into(snap, base, self.tick_rate, &mut view)?;
        self.ring[slot] = Some(Arc::new(view));
        self.ticks[slot] = snap.tick;
        if snap.baseline > self.floor {
            self.floor = snap.baseline;
            for (held, tick) in self.ring.iter_mut().zip(&mut self.ticks) {
                if *tick != 0
                    && *tick < self.floor
                    && let Some(old) = held.take()
                {
                    *tick = 0;
                    if self.spare.len() < SPARE_VIEWS
                        && let Ok(old) = Arc::try_unwrap(old)
                    {
                        self.spare.push(old);
                    }
                }
            }
        }
        if self.newest.is_none_or(|n| snap.tick > n) {
            self.newest = Some(snap.tick);
        }
        Ok(self.ring[slot].as_deref().unwrap_or_else(|| unreachable!()))
    }

    /// A view its other holder (the interpolation buffer) has let go of: kept for the next
    /// snapshot's view when this receiver no longer holds it either and has room among its
    /// spares, else dropped.
    pub fn recycle(&mut self, view: Arc<View>) {
        if self.spare.len() < SPARE_VIEWS
            && let Ok(view) = Arc::try_unwrap(view)
        {
            self.spare.push(view);
        }
    }

    /// The acknowledgement to send now (`None` before the first snapshot).
    pub fn ack(&self) -> Option<Ack> {
        let newest = self.newest?;
        let mut bits = 0u32;
        for i in 0..32u32 {
            let Some(t) = newest.checked_sub(1 + i) else {
                break;
            };
            if self.holds(t) {
                bits |= 1 << i;
            }
        }
        Some(Ack { newest, bits })
    }
}

#[cfg(test)]
mod tests;
mod view_delta;

pub use view_delta::ViewDelta;
