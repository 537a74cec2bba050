//! A view kept as what it changes in another: the form in which a server holds the views it
//! sent and the client has not acknowledged yet.
//!
//! A snapshot is built against the acknowledged view and changes a few of its records (those
//! sent this tick, ~20 of ~300 in view). The server must keep each view it sent until the
//! client acknowledges a newer one, since any of them may become the next baseline. Kept
//! whole, that is a round trip of full views a client; kept as [`ViewDelta`]s against the
//! acknowledged view, it is that view once and the few records each snapshot set.
//!
//! All ids are sorted, and a delta's `removed` and `set` ids are disjoint: `removed` are
//! records of the baseline the view lacks, `set` the view's records that are not the
//! baseline's (changed or entered).
//!
//! A delta is small against the view it was built on, and against that view's other
//! children (both name only what was sent since). Two views built on different baselines
//! carry records sent at different ticks for almost every entity (equal in what they predict,
//! not in their bits), so one expressed against the other is about as large as a whole view:
//! the server then keeps the view whole (`server/src/replication/replicator.rs`).

use super::{EntityRecord, View, ViewSink, fit_capacity, fit_capacity_keeping};

/// The view at `tick` as the changes it makes to a baseline view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ViewDelta {
    pub tick: u32,
    /// Ids of baseline records the view lacks.
    pub removed: Vec<u32>,
    /// The view's records that differ from the baseline's or that it lacks.
    pub set: Vec<EntityRecord>,
}

impl ViewSink for ViewDelta {
    fn begin(&mut self, tick: u32, _base: usize, removed: usize, updates: usize) {
        self.tick = tick;
        fit_capacity(&mut self.removed, removed);
        fit_capacity(&mut self.set, updates);
        self.removed.clear();
        self.set.clear();
    }

    fn keep(&mut self, _run: &[EntityRecord]) {}

    fn remove(&mut self, id: u32) {
        self.removed.push(id);
    }

    fn set(&mut self, record: EntityRecord) {
        self.set.push(record);
    }
}

/// One change of a delta, in id order.
#[derive(Debug, Clone, Copy)]
enum Change {
    Removed(u32),
    Set(EntityRecord),
}

impl Change {
    fn id(&self) -> u32 {
        match self {
            Change::Removed(id) => *id,
            Change::Set(r) => r.id,
        }
    }
}

impl ViewDelta {
    /// Bytes this delta holds room for.
    pub fn bytes(&self) -> usize {
        self.removed.capacity() * size_of::<u32>() + self.set.capacity() * size_of::<EntityRecord>()
    }

