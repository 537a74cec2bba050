//! One client's replication state, sans-IO: what it is interested in, what it was sent, what
//! it acknowledged, and how its next snapshot is chosen.
//!
//! Each tick [`ClientReplicator::build`]:
//! 1. updates the interest set from the grid: entities within `aoi_radius` of the client's
//!    own entity enter; members leave only beyond `aoi_radius + aoi_hysteresis`, so an entity
//!    on the border does not flicker. At most `max_view` nearest entities are kept;
//! 2. picks the baseline: the newest view the client acknowledged that is still in the ring
//!    (else none, and the snapshot is full);
//! 3. classifies: baseline entities out of interest are removed; interest members the client
//!    does not have must enter; members it has are up to date when its dead-reckoning
//!    prediction equals the truth, and otherwise need a change. The frame's
//!    [`WorldFrame::current_from`] settles most of them by the record's tick alone; the rest
//!    are predicted and compared;
//! 4. schedules: an entity that starts needing sending is due `WAIT_TICKS` (8) over its gain
//!    later (gain 1 + closeness + speed/2, in [1, 2.5]: near and fast entities are due sooner)
//!    and joins the client's waiting list, kept in due order. The client's own entity goes
//!    first; then the list is taken in order, each entity whose estimated cost still fits the
//!    byte budget (`min(--client-kbps per tick, max datagram size)`). Those sent leave the
//!    list; the rest keep their due, so nothing starves (earliest deadline first: a new
//!    entity is due after every one that waits since `WAIT_TICKS` before it). An entity
//!    leaves the list without a send when it is up to date again or out of interest;
//! 5. encodes the delta, shrinking the selection until it fits, and keeps the resulting view.
//!
//! Why a schedule and not a priority each waiting entity gains every tick (Fiedler's
//! accumulator, as this was until 2026-11-30): in a fight most of a client's view needs
//! sending (~160 of ~210 members a tick in `benches/combat.rs`) while a snapshot holds ~22.
//! An accumulator re-prices every waiting entity every tick (a distance, a cost, a place in
//! a sort); a due time is set once, when the wait begins, and the list stays in order, so a
//! tick's work for a waiting entity is only the classification that says it still waits.
//! The gain is the one of the tick the wait began.
//!
//! The views it keeps: the acknowledged one whole (the baseline), and each view sent since,
//! until the client acknowledges it or a newer one, as a [`ViewDelta`] against the baseline:
//! only the records its snapshot removed or set (~20 of ~300 in view). An acknowledgement
//! applies its view's delta to the baseline in place and re-expresses the deltas of the views
//! after it against the new baseline ([`ViewDelta::rebase`]).
//!
//! A delta re-expressed so stays small while the views are one chain, each built on the one
//! before it: the client's acknowledgements come back within a tick (a LAN, a nearby player,
//! loopback), or now and then a tick late. When they lag steadily by `k` ticks, view `t` is
//! built on `t - k`, and there are `k` chains of views that share almost no record bit for
//! bit (the same entity sent at different ticks: equal in what it predicts, not in its
//! bits); a view re-expressed against a baseline of another chain names most of its records.
//! Such a view, and a view built before any baseline, is kept whole instead (as every view
//! was before), and so is a view built while the newest in flight is whole (the chains are
//! apart until acks come back within a tick again). An acknowledgement of a whole view swaps
//! it in as the baseline.
//!
//! Kept whole, a client's views were a round trip of full views plus two spares (~5 x 8.4
//! KiB at 300 in view); with acks within a tick they are now one view and a small delta, and
//! with acks steadily late they are what they were.
//!
//! Invariant: the baseline and the deltas give exactly the views the client computes from
//! what it was sent, so a snapshot built against an acknowledged view always decodes on the
//! client.

use arena_shared::protocol::codec::DatagramEncoder;
use arena_shared::protocol::{InputStatus, ServerDatagram};
use arena_shared::snapshot::{
    self, BASELINE_RING, DeltaSnapshot, Update, View, ViewDelta, ViewSink,
};
use glam::Vec2;

use super::frame::WorldFrame;
use super::grid::{Grid, Item};

/// Settings every client shares.
#[derive(Debug, Clone, Copy)]
pub struct RepSettings {
    pub tick_rate: u16,
    pub aoi_radius: f32,
    pub aoi_hysteresis: f32,
    /// Byte budget per snapshot from `--client-kbps`.
    pub budget_bytes: usize,
    pub max_view: usize,
    /// Speeds are scaled by this in the priority gain.
    pub max_speed: f32,
}

