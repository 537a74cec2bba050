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
//! 4. raises the priority of every entity that needs sending (closer and faster gain more;
//!    the client's own entity always goes first), takes them in priority order until the byte
//!    budget (`min(--client-kbps per tick, max datagram size)`) is met, and resets the
//!    priority of those sent; the rest keep theirs, so nothing starves;
//! 5. encodes the delta, shrinking the selection until it fits, and keeps the resulting view.
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
//! Re-ranking. A client whose budget is full (entities left waiting after its snapshot) walks
//! its interest set and prices its candidates once in `rerank_ticks` ticks (`--rerank-ticks`,
//! 2 by default), on ticks staggered by its own id so that half the clients rank each tick.
//! On the ticks between, it sends the next of its last ranking: the candidates that snapshot
//! left waiting, with their priorities, plus its own entity when its record is not current;
//! the interest set is not walked, nothing enters or leaves it, and priorities grow by the
//! ticks since the ranking at the next one. Where the budget is full a newly changed entity
//! waits behind entities that waited longer anyway, so what is sent is much the same, for
//! about half the walks and pricings (BENCHMARKS.md, "Issue 21: re-ranking every other
//! tick"). A client whose budget is not full ranks every tick: nothing is delayed where
//! nothing waits. Entering and leaving the interest set may then take a tick longer.
//!
//! Invariant: the baseline and the deltas give exactly the views the client computes from
//! what it was sent, so a snapshot built against an acknowledged view always decodes on the
//! client.

use arena_shared::protocol::InputStatus;
use arena_shared::protocol::codec::DatagramEncoder;
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
    /// A client left with entities waiting re-ranks its interest set once in this many ticks
    /// (`--rerank-ticks`; 1: every tick). See the module's comment, "Re-ranking".
    pub rerank_ticks: u32,
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

/// A candidate left waiting by a client's last snapshot: its place in the client's interest set
/// and its estimated bytes.
#[derive(Debug, Clone, Copy)]
struct Waiting {
    kept: u16,
    cost: u8,
}

/// Estimated bytes of one entity in a snapshot; the encoder then checks the real size.
const ENTER_COST: usize = 9;
const CHANGE_COST: usize = 2;
const SMALL_FIELD_COST: usize = 1;
const LARGE_FIELD_COST: usize = 3;
const REMOVE_COST: usize = 2;
/// Tag, ticks, origin and column lengths.
const HEADER_COST: usize = 20;

/// Estimated bytes of a changed record whose client predicts `predicted` for `fields`.
fn change_cost(predicted: &[i32; snapshot::FIELDS], fields: &[i32; snapshot::FIELDS]) -> usize {
    CHANGE_COST
        + predicted
            .iter()
            .zip(fields)
            .filter(|(p, f)| p != f)
            .map(|(p, f)| {
                if (f - p).unsigned_abs() < 128 {
                    SMALL_FIELD_COST
                } else {
                    LARGE_FIELD_COST
                }
            })
            .sum::<usize>()
}

/// An entity of the client's interest set as this tick's build sees it (in [`Scratch`]).
#[derive(Debug, Clone, Copy)]
struct Member {
    id: u32,
    /// Index of the entity in this tick's frame.
    frame_index: u32,
    /// The entity's [`WorldFrame::current_from`] this tick.
    current_from: u32,
    priority: f32,
}

/// An entity of the client's interest set as kept from tick to tick: what [`Member`] has that
/// the next tick does not find again in the frame and the grid.
#[derive(Debug, Clone, Copy)]
struct Kept {
    id: u32,
    priority: f32,
}

/// An entity within the exit radius, as the grid gave it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Near {
    /// Index in the frame.
    index: u32,
    /// Squared distance to the client.
    d2: f32,
    id: u32,
    current_from: u32,
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    id: u32,
    frame_index: u32,
    /// Its place in the interest set kept for next tick.
    kept: u32,
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
    /// The interest set was walked and its candidates priced (not a tick between rankings).
    pub ranked: bool,
}

/// Working memory of [`ClientReplicator::build`], shared by every client of a server (they
/// are built one after another): per-client memory is only what must survive between ticks.
#[derive(Debug, Default)]
pub struct Scratch {
    /// One bit per frame entity: within the exit radius of the client being built.
    near_bits: Vec<u64>,
    /// By word of `near_bits`: the bits set in the words before it ([`order_by_index`]).
    rank_base: Vec<u32>,
    /// The entities within the exit radius as the grid's query found them, in cell order
    /// (sized to the frame: only the first few are written).
    found: Vec<Near>,
    /// The same, in frame order (so in id order): what the interest walk reads.
    near: Vec<Near>,
    /// The interest set of the client being built, gathered when more than `max_view` are
    /// near (otherwise it is classified as the near list is read).
    members: Vec<Member>,
    /// The interest set to keep, with this tick's priorities, copied into the client's own.
    kept: Vec<Kept>,
    /// The candidates' sort keys ([`order_key`]), put in priority order by the selection.
    order: Vec<u64>,
    candidates: Vec<Candidate>,
    removed: Vec<u32>,
    /// One bit a candidate: chosen for this snapshot.
    chosen_bits: Vec<u64>,
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
    /// The interest set, by id, with each member's priority: sized to fit, half a
    /// [`Member`]'s bytes.
    interest: Vec<Kept>,
    last_center: Vec2,
    /// The own entity's index in the last frame that had it.
    own_at: u32,
    /// Allocations of released views, reused for the next ones (at most [`SPARE_VIEWS`]).
    spare: Vec<ViewDelta>,
    /// Real bytes per estimated byte, learned from this client's recent snapshots.
    cost_scale: f32,
    /// The candidates the last snapshot left waiting, in id order: what a tick between
    /// rankings chooses from.
    waiting: Vec<Waiting>,
    /// The tick of the last ranking (the interest set walked and every candidate priced).
    ranked: u32,
    /// The own entity's place in `interest` when the last ranking kept it (else anything): a
    /// tick between rankings looks there first, not by a search of a set out of cache.
    own_kept: u32,
}