    /// The changes in id order.
    fn changes(&self) -> impl Iterator<Item = Change> + '_ {
        let (mut r, mut s) = (self.removed.iter().peekable(), self.set.iter().peekable());
        std::iter::from_fn(move || match (r.peek(), s.peek()) {
            (Some(&&id), Some(rec)) if id < rec.id => r.next().map(|&id| Change::Removed(id)),
            (_, Some(_)) => s.next().map(|&rec| Change::Set(rec)),
            (Some(_), None) => r.next().map(|&id| Change::Removed(id)),
            (None, None) => None,
        })
    }

    /// Turns `view`, the baseline, into the view this delta describes, in place: only the
    /// records it names are written, and the records between them move only where it removes
    /// or adds some. `view`'s allocation grows to fit with an eighth to spare, and is
    /// shrunk when it holds more than twice that.
    ///
    /// The view is scanned, not binary-searched: a server holds a thousand clients' baselines
    /// (megabytes, out of cache), and a search's probes are a cache miss each where a scan is
    /// a stream the prefetcher runs ahead of (in `benches/combat.rs`, searching made
    /// replication 1.2x slower than writing whole views). The scan also brings the baseline
    /// into cache for the snapshot built from it next.
    pub fn apply_to(&self, view: &mut View) {
        let v = &mut view.entities;
        let len = v.len();
        // Forward: drop removed records and overwrite set ones in place, closing up the
        // gaps as the runs between them move down; count the records it adds.
        let (mut w, mut r, mut added) = (0, 0, 0);
        for change in self.changes() {
            let id = change.id();
            let run = v[r..].iter().take_while(|e| e.id < id).count();
            if w != r {
                v.copy_within(r..r + run, w);
            }
            w += run;
            r += run;
            let present = r < len && v[r].id == id;
            match change {
                Change::Removed(_) => r += usize::from(present),
                Change::Set(rec) if present => {
                    v[w] = rec;
                    w += 1;
                    r += 1;
                }
                Change::Set(_) => added += 1,
            }
        }
        if w != r {
            v.copy_within(r..len, w);
        }
        w += len - r;
        v.truncate(w);
        view.tick = self.tick;
        let needed = w + added;
        fit_capacity_keeping(v, needed);
        if added == 0 {
            return;
        }
        // Backward: make room at the end and merge the added records in from the back, each
        // run of kept records moving up once.
        let filler = self.set[0];
        v.resize(needed, filler);
        let (mut src_end, mut dst_end) = (w, needed);
        for rec in self.set.iter().rev() {
            if dst_end == src_end {
                // Every added record placed: the rest is where it was.
                break;
            }
            // The kept records after this one's place move up behind those placed already.
            let mut p = src_end
                - v[..src_end]
                    .iter()
                    .rev()
                    .take_while(|e| e.id > rec.id)
                    .count();
            // Set over a record the baseline had: written by the forward pass, it moves
            // with the run.
            let present = p > 0 && v[p - 1].id == rec.id;
            if present {
                p -= 1;
            }
            let run = src_end - p;
            if dst_end - run != p {
                v.copy_within(p..src_end, dst_end - run);
            }
            dst_end -= run;
            src_end = p;
            if !present {
                dst_end -= 1;
                v[dst_end] = *rec;
            }
        }
        debug_assert_eq!(src_end, dst_end, "every added record placed");
    }

    /// Records this delta names (removed or set).
    pub fn len(&self) -> usize {
        self.removed.len() + self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Re-expresses this delta, made against `base`, against the view `onto` makes of the
    /// same `base`: `onto` then `self` applied in turn give what `self` applied to `base`
    /// gave. `out` receives the result (its allocations reused) and is swapped in. At most
    /// `self.len() + onto.len()` records.
    pub fn rebase(&mut self, base: &View, onto: &ViewDelta, out: &mut ViewDelta) {
        out.tick = self.tick;
        // At most what each names: room for that, not what the buffers held before.
        fit_capacity(&mut out.removed, self.removed.len() + onto.len());
        fit_capacity(&mut out.set, self.set.len() + onto.len());
        out.removed.clear();
        out.set.clear();
        let (mut mine, mut theirs) = (self.changes().peekable(), onto.changes().peekable());
        // The baseline's record of an id, if any: ids come in order, so a cursor scans the
        // baseline once (see `apply_to` on searching it).
        let mut cursor = 0;
        let mut in_base = |id: u32| {
            cursor += base.entities[cursor..]
                .iter()
                .take_while(|e| e.id < id)
                .count();
            base.entities.get(cursor).filter(|e| e.id == id).copied()
        };
        loop {
            let (m, t) = match (mine.peek(), theirs.peek()) {
                (None, None) => break,
                (Some(m), Some(t)) if m.id() == t.id() => (mine.next(), theirs.next()),
                (Some(m), Some(t)) if m.id() < t.id() => (mine.next(), None),
                (Some(_), None) => (mine.next(), None),
                _ => (None, theirs.next()),
            };
            match (m, t) {
                // This view says what it has: a record, or nothing where `onto` has one.
                (Some(Change::Set(rec)), _) => out.set.push(rec),
                (Some(Change::Removed(id)), t) => {
                    let onto_has = match t {
                        Some(Change::Set(_)) => true,
                        Some(Change::Removed(_)) => false,
                        None => in_base(id).is_some(),
                    };
                    if onto_has {
                        out.removed.push(id);
                    }
                }
                // Only `onto` changed it: this view still has the baseline's record, or none.
                (None, Some(t)) => match in_base(t.id()) {
                    Some(rec) => out.set.push(rec),
                    None => out.removed.push(t.id()),
                },
                (None, None) => unreachable!("one side always moves"),
            }
        }
        drop(mine);
        // The bound may be far above what was named (two views' worth when both name most
        // records): give back what more than doubles it.
        let (set, removed) = (out.set.len(), out.removed.len());
        fit_capacity_keeping(&mut out.set, set);
        fit_capacity_keeping(&mut out.removed, removed);
        std::mem::swap(self, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::EntityKind;
    use crate::rng::SplitMix64;

    fn record(id: u32, tick: u32, x: i32) -> EntityRecord {
        EntityRecord {
            id,
            kind: EntityKind::Npc,
            fields: [x, -x, 1, 2],
            tick,
        }
    }

    /// A random view of ids below 200.
    fn random_view(rng: &mut SplitMix64, tick: u32) -> View {
        let mut entities = Vec::new();
        for id in 0..200u32 {
            if rng.below(3) == 0 {
                entities.push(record(id, tick, rng.below(1000) as i32));
            }
        }
        View { tick, entities }
    }

    /// The delta that turns `base` into `to`, by comparing every record.
    fn diff(base: &View, to: &View) -> ViewDelta {
        ViewDelta {
            tick: to.tick,
            removed: base
                .entities
                .iter()
                .filter(|e| to.get(e.id).is_none())
                .map(|e| e.id)
                .collect(),
            set: to
                .entities
                .iter()
                .filter(|e| base.get(e.id) != Some(*e))
                .copied()
                .collect(),
        }
    }

    /// A view that keeps most of `base`, drops some, changes some and adds some.
    fn next_view(rng: &mut SplitMix64, base: &View, tick: u32) -> View {
        let mut entities: Vec<EntityRecord> = (0..200u32)
            .filter_map(|id| match (base.get(id), rng.below(10)) {
                (Some(_), 0) => None,
                (Some(e), 1..=2) => Some(record(id, tick, e.fields[0] + 1)),
                (Some(e), _) => Some(*e),
                (None, 0) => Some(record(id, tick, rng.below(1000) as i32)),
                (None, _) => None,
            })
            .collect();
        entities.sort_unstable_by_key(|e| e.id);
        View { tick, entities }
    }

    #[test]
    fn a_delta_applied_in_place_gives_the_view_it_was_taken_from() {
        let mut rng = SplitMix64::new(3);
        for case in 0..2000 {
            let base = random_view(&mut rng, 1);
            let to = if case % 2 == 0 {
                next_view(&mut rng, &base, 2)
            } else {
                random_view(&mut rng, 2)
            };
            let delta = diff(&base, &to);
            let mut got = base.clone();
            delta.apply_to(&mut got);
            assert_eq!(got, to, "case {case}");
            let needed = to.entities.len();
            assert!(
                got.entities.capacity() <= 2 * (needed + needed / 8 + 8),
                "case {case}: {} records of room for {needed}",
                got.entities.capacity()
            );
        }
    }

    #[test]
    fn a_delta_rebased_onto_a_newer_baseline_gives_the_same_view() {
        let mut rng = SplitMix64::new(4);
        let mut out = ViewDelta::default();
        for case in 0..2000 {
            let base = random_view(&mut rng, 1);
            let onto_view = next_view(&mut rng, &base, 2);
            let mine_view = if case % 3 == 0 {
                random_view(&mut rng, 3)
            } else {
                next_view(&mut rng, &base, 3)
            };
            let onto = diff(&base, &onto_view);
            let mut mine = diff(&base, &mine_view);
            let bound = mine.len() + onto.len();
            mine.rebase(&base, &onto, &mut out);
            let mut got = onto_view.clone();
            mine.apply_to(&mut got);
            assert_eq!(got, mine_view, "case {case}");
            assert!(mine.len() <= bound, "case {case}");
        }
    }

    #[test]
    fn encoding_into_a_delta_names_exactly_what_differs_from_the_baseline() {
        use crate::snapshot::{DeltaSnapshot, Update, encode_into};
        let mut rng = SplitMix64::new(5);
        let mut snap = DeltaSnapshot::default();
        for case in 0..500 {
            let base = random_view(&mut rng, 10);
            let to = next_view(&mut rng, &base, 11);
            let removed: Vec<u32> = base
                .entities
                .iter()
                .filter(|e| to.get(e.id).is_none())
                .map(|e| e.id)
                .collect();
            // Updates for every record of the next view, some exactly as predicted.
            let updates: Vec<Update> = to
                .entities
                .iter()
                .map(|e| Update {
                    id: e.id,
                    kind: e.kind,
                    fields: match base.get(e.id) {
                        Some(b) if rng.below(2) == 0 => b.predict(11, 30),
                        _ => e.fields,
                    },
                })
                .collect();
            let mut whole = View::default();
            encode_into(
                11,
                30,
                Some(&base),
                [0, 0],
                &removed,
                &updates,
                &mut whole,
                &mut snap,
            );
            let mut delta = ViewDelta::default();
            encode_into(
                11,
                30,
                Some(&base),
                [0, 0],
                &removed,
                &updates,
                &mut delta,
                &mut snap,
            );
            assert_eq!(delta, diff(&base, &whole), "case {case}");
            let mut got = base.clone();
            delta.apply_to(&mut got);
            assert_eq!(got, whole, "case {case}");
        }
    }
}