impl RepSettings {
    pub fn exit_radius(&self) -> f32 {
        self.aoi_radius + self.aoi_hysteresis
    }
}

/// Released views' allocations a client keeps for reuse, so that the steady state allocates
/// nothing.
const SPARE_VIEWS: usize = 2;

/// A view sent and not yet acknowledged (or superseded).
#[derive(Debug, Default)]
struct Sent {
    /// Its records, all of them when `whole` (`removed` empty), else its changes to the
    /// baseline.
    view: ViewDelta,
    whole: bool,
}

/// Estimated bytes of one entity in a snapshot; the encoder then checks the real size.
const ENTER_COST: usize = 9;
const CHANGE_COST: usize = 2;
const SMALL_FIELD_COST: usize = 1;
const LARGE_FIELD_COST: usize = 3;
const REMOVE_COST: usize = 2;
/// Tag, ticks, origin and column lengths.
const HEADER_COST: usize = 20;

/// An entity of the client's interest set as this tick's build sees it (in [`Scratch`]).
#[derive(Debug, Clone, Copy)]
struct Member {
    id: u32,
    /// Index of the entity in this tick's frame.
    frame_index: u32,
    /// The entity's [`WorldFrame::current_from`] this tick.
    current_from: u32,
    /// When it is due, while it waits to be sent ([`Waiting`]); [`NOT_WAITING`] otherwise.
    due: u32,
    /// Index of the client's record of it in the baseline; [`NO_RECORD`] when it has none.
    base: u32,
}

/// An entity of the client's interest set as kept from tick to tick: what [`Member`] has that
/// the next tick does not find again in the frame and the grid.
#[derive(Debug, Clone, Copy)]
struct Kept {
    id: u32,
    due: u32,
}

/// An entity that needs sending and waits for room in a snapshot, in the client's waiting
/// list ([`ClientReplicator::waiting`]), which is kept in order of `due` (then id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Waiting {
    /// When it is due, in sixteenths of a tick ([`DUE_STEPS`]), wrapping: compared by
    /// [`due_order`].
    due: u32,
    id: u32,
}

/// A member's `due` while it is not waiting (a due that would be 0 is made 1).
const NOT_WAITING: u32 = 0;
/// A member's `base` when the baseline has no record of it.
const NO_RECORD: u32 = u32::MAX;
/// A due time's steps per tick.
const DUE_STEPS: u32 = 16;
/// An entity that starts waiting is due this many ticks later over its gain (1 to 2.5: far
/// and still to near and fast). See the module's comment, step 4.
const WAIT_TICKS: f32 = 8.0;

/// A snapshot's selection stops after this many waiting entities did not fit its budget.
const HUNT: usize = 8;

/// `a` before `b`: earlier due first (serial-number order, RFC 1982: the dues of one client's
/// waiting list lie within 2^31 steps, ~52 days at 30 Hz, of each other), then lower id.
fn due_order(a: &Waiting, b: &Waiting) -> std::cmp::Ordering {
    (a.due.wrapping_sub(b.due) as i32)
        .cmp(&0)
        .then(a.id.cmp(&b.id))
}

/// An entity within the exit radius, as the grid gave it.
#[derive(Debug, Clone, Copy, Default)]
struct Near {
    /// Squared distance to the client.
    d2: f32,
    id: u32,
    current_from: u32,
}

/// An entity chosen for this tick's snapshot.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    frame_index: u32,
    /// Its place in the members and in the waiting list ([`NO_RECORD`] for the client's own
    /// entity, which never waits).
    member: u32,
    slot: u32,
    cost: u16,
}

/// What one build produced, for the caller's metrics.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Built {
    pub bytes: Vec<u8>,
    /// No acknowledged baseline was available.
    pub full: bool,
    /// Entities in the client's interest set.
    pub in_view: usize,
    /// Entities that needed sending but did not fit this tick.
    pub deferred: usize,
    /// Entities sent (entered or changed).
    pub sent: usize,
    /// Times the snapshot was encoded before it fit (1 when the estimate was right).
    pub encode_passes: usize,
}