impl Default for ClientReplicator {
    fn default() -> Self {
        Self {
            base: View::default(),
            sent: Vec::new(),
            interest: Vec::new(),
            last_center: Vec2::ZERO,
            own_at: 0,
            spare: Vec::new(),
            cost_scale: 1.0,
            waiting: Vec::new(),
            ranked: 0,
            own_kept: 0,
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

    /// Bytes of the interest set kept between ticks, and of the candidates left waiting.
    pub fn interest_bytes(&self) -> usize {
        self.interest.capacity() * std::mem::size_of::<Kept>()
            + self.waiting.capacity() * std::mem::size_of::<Waiting>()
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
        #[cfg(target_arch = "x86_64")]
        if x86_v3() {
            // SAFETY: the processor has every feature `build_v3` is compiled for.
            return unsafe { self.build_v3(scratch, frame, grid, own, s, max_datagram, input) };
        }
        self.build_any(scratch, frame, grid, own, s, max_datagram, input)
    }

    /// [`Self::build_any`] compiled for x86-64-v3 (2013's Haswell and later, AMD's Zen): the
    /// near bitmap's bit counts (an entity's rank) are one instruction each, where the
    /// baseline x86-64 target computes them in a dozen. Only called where the processor has them.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,bmi1,bmi2,fma,lzcnt,popcnt")]
    #[expect(
        clippy::too_many_arguments,
        reason = "the tick's shared inputs and this client's own; a struct would only rename them"
    )]
    fn build_v3(
        &mut self,
        scratch: &mut Scratch,
        frame: &WorldFrame,
        grid: &Grid,
        own: u32,
        s: &RepSettings,
        max_datagram: usize,
        input: InputStatus,
    ) -> Built {
        self.build_any(scratch, frame, grid, own, s, max_datagram, input)
    }