/// Working memory of [`ClientReplicator::build`], shared by every client of a server (they
/// are built one after another): per-client memory is only what must survive between ticks.
#[derive(Debug, Default)]
pub struct Scratch {
    /// One bit per frame entity: within the exit radius of the client being built.
    near_bits: Vec<u64>,
    /// By frame index (valid where the bit is set): what the grid said of the entity.
    near_at: Vec<Near>,
    /// The interest set of the client being built, this tick.
    members: Vec<Member>,
    /// Those chosen for the snapshot, the client's own entity first, then in due order.
    candidates: Vec<Candidate>,
    /// Members that started waiting this tick, and ids whose wait ended without a send (up to
    /// date again, or out of the interest set).
    fresh: Vec<Waiting>,
    dropped: Vec<u32>,
    /// The waiting list being merged with `fresh`, copied back into the client's own.
    merged: Vec<Waiting>,
    removed: Vec<u32>,
    updates: Vec<Update>,
    /// The snapshot being encoded and the codec's buffers, refilled for each client.
    snap: DeltaSnapshot,
    encoder: DatagramEncoder,
}

#[derive(Debug)]
pub struct ClientReplicator {
    /// The newest view the client acknowledged, whole: the baseline of its next snapshot.
    /// Tick 0 and empty until the first acknowledgement (and after one grew too old).
    base: View,
    /// The views sent since, oldest first: the views the client may acknowledge next. None
    /// older than [`BASELINE_RING`] ticks.
    sent: Vec<Sent>,
    /// The interest set, by id, with each member's due time: sized to fit.
    interest: Vec<Kept>,
    /// The members that need sending and wait, but the client's own entity, one entry each,
    /// in due order: sized to fit. Invariant: `Waiting { due, id }` is here exactly when
    /// `interest` has `Kept { id, due }` with `due != NOT_WAITING`.
    waiting: Vec<Waiting>,
    last_center: Vec2,
    /// Allocations of released views, reused for the next ones (at most [`SPARE_VIEWS`]).
    spare: Vec<ViewDelta>,
    /// Real bytes per estimated byte, learned from this client's recent snapshots.
    cost_scale: f32,
}

impl Default for ClientReplicator {
    fn default() -> Self {
        Self {
            base: View::default(),
            sent: Vec::new(),
            interest: Vec::new(),
            waiting: Vec::new(),
            last_center: Vec2::ZERO,
            spare: Vec::new(),
            cost_scale: 1.0,
        }
    }
}

impl ClientReplicator {
    fn release(spare: &mut Vec<ViewDelta>, view: ViewDelta) {
        if spare.len() < SPARE_VIEWS {
            spare.push(view);
        }
    }

    /// The client says it reconstructed `newest`. Ignored unless that view was sent and not
    /// yet released, and is newer than the current baseline. It becomes the baseline (its
    /// delta applied to the old one in place, or, whole, swapped in); the deltas of the views
    /// after it are re-expressed against it, or made whole; the views before it are released
    /// (never used again).
    pub fn on_ack(&mut self, newest: u32) {
        if self.acked().is_some_and(|a| newest <= a) {
            return;
        }
        let Some(i) = self.sent.iter().position(|s| s.view.tick == newest) else {
            return;
        };
        let (upto, newer) = self.sent.split_at_mut(i + 1);
        let acked = &mut upto[i];
        // The deltas after it, against it: made whole against the old baseline when it is
        // whole, else re-expressed.
        let mut out = self.spare.pop().unwrap_or_default();
        for s in newer.iter_mut().filter(|s| !s.whole) {
            if acked.whole {
                Self::make_whole(s, &self.base, &mut out);
            } else {
                s.view.rebase(&self.base, &acked.view, &mut out);
            }
        }
        if acked.whole {
            std::mem::swap(&mut self.base.entities, &mut acked.view.set);
            self.base.tick = newest;
        } else {
            acked.view.apply_to(&mut self.base);
        }
        // A delta that names more than half the view's records (another chain's: see the
        // module's comment) costs about what the view does: kept whole.
        for s in newer.iter_mut() {
            if !s.whole && 2 * s.view.len() > self.base.entities.len() {
                Self::make_whole(s, &self.base, &mut out);
            }
        }
        Self::release(&mut self.spare, out);
        for s in self.sent.drain(..=i) {
            Self::release(&mut self.spare, s.view);
        }
    }

    /// Turns `s`, a delta against `base`, into the whole view, written in `out`'s allocation
    /// (and `s`'s given back in `out`).
    fn make_whole(s: &mut Sent, base: &View, out: &mut ViewDelta) {
        let mut whole = View {
            tick: 0,
            entities: std::mem::take(&mut out.set),
        };
        snapshot::fit_capacity(&mut whole.entities, base.entities.len() + s.view.set.len());
        whole.entities.clear();
        whole.entities.extend_from_slice(&base.entities);
        s.view.apply_to(&mut whole);
        out.tick = whole.tick;
        out.removed.clear();
        out.set = whole.entities;
        std::mem::swap(&mut s.view, out);
        s.whole = true;
    }

    pub fn acked(&self) -> Option<u32> {
        (self.base.tick != 0).then_some(self.base.tick)
    }

    /// The acknowledged view, whole, if any.
    pub fn baseline(&self) -> Option<&View> {
        self.acked().map(|_| &self.base)
    }

    /// Views held: the baseline (when acknowledged) and those sent since.
    pub fn views_held(&self) -> usize {
        usize::from(self.acked().is_some()) + self.sent.len()
    }

    /// Bytes of the interest set kept between ticks.
    pub fn interest_bytes(&self) -> usize {
        self.interest.capacity() * std::mem::size_of::<Kept>()
    }

    /// Members waiting to be sent, and the bytes their list holds room for.
    pub fn waiting(&self) -> (usize, usize) {
        (
            self.waiting.len(),
            self.waiting.capacity() * std::mem::size_of::<Waiting>(),
        )
    }

    /// Views sent since the baseline that are held whole.
    pub fn whole_views(&self) -> usize {
        self.sent.iter().filter(|s| s.whole).count()
    }

    /// Bytes of view records this client holds room for (the baseline, the views sent since
    /// and the spares): its share of replication's memory.
    pub fn view_bytes(&self) -> usize {
        self.base.entities.capacity() * std::mem::size_of::<snapshot::EntityRecord>()
            + self
                .sent
                .iter()
                .map(|s| &s.view)
                .chain(&self.spare)
                .map(ViewDelta::bytes)
                .sum::<usize>()
    }