    /// The build, inlined into each of its compilations (with its helpers: the query, the
    /// near entities' ordering, the walk and the classification). Called directly, it is the portable
    /// compilation: what the tests compare the dispatched build with.
    #[inline(always)]
    #[expect(
        clippy::too_many_arguments,
        reason = "the tick's shared inputs and this client's own; a struct would only rename them"
    )]
    pub(super) fn build_any(
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
        let own_index = frame.index_of_near(own, self.own_at as usize);
        if let Some(i) = own_index {
            self.own_at = i as u32;
        }
        let center = own_index.map_or(self.last_center, |i| frame.entities[i].pos);
        self.last_center = center;

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
        // Re-ranking: a client whose budget left entities waiting walks its interest set and
        // prices its candidates once in `rerank_ticks` (staggered by its own id); in between
        // it takes the next of its last ranking.
        // A client whose own entity has just died or come back (in the frame and not in the
        // interest set, or the reverse) ranks: its entity enters or leaves the tick it does.
        let between_tick = s.rerank_ticks > 1
            && base_tick.is_some()
            && !self.waiting.is_empty()
            && !t.wrapping_add(own).is_multiple_of(s.rerank_ticks);
        let own_kept = between_tick
            .then(|| {
                let hint = self.own_kept as usize;
                if self.interest.get(hint).is_some_and(|k| k.id == own) {
                    Some(hint)
                } else {
                    self.interest.binary_search_by_key(&own, |k| k.id).ok()
                }
            })
            .flatten();
        let between = between_tick && own_index.is_some() == own_kept.is_some();
        let near = if between {
            0
        } else {
            Self::mark_near(scratch, frame, grid, center, own_index, s)
        };
        let Scratch {
            near_bits: _,
            rank_base: _,
            found: _,
            near: near_entities,
            members,
            kept,
            order,
            candidates,
            removed,
            chosen_bits,
            updates,
            snap,
            encoder,
        } = scratch;
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

        // The interest set, in id order, classified as it comes: removed, up to date, or
        // candidate. Only when more than `max_view` are near are the members gathered first,
        // to keep the nearest.
        let empty: &[snapshot::EntityRecord] = &[];
        let base_entities = base.map_or(empty, |b| b.entities.as_slice());
        let walk = NearWalk::new(near_entities, &self.interest, s, own);
        let mut out = Classified {
            removed,
            candidates,
            order,
            kept,
        };
        let ctx = ClassifyCtx {
            base: base_entities,
            frame,
            settings: s,
            own,
            center,
            // Priorities grow by the ticks since the last ranking.
            ticks: t.saturating_sub(self.ranked).clamp(1, s.rerank_ticks) as f32,
        };
        let candidates_cost = if between {
            self.next_of_ranking(&ctx, own_index.zip(own_kept), &mut out)
        } else if near <= s.max_view {
            classify(walk, &ctx, &mut out)
        } else {
            members.clear();
            members.extend(walk);
            keep_nearest(members, frame, center, s.max_view, own);
            classify(members.iter().copied(), &ctx, &mut out)
        };
        if !between {
            self.ranked = t;
        }
        let Classified {
            removed,
            candidates,
            order,
            kept,
        } = out;

        // Select in priority order within the budget.
        let limit = s.budget_bytes.min(max_datagram);
        let mut spent = HEADER_COST;
        let keep_removed = removed.len().min(limit.saturating_sub(spent) / REMOVE_COST);
        removed.truncate(keep_removed);
        spent += keep_removed * REMOVE_COST;
        // Aim a little under the limit: estimates are averages, and an overshoot costs a
        // second encoding.
        let fill = limit * 15 / 16;
        let Selection {
            mut chosen,
            estimated,
            mut in_order,
            ..
        } = select(
            order,
            candidates,
            candidates_cost,
            spent,
            fill,
            self.cost_scale,
            own,
        );
        if between {
            chosen = locate_chosen(order, candidates, chosen, frame);
        }

        // Encode, shrinking the selection if the estimate was short. Those taken are then put
        // in priority order (if they are not), so truncating drops the least urgent.
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
            // The encoder takes the updates in id order, as the candidates are: those chosen
            // are marked by their place among the candidates and read in that order, not
            // sorted.
            chosen_bits.clear();
            chosen_bits.resize(candidates.len().div_ceil(64), 0);
            for &k in &order[..chosen] {
                let i = k as u32 as usize;
                chosen_bits[i / 64] |= 1 << (i % 64);
            }
            updates.clear();
            for (w, &word) in chosen_bits.iter().enumerate() {
                let mut bits = word;
                while bits != 0 {
                    let c = &candidates[w * 64 + bits.trailing_zeros() as usize];
                    bits &= bits - 1;
                    let e = &frame.entities[c.frame_index as usize];
                    updates.push(Update {
                        id: e.id,
                        kind: e.kind,
                        fields: e.fields,
                    });
                }
            }
            debug_assert!(updates.is_sorted_by_key(|u| u.id), "candidates in id order");
            let sink: &mut dyn ViewSink = if whole {
                &mut whole_view
            } else {
                &mut next.view
            };
            snapshot::encode_into(t, s.tick_rate, base, origin, removed, updates, sink, snap);
            let bytes = encoder.encode_delta(&input, snap);
            if bytes.len() <= limit || (chosen <= 1 && removed.is_empty()) {
                break bytes;
            }
            passes += 1;
            if chosen > 1 {
                if !in_order {
                    order[..chosen].sort_unstable();
                    in_order = true;
                }
                // Shrink in proportion to the excess, at least by one.
                let keep = chosen * limit / bytes.len();
                chosen = keep.clamp(1, chosen - 1);
            } else {
                removed.truncate(removed.len() / 2);
            }
        };

        // Learn how far the estimates are from bitcode's real sizes for this client's traffic,
        // so that next tick's selection fills the budget in one pass.
        if estimated > 0 {
            let overhead = HEADER_COST + removed.len() * REMOVE_COST;
            let actual = bytes.len().saturating_sub(overhead).max(1) as f32;
            let ratio = actual / estimated as f32;
            self.cost_scale = (0.7 * self.cost_scale + 0.3 * ratio).clamp(0.25, 4.0);
        }

        // Those sent start accumulating again from zero.
        for k in &order[..chosen] {
            kept[candidates[*k as u32 as usize].kept as usize].priority = 0.0;
        }
        // Those left waiting, for the ticks until the next ranking: the candidates whose
        // priority was not reset (a candidate's is at least 1). None when the interest set
        // is too large to index in 16 bits (`--max-view` above 65,535): then every tick ranks.
        self.waiting.clear();
        if s.rerank_ticks > 1
            && chosen < candidates.len()
            && kept.len() <= usize::from(u16::MAX) + 1
        {
            snapshot::fit_capacity(&mut self.waiting, candidates.len() - chosen);
            self.waiting.extend(
                candidates
                    .iter()
                    .filter(|c| kept[c.kept as usize].priority != 0.0)
                    .map(|c| Waiting {
                        kept: c.kept as u16,
                        cost: c.cost.min(u16::from(u8::MAX)) as u8,
                    }),
            );
        }
        // Kept for the next tick: ids and priorities, in a buffer of this client's own sized to
        // fit (the scratch's is shared by all clients).
        snapshot::fit_capacity(&mut self.interest, kept.len());
        self.interest.clear();
        self.interest.extend_from_slice(kept);
        if !between && !self.waiting.is_empty() {
            // Searched while the set is in cache, for the ticks until the next ranking (only a
            // client that left candidates waiting has such ticks).
            self.own_kept = kept
                .binary_search_by_key(&own, |k| k.id)
                .map_or(u32::MAX, |i| i as u32);
        }
        let built = Built {
            full: base_tick.is_none(),
            in_view: kept.len(),
            deferred: candidates.len() - chosen,
            encode_passes: passes,
            sent: chosen,
            ranked: !between,
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

    /// The candidates of a tick between rankings: those the last snapshot left waiting, with
    /// the priorities of that ranking, and the client's own entity (`own`: its place in the
    /// frame and in the interest set, when in both) when its record is not current, all in id
    /// order. The interest set is kept as it is and nothing is removed. Frame indices are
    /// found only for those chosen ([`locate_chosen`]). Returns the candidates' estimated
    /// bytes.
    fn next_of_ranking(
        &self,
        ctx: &ClassifyCtx,
        own: Option<(usize, usize)>,
        out: &mut Classified,
    ) -> usize {
        out.removed.clear();
        out.candidates.clear();
        out.order.clear();
        out.kept.clear();
        out.kept.extend_from_slice(&self.interest);
        // The own entity's candidate, when its record is not current: put among the waiting
        // at its id's place.
        let mut own_candidate = own.and_then(|(i, at)| {
            let e = &ctx.frame.entities[i];
            let cost = match ctx.base.binary_search_by_key(&ctx.own, |r| r.id) {
                Ok(b) => {
                    let p = ctx.base[b].predict(ctx.frame.tick, ctx.settings.tick_rate);
                    if p == e.fields {
                        return None;
                    }
                    change_cost(&p, &e.fields)
                }
                Err(_) => ENTER_COST,
            };
            Some(Candidate {
                id: ctx.own,
                frame_index: i as u32,
                kept: at as u32,
                cost: cost as u16,
            })
        });
        let mut total = 0;
        let mut push = |out: &mut Classified, c: Candidate, priority: f32| {
            out.order.push(order_key(priority, out.candidates.len()));
            out.candidates.push(c);
            total += usize::from(c.cost);
        };
        for w in &self.waiting {
            let k = &self.interest[usize::from(w.kept)];
            if let Some(c) = own_candidate.take_if(|c| c.id < k.id) {
                push(out, c, f32::INFINITY);
            }
            let c = Candidate {
                id: k.id,
                frame_index: u32::MAX,
                kept: u32::from(w.kept),
                cost: u16::from(w.cost),
            };
            push(out, c, k.priority);
        }
        if let Some(c) = own_candidate {
            push(out, c, f32::INFINITY);
        }
        total
    }

    /// Finds every entity within the exit radius of `center`, and the client's own entity,
    /// with what the grid said of each, and lists them in frame order (so in id order) in
    /// `scratch.near`; returns how many.
    ///
    /// The query writes what it finds one after another, in cell order, and marks each in a
    /// bitmap over frame indices; each then goes to its place in frame order, its rank among
    /// the bits set ([`order_by_index`]). So the walk reads the near entities in order from one
    /// short list, where a table by frame index (a cache line an entity, anywhere in a frame's
    /// worth of them) was read at random, and the bitmap is never listed.
    #[inline(always)]
    fn mark_near(
        scratch: &mut Scratch,
        frame: &WorldFrame,
        grid: &Grid,
        center: Vec2,
        own_index: Option<usize>,
        s: &RepSettings,
    ) -> usize {
        let exit = s.exit_radius();
        let exit2 = exit * exit;
        let Scratch {
            near_bits,
            rank_base,
            found,
            near,
            ..
        } = scratch;
        near_bits.clear();
        near_bits.resize(frame.entities.len().div_ceil(64), 0);
        // Room for every entity of the frame: each is in one cell, found at most once.
        if found.len() < frame.entities.len() {
            found.resize(frame.entities.len(), Near::default());
        }
        let mut count = 0;
        // Without a branch on the distance: about half the entities a query tests are
        // within it, a branch the processor cannot predict. Each is written at the end of the
        // list, which moves on only past those within (and their bits only are set).
        grid.query(center, exit, |item: &Item| {
            let d2 = item.pos.distance_squared(center);
            let within = d2 <= exit2;
            let i = item.index as usize;
            near_bits[i / 64] |= u64::from(within) << (i % 64);
            found[count] = Near {
                index: item.index,
                d2,
                id: item.id,
                current_from: item.current_from,
            };
            count += usize::from(within);
        });
        if let Some(i) = own_index
            && near_bits[i / 64] & (1 << (i % 64)) == 0
        {
            near_bits[i / 64] |= 1 << (i % 64);
            found[count] = Near {
                index: i as u32,
                d2: 0.0,
                id: frame.entities[i].id,
                current_from: frame.current_from[i],
            };
            count += 1;
        }
        order_by_index(near_bits, rank_base, &found[..count], near);
        count
    }
}

/// The interest set in id order, from the near entities (ascending frame indices, so ascending
/// ids) merged with last tick's set as it comes: members stay while within the exit radius,
/// newcomers enter within the enter radius (and the client's own entity always); each carries
/// its priority from last tick.
struct NearWalk<'a> {
    /// The near entities, in frame order.
    list: &'a [Near],
    at: usize,
    old: &'a [Kept],
    oi: usize,
    enter2: f32,
    own: u32,
}

impl<'a> NearWalk<'a> {
    fn new(list: &'a [Near], old: &'a [Kept], s: &RepSettings, own: u32) -> Self {
        Self {
            list,
            at: 0,
            old,
            oi: 0,
            enter2: s.aoi_radius * s.aoi_radius,
            own,
        }
    }
}

impl Iterator for NearWalk<'_> {
    type Item = Member;

    #[inline(always)]
    fn next(&mut self) -> Option<Member> {
        loop {
            let Near {
                index: frame_index,
                d2,
                id,
                current_from,
            } = *self.list.get(self.at)?;
            self.at += 1;
            let old = self.old;
            while self.oi < old.len() && old[self.oi].id < id {
                self.oi += 1;
            }
            let was = (self.oi < old.len() && old[self.oi].id == id).then(|| old[self.oi].priority);
            if d2 <= self.enter2 || was.is_some() || id == self.own {
                return Some(Member {
                    id,
                    frame_index,
                    current_from,
                    priority: was.unwrap_or(0.0),
                });
            }
        }
    }
}