    /// Builds this tick's snapshot for the client whose own entity is `own`.
    #[expect(
        clippy::too_many_arguments,
        reason = "the tick's shared inputs and this client's own; a struct would only rename them"
    )]
    pub fn build(
        &mut self,
        scratch: &mut Scratch,
        frame: &WorldFrame,
        grid: &Grid,
        own: u32,
        s: &RepSettings,
        max_datagram: usize,
        input: InputStatus,
    ) -> Built {
        let t = frame.tick;
        let own_index = frame.index_of(own);
        let center = own_index.map_or(self.last_center, |i| frame.entities[i].pos);
        self.last_center = center;
        self.update_interest(scratch, frame, grid, center, own, s);
        let Scratch {
            members,
            candidates,
            fresh,
            dropped,
            merged,
            removed,
            updates,
            snap,
            encoder,
            ..
        } = scratch;

        // Views a ring old cannot be acknowledged any more: the client has let them go.
        while self
            .sent
            .first()
            .is_some_and(|s| t.saturating_sub(s.view.tick) >= BASELINE_RING as u32)
        {
            let old = self.sent.remove(0);
            Self::release(&mut self.spare, old.view);
        }
        // The baseline: the acknowledged view, if recent enough. One a ring old is forgotten
        // with the views sent against it, and the snapshot is full.
        let base_tick = self
            .acked()
            .filter(|&a| t.saturating_sub(a) < BASELINE_RING as u32);
        if base_tick.is_none() && self.acked().is_some() {
            self.base.tick = 0;
            self.base.entities.clear();
            for s in self.sent.drain(..) {
                Self::release(&mut self.spare, s.view);
            }
        }
        // This tick's view: as its changes to the baseline; whole when there is none (its
        // changes to the empty view are all of it), or when the newest view in flight is
        // whole: the views are in chains of their own (see the module's comment), and this
        // one's delta would be made whole at the next acknowledgement, after a re-expression
        // and a copy that writing it whole now saves.
        let whole = base_tick.is_none() || self.sent.last().is_some_and(|s| s.whole);
        let mut next = Sent {
            view: self.spare.pop().unwrap_or_default(),
            whole,
        };
        let base = base_tick.map(|_| &self.base);

        // Classify: removed, up to date, or needing to be sent. A member that needs sending
        // and is not waiting yet starts to, due after `WAIT_TICKS` over its gain.
        removed.clear();
        fresh.clear();
        let empty: &[snapshot::EntityRecord] = &[];
        let base_entities = base.map_or(empty, |b| b.entities.as_slice());
        let mut bi = 0;
        let mut needing = 0usize;
        let mut own_member = None;
        let exit = s.exit_radius();
        let now = t.wrapping_mul(DUE_STEPS);
        for (mi, m) in members.iter_mut().enumerate() {
            while bi < base_entities.len() && base_entities[bi].id < m.id {
                removed.push(base_entities[bi].id);
                bi += 1;
            }
            m.base = NO_RECORD;
            if bi < base_entities.len() && base_entities[bi].id == m.id {
                let rec = &base_entities[bi];
                m.base = bi as u32;
                bi += 1;
                // The frame knows since when a record of this entity stays exact: most
                // members are settled by this one compare, without reading their entry.
                if rec.tick >= m.current_from
                    || rec.predict(t, s.tick_rate) == frame.entities[m.frame_index as usize].fields
                {
                    if m.due != NOT_WAITING {
                        dropped.push(m.id);
                        m.due = NOT_WAITING;
                    }
                    continue;
                }
            }
            needing += 1;
            if m.id == own {
                // Never waits: it goes first.
                if m.due != NOT_WAITING {
                    dropped.push(m.id);
                    m.due = NOT_WAITING;
                }
                own_member = Some(mi);
            } else if m.due == NOT_WAITING {
                let e = &frame.entities[m.frame_index as usize];
                let closeness = 1.0 - (e.pos.distance(center) / exit).min(1.0);
                let speed = (e.speed / s.max_speed).min(1.0);
                // Gain in [1, 2.5]: nearer and faster entities are due up to 2.5 times as
                // soon as far, still ones.
                let gain = 1.0 + closeness + 0.5 * speed;
                let wait = (WAIT_TICKS * DUE_STEPS as f32 / gain) as u32;
                m.due = now.wrapping_add(wait).max(1);
                fresh.push(Waiting {
                    due: m.due,
                    id: m.id,
                });
            }
        }
        removed.extend(base_entities[bi..].iter().map(|r| r.id));
        Self::update_waiting(&mut self.waiting, fresh, dropped, merged);

        // Select: the client's own entity, then the waiting list in due order, each if its
        // estimated cost fits the budget.
        let limit = s.budget_bytes.min(max_datagram);
        let mut spent = HEADER_COST;
        let keep_removed = removed.len().min(limit.saturating_sub(spent) / REMOVE_COST);
        removed.truncate(keep_removed);
        spent += keep_removed * REMOVE_COST;
        // Aim a little under the limit: estimates are averages, and an overshoot costs a
        // second encoding.
        let fill = limit * 15 / 16;
        let scale = self.cost_scale;
        let cost_of = |m: &Member| -> usize {
            let Some(rec) = base_entities.get(m.base as usize) else {
                return ENTER_COST;
            };
            let predicted = rec.predict(t, s.tick_rate);
            CHANGE_COST
                + predicted
                    .iter()
                    .zip(&frame.entities[m.frame_index as usize].fields)
                    .filter(|(p, f)| p != f)
                    .map(|(p, f)| {
                        if (f - p).unsigned_abs() < 128 {
                            SMALL_FIELD_COST
                        } else {
                            LARGE_FIELD_COST
                        }
                    })
                    .sum::<usize>()
        };
        candidates.clear();
        let mut estimated = 0usize;
        if let Some(mi) = own_member {
            let m = &members[mi];
            let cost = cost_of(m);
            spent += ceil(cost as f32 * scale);
            estimated += cost;
            candidates.push(Candidate {
                frame_index: m.frame_index,
                member: mi as u32,
                slot: NO_RECORD,
                cost: cost as u16,
            });
        }
        let cheapest = ceil((CHANGE_COST + SMALL_FIELD_COST) as f32 * scale).max(1);
        // Entities that do not fit are passed over for a smaller one behind them, until
        // `HUNT` have not fit: the bytes left are few by then, and the list may be long.
        let mut tries_left = HUNT;
        for (slot, w) in self.waiting.iter().enumerate() {
            if spent + cheapest > fill || tries_left == 0 {
                break;
            }
            let mi = members
                .binary_search_by_key(&w.id, |m| m.id)
                .expect("a waiting entity is a member");
            let m = &members[mi];
            let cost = cost_of(m);
            let scaled = ceil(cost as f32 * scale);
            if spent + scaled <= fill {
                spent += scaled;
                estimated += cost;
                candidates.push(Candidate {
                    frame_index: m.frame_index,
                    member: mi as u32,
                    slot: slot as u32,
                    cost: cost as u16,
                });
            } else {
                tries_left -= 1;
            }
        }
        let mut chosen = candidates.len();

        // Encode, shrinking the selection if the estimate was short. The first `chosen`
        // candidates are in the order they were taken, so truncating drops the least urgent.
        let origin = own_index.map_or([0, 0], |i| {
            [frame.entities[i].fields[0], frame.entities[i].fields[1]]
        });
        // A whole view is written as a `View` in the delta's record buffer, sized for at most
        // the baseline and every chosen entity.
        let mut whole_view = View::default();
        if whole {
            whole_view.entities = std::mem::take(&mut next.view.set);
            snapshot::fit_capacity(&mut whole_view.entities, base_entities.len() + chosen);
        }
        let mut passes = 1;
        let bytes = loop {
            updates.clear();
            updates.extend(candidates[..chosen].iter().map(|c| {
                let e = &frame.entities[c.frame_index as usize];
                Update {
                    id: e.id,
                    kind: e.kind,
                    fields: e.fields,
                }
            }));
            updates.sort_unstable_by_key(|u| u.id);
            let sink: &mut dyn ViewSink = if whole {
                &mut whole_view
            } else {
                &mut next.view
            };
            snapshot::encode_into(t, s.tick_rate, base, origin, removed, updates, sink, snap);
            // Lent to the datagram for encoding and taken back, allocations and all.
            let datagram = ServerDatagram::Delta(input, std::mem::take(snap));
            let bytes = encoder.encode(&datagram);
            if let ServerDatagram::Delta(_, lent) = datagram {
                *snap = lent;
            }
            if bytes.len() <= limit || (chosen <= 1 && removed.is_empty()) {
                break bytes;
            }
            passes += 1;
            if chosen > 1 {
                // Shrink in proportion to the excess, at least by one.
                let keep = chosen * limit / bytes.len();
                chosen = keep.clamp(1, chosen - 1);
            } else {
                removed.truncate(removed.len() / 2);
            }
        };
        // The estimate of what was finally sent, for the learning below.
        if chosen < candidates.len() {
            estimated = candidates[..chosen]
                .iter()
                .map(|c| usize::from(c.cost))
                .sum();
        }

        // Learn how far the estimates are from bitcode's real sizes for this client's traffic,
        // so that next tick's selection fills the budget in one pass.
        if estimated > 0 {
            let overhead = HEADER_COST + removed.len() * REMOVE_COST;
            let actual = bytes.len().saturating_sub(overhead).max(1) as f32;
            let ratio = actual / estimated as f32;
            self.cost_scale = (0.7 * self.cost_scale + 0.3 * ratio).clamp(0.25, 4.0);
        }

        // Those sent wait no more: out of the waiting list (their slots are increasing).
        let sent_slots = candidates[..chosen]
            .iter()
            .filter(|c| c.slot != NO_RECORD)
            .map(|c| c.slot as usize);
        remove_slots(&mut self.waiting, sent_slots);
        // Sized to fit when it shrinks a lot (a crowd sent, a fight over).
        let waiting = self.waiting.len();
        snapshot::fit_capacity_keeping(&mut self.waiting, waiting);
        for c in &candidates[..chosen] {
            members[c.member as usize].due = NOT_WAITING;
        }
        // Kept for the next tick: ids and dues, in a buffer of this client's own sized to fit
        // (the members' buffer is shared by all clients).
        snapshot::fit_capacity(&mut self.interest, members.len());
        self.interest.clear();
        self.interest.extend(members.iter().map(|m| Kept {
            id: m.id,
            due: m.due,
        }));
        let built = Built {
            full: base_tick.is_none(),
            in_view: members.len(),
            deferred: needing - chosen,
            encode_passes: passes,
            sent: chosen,
            bytes,
        };
        if whole {
            next.view.tick = t;
            next.view.removed.clear();
            next.view.set = whole_view.entities;
        }
        self.sent.push(next);
        built
    }

    /// Rebuilds the interest set around `center` into `scratch.members`, carrying priorities
    /// of members that stay.
    fn update_interest(
        &mut self,
        scratch: &mut Scratch,
        frame: &WorldFrame,
        grid: &Grid,
        center: Vec2,
        own: u32,
        s: &RepSettings,
    ) {
        let (enter2, exit) = (s.aoi_radius * s.aoi_radius, s.exit_radius());
        let exit2 = exit * exit;
        // Mark what is near in a bitmap over frame indices, then read the bits in order: the
        // frame is sorted by id, so `near` comes out in id order without a sort.
        let Scratch {
            near_bits,
            near_at,
            members,
            dropped,
            ..
        } = scratch;
        dropped.clear();
        near_bits.clear();
        near_bits.resize(frame.entities.len().div_ceil(64), 0);
        if near_at.len() < frame.entities.len() {
            near_at.resize(frame.entities.len(), Near::default());
        }
        grid.query(center, exit, |item: &Item| {
            let d2 = item.pos.distance_squared(center);
            if d2 <= exit2 {
                let i = item.index as usize;
                near_bits[i / 64] |= 1 << (i % 64);
                near_at[i] = Near {
                    d2,
                    id: item.id,
                    current_from: item.current_from,
                };
            }
        });
        if let Some(i) = frame.index_of(own) {
            near_bits[i / 64] |= 1 << (i % 64);
            near_at[i] = Near {
                d2: 0.0,
                id: own,
                current_from: frame.current_from[i],
            };
        }
        // Read the bits in order (frame index order is id order) and merge with the old
        // interest as they come: members stay while within the exit radius, newcomers enter
        // within the enter radius.
        members.clear();
        let old = &self.interest;
        let mut oi = 0;
        for (w, &word) in near_bits.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let frame_index = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let Near {
                    d2,
                    id,
                    current_from,
                } = near_at[frame_index];
                while oi < old.len() && old[oi].id < id {
                    // Out of the interest set: its wait ends.
                    if old[oi].due != NOT_WAITING {
                        dropped.push(old[oi].id);
                    }
                    oi += 1;
                }
                let was = (oi < old.len() && old[oi].id == id).then(|| {
                    oi += 1;
                    old[oi - 1].due
                });
                if d2 <= enter2 || was.is_some() || id == own {
                    members.push(Member {
                        id,
                        frame_index: frame_index as u32,
                        current_from,
                        due: was.unwrap_or(NOT_WAITING),
                        base: NO_RECORD,
                    });
                }
            }
        }
        dropped.extend(
            old[oi..]
                .iter()
                .filter(|k| k.due != NOT_WAITING)
                .map(|k| k.id),
        );
        if members.len() > s.max_view {
            // Keep the nearest (and always the client's own entity).
            let mut by_distance: Vec<(f32, u32)> = members
                .iter()
                .map(|m| {
                    let d2 = near_at[m.frame_index as usize].d2;
                    (if m.id == own { -1.0 } else { d2 }, m.id)
                })
                .collect();
            by_distance.select_nth_unstable_by(s.max_view - 1, |a, b| a.0.total_cmp(&b.0));
            let mut keep: Vec<u32> = by_distance[..s.max_view].iter().map(|x| x.1).collect();
            keep.sort_unstable();
            members.retain(|m| {
                let kept = keep.binary_search(&m.id).is_ok();
                if !kept && m.due != NOT_WAITING {
                    dropped.push(m.id);
                }
                kept
            });
        }
    }
}

impl ClientReplicator {
    /// Takes the waits that ended without a send (`dropped`, ids) out of the waiting list and
    /// merges the new ones (`fresh`) in, in due order.
    fn update_waiting(
        waiting: &mut Vec<Waiting>,
        fresh: &mut [Waiting],
        dropped: &mut [u32],
        merged: &mut Vec<Waiting>,
    ) {
        if !dropped.is_empty() {
            dropped.sort_unstable();
            waiting.retain(|w| dropped.binary_search(&w.id).is_err());
        }
        if fresh.is_empty() {
            return;
        }
        fresh.sort_unstable_by(due_order);
        merged.clear();
        merged.reserve(waiting.len() + fresh.len());
        let (mut i, mut j) = (0, 0);
        while i < waiting.len() && j < fresh.len() {
            if due_order(&waiting[i], &fresh[j]).is_le() {
                merged.push(waiting[i]);
                i += 1;
            } else {
                merged.push(fresh[j]);
                j += 1;
            }
        }
        merged.extend_from_slice(&waiting[i..]);
        merged.extend_from_slice(&fresh[j..]);
        snapshot::fit_capacity(waiting, merged.len());
        waiting.clear();
        waiting.extend_from_slice(merged);
    }
}

/// Removes the entries at `slots` (increasing) from `list`, keeping the others' order.
fn remove_slots(list: &mut Vec<Waiting>, slots: impl Iterator<Item = usize>) {
    let mut w = None;
    let mut r = 0;
    for slot in slots {
        let Some(at) = w.as_mut() else {
            w = Some(slot);
            r = slot + 1;
            continue;
        };
        list.copy_within(r..slot, *at);
        *at += slot - r;
        r = slot + 1;
    }
    if let Some(at) = w {
        list.copy_within(r.., at);
        list.truncate(at + list.len() - r);
    }
}