/// Writes `found` into `out` in ascending frame index. Their indices are distinct and are the
/// bits set in `bits`, no other: each goes to its rank, the number of bits set below its own,
/// from the count of the words before its own (`rank_base`, refilled) and a count in its
/// word. A sort of what a client's query finds (a couple of hundred) without comparisons.
#[inline(always)]
fn order_by_index(bits: &[u64], rank_base: &mut Vec<u32>, found: &[Near], out: &mut Vec<Near>) {
    rank_base.clear();
    let mut below = 0;
    rank_base.extend(bits.iter().map(|word| {
        let base = below;
        below += word.count_ones();
        base
    }));
    debug_assert_eq!(below as usize, found.len());
    out.clear();
    out.resize(found.len(), Near::default());
    for n in found {
        let i = n.index as usize;
        let rank = rank_base[i / 64] + (bits[i / 64] & ((1 << (i % 64)) - 1)).count_ones();
        out[rank as usize] = *n;
    }
}

/// Finds the frame entries of the first `chosen` candidates of `order` (a tick between
/// rankings knows their ids only), dropping those no longer in the frame; returns how many are
/// left, in the same order.
fn locate_chosen(
    order: &mut [u64],
    candidates: &mut [Candidate],
    chosen: usize,
    frame: &WorldFrame,
) -> usize {
    let mut left = 0;
    for i in 0..chosen {
        let c = &mut candidates[order[i] as u32 as usize];
        if c.frame_index == u32::MAX {
            match frame.index_of(c.id) {
                Some(fi) => c.frame_index = fi as u32,
                None => continue,
            }
        }
        order[left] = order[i];
        left += 1;
    }
    left
}

/// Keeps the `max_view` nearest of `members` (and always the client's own entity), in order.
/// Their distances are the query's: the same arithmetic on the same positions.
fn keep_nearest(
    members: &mut Vec<Member>,
    frame: &WorldFrame,
    center: Vec2,
    max_view: usize,
    own: u32,
) {
    if members.len() <= max_view {
        return;
    }
    let mut by_distance: Vec<(f32, u32)> = members
        .iter()
        .map(|m| {
            let d2 = frame.entities[m.frame_index as usize]
                .pos
                .distance_squared(center);
            (if m.id == own { -1.0 } else { d2 }, m.id)
        })
        .collect();
    by_distance.select_nth_unstable_by(max_view - 1, |a, b| a.0.total_cmp(&b.0));
    let mut keep: Vec<u32> = by_distance[..max_view].iter().map(|x| x.1).collect();
    keep.sort_unstable();
    members.retain(|m| keep.binary_search(&m.id).is_ok());
}

/// The processor has the x86-64-v3 features (AVX2, BMI, FMA, LZCNT, POPCNT) `build_v3` is
/// compiled for.
#[cfg(target_arch = "x86_64")]
fn x86_v3() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("bmi1")
        && std::arch::is_x86_feature_detected!("bmi2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("lzcnt")
        && std::arch::is_x86_feature_detected!("popcnt")
}

/// What [`classify`] reads: the client's baseline records and this tick's world.
struct ClassifyCtx<'a> {
    base: &'a [snapshot::EntityRecord],
    frame: &'a WorldFrame,
    settings: &'a RepSettings,
    own: u32,
    center: Vec2,
    /// Ticks of priority gained since the last ranking.
    ticks: f32,
}

/// What [`classify`] writes, each refilled.
struct Classified<'a> {
    /// Baseline records whose entity is no longer a member.
    removed: &'a mut Vec<u32>,
    candidates: &'a mut Vec<Candidate>,
    /// The candidates' sort keys, by candidate ([`order_key`]).
    order: &'a mut Vec<u64>,
    /// The interest set to keep, with this tick's priorities.
    kept: &'a mut Vec<Kept>,
}