/// `x.ceil() as usize` for the small, non-negative costs here, without `f32::ceil` (a libm
/// call on the baseline x86-64 target, once for every candidate of every client).
fn ceil(x: f32) -> usize {
    let t = x as usize;
    t + usize::from((t as f32) < x)
}

#[cfg(test)]
impl ClientReplicator {
    /// Panics unless the waiting list is what its invariant says: the interest set's waiting
    /// members (never the client's own), one entry each, with their dues, in due order.
    pub(crate) fn check_waiting(&self, own: u32) {
        let mut want: Vec<Waiting> = self
            .interest
            .iter()
            .filter(|k| k.due != NOT_WAITING)
            .map(|k| Waiting {
                due: k.due,
                id: k.id,
            })
            .collect();
        assert!(
            want.iter().all(|w| w.id != own),
            "the client's own entity waits"
        );
        want.sort_by(due_order);
        assert_eq!(
            self.waiting, want,
            "the waiting list and the interest set disagree"
        );
    }
}

#[cfg(test)]
mod waiting_tests {
    use super::*;
    use arena_shared::rng::SplitMix64;

    #[test]
    fn costs_round_up_as_f32_ceil_does() {
        let mut rng = SplitMix64::new(12);
        let scales = (0..2000).map(|_| rng.range_f32(0.25, 4.0));
        for scale in scales.chain([0.25, 0.5, 1.0, 1.5, 4.0]) {
            for cost in [0u16, 1, 2, 3, 4, 5, 8, 9, 12, 40, 1000] {
                let x = f32::from(cost) * scale;
                assert_eq!(ceil(x), x.ceil() as usize, "{cost} x {scale}");
            }
        }
    }