/// Classifies `members` (in id order) against the baseline: up to date (priority reset), or a
/// candidate (priority raised), and baseline records out of interest removed. Returns the
/// candidates' estimated bytes.
#[inline(always)]
fn classify(
    members: impl Iterator<Item = Member>,
    ctx: &ClassifyCtx,
    out: &mut Classified,
) -> usize {
    let ClassifyCtx {
        base,
        frame,
        settings: s,
        own,
        center,
        ticks,
    } = *ctx;
    let t = frame.tick;
    let exit = s.exit_radius();
    out.removed.clear();
    out.candidates.clear();
    out.order.clear();
    out.kept.clear();
    let mut bi = 0;
    // Estimated bytes of all candidates, for the size of the chunks selected later.
    let mut candidates_cost = 0usize;
    for mut m in members {
        while bi < base.len() && base[bi].id < m.id {
            out.removed.push(base[bi].id);
            bi += 1;
        }
        let fi = m.frame_index as usize;
        let cost = if bi < base.len() && base[bi].id == m.id {
            let rec = &base[bi];
            bi += 1;
            // The frame knows since when a record of this entity stays exact: most members
            // are settled by this one compare, without reading their entry.
            let predicted = (rec.tick < m.current_from).then(|| rec.predict(t, s.tick_rate));
            match predicted {
                Some(p) if p != frame.entities[fi].fields => {
                    change_cost(&p, &frame.entities[fi].fields)
                }
                _ => {
                    out.kept.push(Kept {
                        id: m.id,
                        priority: 0.0,
                    });
                    continue;
                }
            }
        } else {
            ENTER_COST
        };
        let e = &frame.entities[fi];
        if m.id == own {
            m.priority = f32::INFINITY;
        } else {
            let closeness = 1.0 - (e.pos.distance(center) / exit).min(1.0);
            let speed = (e.speed / s.max_speed).min(1.0);
            // Gain in [1, 2.5]: nearer and faster entities are refreshed up to 2.5 times as
            // often as far, still ones, and nobody's wait grows without bound.
            m.priority += ticks * (1.0 + closeness + 0.5 * speed);
        }
        candidates_cost += cost;
        out.order.push(order_key(m.priority, out.candidates.len()));
        out.candidates.push(Candidate {
            id: m.id,
            frame_index: fi as u32,
            kept: out.kept.len() as u32,
            cost: cost as u16,
        });
        out.kept.push(Kept {
            id: m.id,
            priority: m.priority,
        });
    }
    out.removed.extend(base[bi..].iter().map(|r| r.id));
    candidates_cost
}

/// What [`select`] took, and the rule by which it takes a candidate offered in priority order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Selection {
    /// The first `chosen` keys of the order are those taken: in priority order when
    /// `in_order`, else every candidate, in no particular order.
    chosen: usize,
    /// Bytes spent (estimated, scaled), `spent` given included.
    spent: usize,
    /// The chosen candidates' estimates, unscaled.
    estimated: usize,
    /// Those taken are in priority order. When every candidate fits, none is put in order:
    /// what is taken does not depend on it, and only an encoding over the limit, which
    /// drops the least urgent, needs it.
    in_order: bool,
}

impl Selection {
    /// Takes the candidate of `order[i]` (the next in priority order) if its scaled cost fits
    /// in `fill`, or if it is the client's own entity, moving its key to the end of those
    /// taken.
    fn offer(
        &mut self,
        order: &mut [u64],
        candidates: &[Candidate],
        i: usize,
        fill: usize,
        scale: f32,
        own: u32,
    ) {
        let c = &candidates[order[i] as u32 as usize];
        let cost = ceil(f32::from(c.cost) * scale);
        if self.spent + cost <= fill || c.id == own {
            self.spent += cost;
            self.estimated += usize::from(c.cost);
            order.swap(self.chosen, i);
            self.chosen += 1;
        }
    }
}

/// The sort key of a candidate of priority `priority` at `index` (candidates are in id order):
/// ascending keys are highest priority first (`f32::total_cmp`'s order, reversed), then lowest
/// id. A selection compares these as integers, not a float and then an id.
fn order_key(priority: f32, index: usize) -> u64 {
    // `total_cmp`'s transform: the bits as a signed integer in the floats' total order.
    let bits = priority.to_bits() as i32;
    let total = bits ^ ((((bits >> 31) as u32) >> 1) as i32);
    let ascending = (total as u32) ^ 0x8000_0000;
    (u64::from(!ascending) << 32) | index as u64
}

/// Puts `order` (the keys of `candidates`, [`order_key`]) in priority order as far as needed
/// and takes candidates in that order while their estimated cost, scaled by `cost_scale`,
/// fits in `fill` bytes with `spent` already spent; the client's own entity always (its
/// priority is infinite, the others' finite: it comes first). Moves the keys of those taken
/// to the front, in that order. `total_cost` is the sum of the candidates' estimates.
///
/// When every candidate fits (a budget not full, as most clients' are in a quiet area; known
/// from `total_cost` alone, [`all_fit_bound`]), all are taken and none is put in order
/// (`in_order` false): what a pass in priority order would take does not depend on the order.
///
/// Otherwise only the first few can fit: about the budget over their average cost. So the
/// order is found in two steps. First a chunk of about that many: a selection (linear) puts
/// its keys ahead of the rest, only the chunk is sorted, and its candidates are offered in
/// order. Then, while the budget still has room for the cheapest record, the rest are
/// filtered to those whose cost fits in the room left (the room only shrinks, so no other
/// can ever be taken: typically the few small changes a nearly full budget still takes), and
/// only those are sorted and offered. The filter compares each candidate's estimate with the
/// largest that fits ([`largest_fitting`]), where ordering the whole rest, chunk after chunk,
/// each twice the last (a selection and a longer sort each time, as this did before), cost
/// more than the first chunk (BENCHMARKS.md, "Issue 21: the hunt for the last bytes filtered
/// by cost").
/// The result is that of sorting every candidate (`select_by_sorting_all` in the tests): the
/// order is total, and the client's own entity (infinite priority, so in the first chunk) is
/// the only one taken over the budget.
fn select(
    order: &mut [u64],
    candidates: &[Candidate],
    total_cost: usize,
    spent: usize,
    fill: usize,
    cost_scale: f32,
    own: u32,
) -> Selection {
    if spent + all_fit_bound(total_cost, candidates.len(), cost_scale) <= fill {
        // The pass below would take every one, in whatever order they came.
        let scaled: usize = candidates
            .iter()
            .map(|c| ceil(f32::from(c.cost) * cost_scale))
            .sum();
        return Selection {
            chosen: candidates.len(),
            spent: spent + scaled,
            estimated: total_cost,
            in_order: false,
        };
    }
    let cheapest = ceil((CHANGE_COST + SMALL_FIELD_COST) as f32 * cost_scale).max(1);
    let average =
        (total_cost as f32 / candidates.len().max(1) as f32 * cost_scale).max(cheapest as f32);
    let mut taken = Selection {
        chosen: 0,
        spent,
        estimated: 0,
        in_order: true,
    };
    let len = order.len();
    // A quarter more than the average says will fit, and a few more.
    let room = fill.saturating_sub(spent) as f32;
    let first = len.min((room / average * 1.25) as usize + 4);
    if first < len {
        order.select_nth_unstable(first);
    }
    order[..first].sort_unstable();
    for i in 0..first {
        taken.offer(order, candidates, i, fill, cost_scale, own);
    }
    if first == len || taken.spent + cheapest > fill {
        return taken;
    }
    // The hunt for the last bytes: only a candidate whose cost fits in the room left now can
    // be taken later. (The own entity, the one taken over the budget, came first, in the
    // chunk.)
    let room = fill - taken.spent;
    let most = largest_fitting(room, cost_scale);
    let rest = &mut order[first..];
    let mut fits = 0;
    for j in 0..rest.len() {
        let c = &candidates[rest[j] as u32 as usize];
        if c.cost <= most {
            rest.swap(fits, j);
            fits += 1;
        }
    }
    rest[..fits].sort_unstable();
    for i in first..first + fits {
        if taken.spent + cheapest > fill {
            break;
        }
        taken.offer(order, candidates, i, fill, cost_scale, own);
    }
    taken
}

/// The largest estimate whose scaled cost (`ceil(cost * scale)`, as [`Selection::offer`]
/// takes it) fits in `room`: an estimate fits exactly when it is at most this, since the
/// scaled cost never falls as the estimate grows (a positive scale; the product and the
/// rounding up are both monotonic). So a filter compares integers, without the product.
fn largest_fitting(room: usize, scale: f32) -> u16 {
    let fits = |cost: u16| ceil(f32::from(cost) * scale) <= room;
    let mut most = (room as f32 / scale).min(f32::from(u16::MAX)) as u16;
    while most > 0 && !fits(most) {
        most -= 1;
    }
    while most < u16::MAX && fits(most + 1) {
        most += 1;
    }
    most
}

/// A bound on the sum of `n` candidates' scaled costs (each `ceil(cost * scale)`, as
/// [`Selection::offer`] takes them) whose estimates sum to `total`, found without reading them:
/// each rounds up by less than one, and the product's rounding is far inside the 1/1000 added.
fn all_fit_bound(total: usize, n: usize, scale: f32) -> usize {
    ceil(total as f32 * scale * 1.001) + n
}

/// `x.ceil() as usize` for the small, non-negative costs here, without `f32::ceil` (a libm
/// call on the baseline x86-64 target, once for every candidate of every client).
fn ceil(x: f32) -> usize {
    let t = x as usize;
    t + usize::from((t as f32) < x)
}

#[cfg(test)]
mod selection_tests {
    use super::*;
    use arena_shared::rng::SplitMix64;

    /// The selection as first written: sort every candidate by its priority (highest first)
    /// and id, not by sort keys, then offer each in turn. Returns the ids taken, in order.
    fn select_by_sorting_all(
        candidates: &[(Candidate, f32)],
        spent: usize,
        fill: usize,
        cost_scale: f32,
        own: u32,
    ) -> (Selection, Vec<u32>) {
        let mut sorted = candidates.to_vec();
        sorted.sort_unstable_by(|(a, pa), (b, pb)| pb.total_cmp(pa).then(a.id.cmp(&b.id)));
        let mut taken = Selection {
            chosen: 0,
            spent,
            estimated: 0,
            in_order: true,
        };
        let mut ids = Vec::new();
        for (c, _) in &sorted {
            let cost = ceil(f32::from(c.cost) * cost_scale);
            if taken.spent + cost <= fill || c.id == own {
                taken.spent += cost;
                taken.estimated += usize::from(c.cost);
                taken.chosen += 1;
                ids.push(c.id);
            }
        }
        (taken, ids)
    }

    #[test]
    fn sort_keys_order_as_total_cmp_then_index() {
        let mut rng = SplitMix64::new(13);
        let specials = [
            0.0f32,
            -0.0,
            1.0,
            2.5,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE,
            f32::MAX,
            -1.0,
        ];
        let mut values = specials.to_vec();
        for _ in 0..3000 {
            values.push(f32::from_bits(rng.below(u32::MAX)));
            values.push(rng.range_f32(0.0, 60.0));
        }
        for _ in 0..20_000 {
            let (i, j) = (
                rng.below(values.len() as u32) as usize,
                rng.below(values.len() as u32) as usize,
            );
            let (a, b) = (values[i], values[j]);
            let want = b.total_cmp(&a).then(i.cmp(&j));
            assert_eq!(
                order_key(a, i).cmp(&order_key(b, j)),
                want,
                "{a} at {i}, {b} at {j}"
            );
        }
    }

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