    /// Dues near the wrap of `u32` and ties, as a long-running server's are.
    fn random_due(rng: &mut SplitMix64, around: u32) -> u32 {
        around.wrapping_add(rng.below(64)).wrapping_sub(32).max(1)
    }

    #[test]
    fn the_waiting_list_stays_in_due_order_through_waits_that_start_end_and_are_sent() {
        let mut rng = SplitMix64::new(21);
        let (mut fresh, mut dropped, mut merged) = (Vec::new(), Vec::new(), Vec::new());
        for case in 0..2000 {
            let around = [0u32, 1 << 31, u32::MAX - 20, 12_345][rng.below(4) as usize];
            // A list in order, ids distinct.
            let mut ids: Vec<u32> = (0..rng.below(60)).map(|k| k * 3 + rng.below(3)).collect();
            ids.dedup();
            let mut list: Vec<Waiting> = ids
                .iter()
                .map(|&id| Waiting {
                    due: random_due(&mut rng, around),
                    id,
                })
                .collect();
            list.sort_by(due_order);
            // Some waits end, some start (ids not in the list), some entries are sent.
            dropped.clear();
            dropped.extend(ids.iter().copied().filter(|_| rng.below(5) == 0));
            fresh.clear();
            fresh.extend((0..rng.below(20)).map(|k| Waiting {
                due: random_due(&mut rng, around),
                id: 1000 + k,
            }));
            let mut want: Vec<Waiting> = list
                .iter()
                .copied()
                .filter(|w| !dropped.contains(&w.id))
                .chain(fresh.iter().copied())
                .collect();
            want.sort_by(due_order);
            let mut got = list.clone();
            ClientReplicator::update_waiting(&mut got, &mut fresh, &mut dropped, &mut merged);
            assert_eq!(got, want, "case {case}: merged");

            let slots: Vec<usize> = (0..got.len()).filter(|_| rng.below(3) == 0).collect();
            let want: Vec<Waiting> = got
                .iter()
                .enumerate()
                .filter(|(i, _)| !slots.contains(i))
                .map(|(_, w)| *w)
                .collect();
            remove_slots(&mut got, slots.iter().copied());
            assert_eq!(got, want, "case {case}: sent removed");
        }
    }

    #[test]
    fn due_order_is_earliest_first_across_the_wrap_then_by_id() {
        let w = |due, id| Waiting { due, id };
        use std::cmp::Ordering::*;
        assert_eq!(due_order(&w(u32::MAX - 1, 9), &w(3, 1)), Less);
        assert_eq!(due_order(&w(3, 1), &w(u32::MAX - 1, 9)), Greater);
        assert_eq!(due_order(&w(5, 1), &w(5, 2)), Less);
        assert_eq!(due_order(&w(100, 2), &w(7, 1)), Greater);
    }
}