    #[test]
    fn the_largest_fitting_estimate_is_where_the_scaled_cost_passes_the_room() {
        for scale in [0.25, 0.3, 0.8, 1.0, 1.0001, 1.7, 3.3, 4.0] {
            for room in 0..600 {
                let most = largest_fitting(room, scale);
                for cost in 0..=700u16 {
                    assert_eq!(
                        cost <= most,
                        ceil(f32::from(cost) * scale) <= room,
                        "cost {cost}, scale {scale}, room {room}"
                    );
                }
            }
        }
    }

    #[test]
    fn choosing_a_chunk_at_a_time_takes_what_sorting_every_candidate_takes() {
        let mut rng = SplitMix64::new(11);
        // Cases where every candidate was taken without being put in order, and where some
        // were left: both kinds must be common.
        let (mut all_unordered, mut some_left) = (0, 0);
        for case in 0..3000 {
            let n = rng.below(400) as usize;
            let own = rng.below(1000);
            let candidates: Vec<(Candidate, f32)> = (0..n)
                .map(|k| {
                    // Ids distinct; priorities often tied (whole numbers); the client's own
                    // entity, when it is among them, infinite.
                    let id = k as u32 * 2 + rng.below(2);
                    let priority = match rng.below(10) {
                        _ if id == own => f32::INFINITY,
                        0..=3 => rng.below(6) as f32,
                        _ => rng.range_f32(0.0, 50.0),
                    };
                    let cost = [3, 4, 5, 8, 9, 12, 40][rng.below(7) as usize];
                    let candidate = Candidate {
                        id,
                        frame_index: 0,
                        kept: 0,
                        cost,
                    };
                    (candidate, priority)
                })
                .collect();
            let total = candidates.iter().map(|(c, _)| usize::from(c.cost)).sum();
            let spent = 20 + rng.below(30) as usize;
            let fill = [0, 60, 250, 1265, 5000][rng.below(5) as usize];
            let scale = [0.25, 0.8, 1.0, 1.7, 4.0][rng.below(5) as usize];
            let mut order: Vec<u64> = candidates
                .iter()
                .enumerate()
                .map(|(i, (_, priority))| order_key(*priority, i))
                .collect();
            let only: Vec<Candidate> = candidates.iter().map(|(c, _)| *c).collect();
            let got = select(&mut order, &only, total, spent, fill, scale, own);
            let (want, want_ids) = select_by_sorting_all(&candidates, spent, fill, scale, own);
            assert_eq!(
                (got.chosen, got.spent, got.estimated),
                (want.chosen, want.spent, want.estimated),
                "case {case}"
            );
            if !got.in_order {
                // Taken without an order only when all are taken; in order, they are the
                // same as sorting takes.
                assert_eq!(got.chosen, n, "case {case}");
                order[..got.chosen].sort_unstable();
                all_unordered += 1;
            }
            some_left += usize::from(got.chosen < n);
            let got_ids: Vec<u32> = order[..got.chosen]
                .iter()
                .map(|&k| only[k as u32 as usize].id)
                .collect();
            assert_eq!(got_ids, want_ids, "case {case}");
        }
        assert!(
            all_unordered > 300 && some_left > 300,
            "{all_unordered} cases took all unordered, {some_left} left some"
        );
    }
}

#[cfg(test)]
mod order_tests {
    use super::*;
    use arena_shared::rng::SplitMix64;

    #[test]
    fn entities_found_in_any_order_come_out_in_frame_order_whatever_the_density() {
        let mut rng = SplitMix64::new(21);
        let (mut rank_base, mut out) = (Vec::new(), Vec::new());
        let mut dense_words = 0;
        for case in 0..3000 {
            let words = rng.below(40) as usize;
            // From none to every index, through a client's ~2 a word of its bitmap, with
            // every index of a word (its first and its last) found now and then.
            let density = [0.0, 0.01, 0.03, 0.1, 0.3, 0.5, 0.9, 1.0][case % 8];
            let mut found = Vec::new();
            for i in 0..words * 64 {
                if rng.next_f32() < density {
                    found.push(Near {
                        index: i as u32,
                        d2: rng.next_f32(),
                        id: rng.below(u32::MAX),
                        current_from: rng.below(100),
                    });
                }
            }
            let expected = found.clone();
            let mut bits = vec![0u64; words];
            for n in &found {
                bits[n.index as usize / 64] |= 1 << (n.index % 64);
            }
            dense_words += bits.iter().filter(|w| w.count_ones() > 32).count();
            // In the order a query finds them: any.
            for i in (1..found.len()).rev() {
                found.swap(i, rng.below(i as u32 + 1) as usize);
            }
            order_by_index(&bits, &mut rank_base, &found, &mut out);
            assert_eq!(out, expected, "case {case}");
        }
        assert!(dense_words > 1000, "{dense_words} words more than half set");
    }
}
