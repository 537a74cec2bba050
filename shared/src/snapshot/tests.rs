//! Round trips of delta snapshots on random worlds and random edits, totality on hostile
//! input, and the receiver's ring and acknowledgements.

use proptest::prelude::*;

use super::*;

const RATE: u16 = 30;

fn arb_fields() -> impl Strategy<Value = [i32; FIELDS]> {
    (
        0..65_536i32,
        0..65_536i32,
        -5_120..5_120i32,
        -5_120..5_120i32,
    )
        .prop_map(|(a, b, c, d)| [a, b, c, d])
}

fn arb_kind() -> impl Strategy<Value = EntityKind> {
    prop_oneof![Just(EntityKind::Player), Just(EntityKind::Npc)]
}

/// A baseline view at tick 100 whose records were last sent at ticks 70..=100.
fn arb_view() -> impl Strategy<Value = View> {
    proptest::collection::btree_map(1u32..400, (arb_kind(), arb_fields(), 70u32..=100), 0..60)
        .prop_map(|m| View {
            tick: 100,
            entities: m
                .into_iter()
                .map(|(id, (kind, fields, tick))| EntityRecord {
                    id,
                    kind,
                    fields,
                    tick,
                })
                .collect(),
        })
}

/// What happens to one baseline entity by the next snapshot.
#[derive(Debug, Clone)]
enum Edit {
    Keep,
    Remove,
    /// Moved as predicted, plus this many steps of error per field.
    Nudge([i32; FIELDS]),
    Teleport([i32; FIELDS]),
}

fn arb_edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        Just(Edit::Keep),
        Just(Edit::Remove),
        proptest::array::uniform4(-3..=3i32).prop_map(Edit::Nudge),
        proptest::array::uniform4(-300..=300i32).prop_map(Edit::Nudge),
        arb_fields().prop_map(Edit::Teleport),
    ]
}

/// A baseline view, edits to its entities, new entities, and the tick of the new view.
type Scenario = (View, Vec<Edit>, Vec<(u32, EntityKind, [i32; FIELDS])>, u32);

fn scenario() -> impl Strategy<Value = Scenario> {
    arb_view().prop_flat_map(|view| {
        let n = view.entities.len();
        (
            Just(view),
            proptest::collection::vec(arb_edit(), n),
            proptest::collection::vec((400u32..800, arb_kind(), arb_fields()), 0..30),
            101u32..140,
        )
    })
}

fn build(
    view: &View,
    edits: &[Edit],
    new: &[(u32, EntityKind, [i32; FIELDS])],
    tick: u32,
) -> (Vec<u32>, Vec<Update>) {
    let mut removed = Vec::new();
    let mut updates = Vec::new();
    for (rec, edit) in view.entities.iter().zip(edits) {
        match edit {
            Edit::Keep => {}
            Edit::Remove => removed.push(rec.id),
            Edit::Nudge(d) => {
                let mut fields = rec.predict(tick, RATE);
                for (f, e) in fields.iter_mut().zip(d) {
                    *f += e;
                }
                updates.push(Update {
                    id: rec.id,
                    kind: rec.kind,
                    fields,
                });
            }
            Edit::Teleport(fields) => updates.push(Update {
                id: rec.id,
                kind: rec.kind,
                fields: *fields,
            }),
        }
    }
    let mut fresh: Vec<_> = new
        .iter()
        .map(|&(id, kind, fields)| Update { id, kind, fields })
        .collect();
    fresh.sort_by_key(|u| u.id);
    fresh.dedup_by_key(|u| u.id);
    updates.extend(fresh);
    (removed, updates)
}

proptest! {
    /// decode(encode(current, baseline), baseline) == current, bit for bit, and the server's
    /// copy of the client's view is the client's view.
    #[test]
    fn apply_reproduces_what_encode_promised((view, edits, new, tick) in scenario(), origin in proptest::array::uniform2(0..65_536i32)) {
        let (removed, updates) = build(&view, &edits, &new, tick);
        let (snap, promised) = encode(tick, RATE, Some(&view), origin, &removed, &updates);
        let bytes = bitcode::encode(&snap);
        let wire: DeltaSnapshot = bitcode::decode(&bytes).unwrap();
        let got = apply(&wire, Some(&view), RATE).unwrap();
        prop_assert_eq!(&got, &promised);
        // Every update is now what the client sees at `tick`, whether it was sent or predicted.
        for u in &updates {
            let rec = got.get(u.id).unwrap();
            prop_assert_eq!(rec.predict(tick, RATE), u.fields);
        }
        for id in &removed {
            prop_assert!(got.get(*id).is_none());
        }
        // Full snapshot of the same state from nothing: the client sees every entity of the
        // delta's view, no more and no fewer, each where the delta's view predicts it. (Whole
        // lists, not a zip: a full snapshot that dropped an entity would pass a zip.)
        let all: Vec<Update> = got.entities.iter().map(|r| Update { id: r.id, kind: r.kind, fields: r.predict(tick, RATE) }).collect();
        let (full, full_promised) = encode(tick, RATE, None, origin, &[], &all);
        let from_nothing = apply(&full, None, RATE).unwrap();
        prop_assert_eq!(&from_nothing, &full_promised);
        let seen = |v: &View| -> Vec<(u32, EntityKind, [i32; FIELDS])> {
            v.entities.iter().map(|r| (r.id, r.kind, r.predict(tick, RATE))).collect()
        };
        prop_assert_eq!(seen(&from_nothing), seen(&got));
    }

    #[test]
    fn apply_is_total_on_arbitrary_snapshots(bytes in proptest::collection::vec(any::<u8>(), 0..300), view in arb_view()) {
        if let Ok(snap) = bitcode::decode::<DeltaSnapshot>(&bytes) {
            let _ = apply(&snap, Some(&view), RATE);
            let _ = apply(&snap, None, RATE);
        }
    }

    #[test]
    fn apply_is_total_on_structured_garbage(
        removed in proptest::collection::vec(any::<u32>(), 0..8),
        entered in proptest::collection::vec(any::<u32>(), 0..8),
        fields in proptest::collection::vec(any::<i32>(), 0..40),
        changed in proptest::collection::vec(0u32..5, 0..8),
        mask in proptest::collection::vec(any::<u8>(), 0..8),
        small in proptest::collection::vec(any::<i8>(), 0..10),
        view in arb_view(),
    ) {
        let snap = DeltaSnapshot {
            tick: 101, baseline: 100, origin: [i32::MAX, i32::MIN], removed,
            entered_kind: vec![EntityKind::Npc; entered.len()], entered, entered_fields: fields,
            changed, changed_mask: mask, small, large: vec![i32::MAX],
        };
        let _ = apply(&snap, Some(&view), RATE);
    }
}

/// What [`apply`] must do, written for clarity rather than speed (the reference
/// `apply_into`'s run copies are held to): decode and check every id list, then edit a map of
/// the baseline's records. `None` where the snapshot cannot be applied.
fn apply_by_the_rule(snap: &DeltaSnapshot, base: &View) -> Option<View> {
    let ids = |gaps: &[u32]| -> Option<Vec<u32>> {
        let mut out: Vec<u32> = Vec::new();
        for &g in gaps {
            let id = match out.last() {
                None => g,
                Some(_) if g == 0 => return None,
                Some(&p) => p.checked_add(g)?,
            };
            out.push(id);
        }
        Some(out)
    };
    let (removed, entered, changed) = (
        ids(&snap.removed)?,
        ids(&snap.entered)?,
        ids(&snap.changed)?,
    );
    if snap.entered_kind.len() != entered.len()
        || snap.entered_fields.len() != entered.len() * FIELDS
        || snap.changed_mask.len() != changed.len()
    {
        return None;
    }
    let had: std::collections::BTreeMap<u32, EntityRecord> =
        base.entities.iter().map(|r| (r.id, *r)).collect();
    let mut view = had.clone();
    for id in &removed {
        view.remove(id)?;
    }
    let (mut small, mut large) = (snap.small.iter(), snap.large.iter());
    for (id, &mask) in changed.iter().zip(&snap.changed_mask) {
        // A record of the baseline, not removed by the same snapshot.
        let rec = *view.get(id)?;
        let mut fields = rec.predict(snap.tick, RATE);
        for (f, field) in fields.iter_mut().enumerate() {
            match (mask >> (2 * f)) & 3 {
                0 => {}
                1 => *field = field.wrapping_add(i32::from(*small.next()?)),
                2 => *field = field.wrapping_add(*large.next()?),
                _ => return None,
            }
        }
        view.insert(
            *id,
            EntityRecord {
                fields,
                tick: snap.tick,
                ..rec
            },
        );
    }
    for (k, id) in entered.iter().enumerate() {
        if had.contains_key(id) {
            return None;
        }
        let f = &snap.entered_fields[k * FIELDS..(k + 1) * FIELDS];
        let fields = [
            f[0].wrapping_add(snap.origin[0]),
            f[1].wrapping_add(snap.origin[1]),
            f[2],
            f[3],
        ];
        let rec = EntityRecord {
            id: *id,
            kind: snap.entered_kind[k],
            fields,
            tick: snap.tick,
        };
        view.insert(*id, rec);
    }
    if small.next().is_some() || large.next().is_some() {
        return None;
    }
    Some(View {
        tick: snap.tick,
        entities: view.into_values().collect(),
    })
}

/// Gap-coded ids back to ids (the encoder's lists are valid).
fn ids_of(gaps: &[u32]) -> Vec<u32> {
    gaps.iter()
        .scan(0u32, |id, &g| {
            *id = id.wrapping_add(g);
            Some(*id)
        })
        .collect()
}

/// Changes one thing in a valid snapshot: an id added to or taken from one of its lists
/// (with its kind, fields or mask), a gap made 0, a value column one short or one long.
/// Some results are still valid (removing a record the snapshot left alone, entering a new
/// id), most are not.
fn mutate(snap: &mut DeltaSnapshot, view: &View, what: u8, pick: u32) {
    let (mut removed, mut entered, mut changed) = (
        ids_of(&snap.removed),
        ids_of(&snap.entered),
        ids_of(&snap.changed),
    );
    // An id of the baseline, or one just past it.
    let some_id = |pick: u32| match view.entities.len() {
        0 => pick % 500,
        n => view.entities[pick as usize % n].id + pick / 7 % 2,
    };
    let place = |list: &[u32], id: u32| list.partition_point(|&x| x < id);
    match what {
        0 => {}
        1 => {
            let id = some_id(pick);
            let at = place(&removed, id);
            if removed.get(at) != Some(&id) {
                removed.insert(at, id);
            }
        }
        2 => {
            let id = some_id(pick);
            let at = place(&changed, id);
            if changed.get(at) != Some(&id) {
                changed.insert(at, id);
                snap.changed_mask.insert(at, 0);
            }
        }
        3 => {
            let id = some_id(pick);
            let at = place(&entered, id);
            if entered.get(at) != Some(&id) {
                entered.insert(at, id);
                snap.entered_kind.insert(at, EntityKind::Player);
                let f = at * FIELDS;
                snap.entered_fields.splice(f..f, [1, 2, 3, 4]);
            }
        }
        4 if !changed.is_empty() => {
            let at = pick as usize % changed.len();
            changed.remove(at);
            snap.changed_mask.remove(at);
        }
        5 if !snap.changed_mask.is_empty() => {
            let at = pick as usize % snap.changed_mask.len();
            snap.changed_mask[at] |= 3 << (2 * (pick % 4));
        }
        6 => match pick % 4 {
            0 => drop(snap.small.pop()),
            1 => drop(snap.large.pop()),
            2 => snap.small.push(1),
            _ => snap.large.push(1),
        },
        _ => {}
    }
    for (list, ids) in [
        (&mut snap.removed, &removed),
        (&mut snap.entered, &entered),
        (&mut snap.changed, &changed),
    ] {
        list.clear();
        push_gaps(ids.iter().copied(), list);
    }
    if what == 7 {
        let list = match pick % 3 {
            0 => &mut snap.removed,
            1 => &mut snap.entered,
            _ => &mut snap.changed,
        };
        if list.len() > 1 {
            let at = 1 + pick as usize % (list.len() - 1);
            list[at] = 0;
        }
    }
}

proptest! {
    /// `apply` accepts exactly the snapshots the rule accepts and gives the rule's view: on
    /// valid snapshots and on each with one thing changed ([`mutate`]).
    #[test]
    fn apply_gives_what_the_rule_gives_on_valid_snapshots_and_near_misses(
        (view, edits, new, tick) in scenario(),
        mutations in proptest::collection::vec((0u8..9, any::<u32>()), 0..3),
        from_nothing in any::<bool>(),
    ) {
        let (removed, updates) = build(&view, &edits, &new, tick);
        let base = if from_nothing { None } else { Some(&view) };
        let (removed, updates) = if from_nothing {
            (Vec::new(), updates.into_iter().filter(|u| view.get(u.id).is_none()).collect())
        } else {
            (removed, updates)
        };
        let (mut snap, _) = encode(tick, RATE, base, [5, -5], &removed, &updates);
        let empty = View::default();
        for &(what, pick) in &mutations {
            mutate(&mut snap, base.unwrap_or(&empty), what, pick);
        }
        let want = apply_by_the_rule(&snap, base.unwrap_or(&empty));
        prop_assert_eq!(apply(&snap, Some(&view), RATE).ok(), want);
    }
}

#[test]
fn the_largest_id_is_kept_entered_and_changed_like_any_other() {
    let rec = |id| EntityRecord {
        id,
        kind: EntityKind::Npc,
        fields: [1000, 1000, 0, 0],
        tick: 100,
    };
    let view = View {
        tick: 100,
        entities: vec![rec(3), rec(u32::MAX)],
    };
    let moved = |id| Update {
        id,
        kind: EntityKind::Npc,
        fields: [1200, 1000, 0, 0],
    };
    // Kept while a lower id changes; changed itself; entered into a view that lacks it.
    for (removed, updates) in [
        (vec![], vec![moved(3)]),
        (vec![3], vec![moved(u32::MAX)]),
        (vec![u32::MAX], vec![moved(3)]),
    ] {
        let (snap, promised) = encode(101, RATE, Some(&view), [0, 0], &removed, &updates);
        assert_eq!(apply(&snap, Some(&view), RATE).unwrap(), promised);
        assert_eq!(Some(promised), apply_by_the_rule(&snap, &view));
    }
    let lower = View {
        tick: 100,
        entities: vec![rec(3)],
    };
    let (snap, promised) = encode(101, RATE, Some(&lower), [0, 0], &[], &[moved(u32::MAX)]);
    assert_eq!(apply(&snap, Some(&lower), RATE).unwrap(), promised);
    assert_eq!(promised.entities.len(), 2);
}

#[test]
fn steady_movers_cost_nothing_and_small_errors_cost_bits() {
    let rec = |id| EntityRecord {
        id,
        kind: EntityKind::Npc,
        fields: [1000, 1000, 160, -32],
        tick: 10,
    };
    let view = View {
        tick: 10,
        entities: (1..=100).map(rec).collect(),
    };
    let steady: Vec<Update> = view
        .entities
        .iter()
        .map(|r| Update {
            id: r.id,
            kind: r.kind,
            fields: r.predict(11, RATE),
        })
        .collect();
    let (snap, next) = encode(11, RATE, Some(&view), [0, 0], &[], &steady);
    assert!(snap.changed.is_empty(), "all as predicted");
    assert_eq!(next.entities, view.entities, "records unchanged");
    let nudged: Vec<Update> = steady
        .iter()
        .map(|u| Update {
            fields: [u.fields[0] + 1, u.fields[1] - 1, u.fields[2], u.fields[3]],
            ..*u
        })
        .collect();
    let (snap, _) = encode(11, RATE, Some(&view), [0, 0], &[], &nudged);
    let bytes = bitcode::encode(&snap).len();
    assert!(bytes < 100 * 2, "100 nudged movers in {bytes} bytes");
}

#[test]
fn prediction_advances_position_by_velocity_and_is_capped() {
    let r = EntityRecord {
        id: 1,
        kind: EntityKind::Npc,
        fields: [0, 0, 480, -480],
        tick: 0,
    };
    // 480 steps/s = 30 u/s; one tick at 30 Hz = 1 unit = 16 steps.
    assert_eq!(r.predict(1, 30), [16, -16, 480, -480]);
    assert_eq!(r.predict(0, 30), r.fields);
    assert_eq!(r.predict(1000, 30), r.predict(MAX_PREDICT_TICKS, 30));
}

#[test]
fn the_receiver_acks_what_it_holds_and_refuses_what_it_cannot_decode() {
    let mut rx = Receiver::new(RATE);
    assert_eq!(rx.ack(), None);
    let u = |id| Update {
        id,
        kind: EntityKind::Npc,
        fields: [id as i32, 0, 0, 0],
    };
    let (s1, v1) = encode(1, RATE, None, [0, 0], &[], &[u(1), u(2)]);
    assert_eq!(rx.receive(&s1).unwrap(), &v1);
    let (s3, v3) = encode(3, RATE, Some(&v1), [0, 0], &[1], &[u(3)]);
    let (s2, _) = encode(2, RATE, Some(&v1), [0, 0], &[], &[u(4)]);
    assert_eq!(rx.receive(&s3).unwrap(), &v3);
    assert_eq!(
        rx.ack(),
        Some(Ack {
            newest: 3,
            bits: 0b10
        }),
        "has 1, not 2"
    );
    rx.receive(&s2).unwrap();
    assert_eq!(
        rx.ack(),
        Some(Ack {
            newest: 3,
            bits: 0b11
        })
    );
    assert_eq!(
        rx.latest(),
        Some(&v3),
        "a late snapshot does not replace the latest view"
    );
    assert_eq!(rx.receive(&s3), Err(ReceiveError::Stale), "duplicate");
    let (orphan, _) = encode(
        5,
        RATE,
        Some(&View {
            tick: 4,
            entities: vec![],
        }),
        [0, 0],
        &[],
        &[],
    );
    assert_eq!(rx.receive(&orphan), Err(ReceiveError::MissingBaseline(4)));
}

#[test]
fn a_receiver_among_a_growing_crowd_sizes_its_views_to_fit_not_double() {
    // One entity enters each tick; the server builds against the view acknowledged a 3-tick
    // round trip ago.
    let mut rx = Receiver::new(RATE);
    let mut sent: Vec<View> = Vec::new();
    for tick in 1..=300u32 {
        let base = tick.checked_sub(3).filter(|&b| b >= 1);
        let base_view = base.map(|b| &sent[b as usize - 1]);
        let entering = [Update {
            id: tick,
            kind: EntityKind::Npc,
            fields: [tick as i32, 0, 0, 0],
        }];
        let (snap, view) = encode(tick, RATE, base_view, [0, 0], &[], &entering);
        rx.receive(&snap).unwrap();
        sent.push(view);
    }
    // Each view held is sized to the largest view with an eighth as headroom: growing by one
    // entity a tick must not double the buffers that pass from view to view.
    let largest = sent.iter().map(|v| v.entities.len()).max().unwrap_or(0);
    let per_view = (largest + largest / 8 + 8) * std::mem::size_of::<EntityRecord>();
    assert!(
        rx.view_bytes() <= rx.held() * per_view,
        "{} bytes of views held in {} views of at most {largest} records (bound {})",
        rx.view_bytes(),
        rx.held(),
        rx.held() * per_view
    );
}

#[test]
fn the_receiver_releases_views_older_than_the_newest_baseline_it_was_sent() {
    // A server that builds against the view acknowledged a 3-tick round trip ago.
    let mut rx = Receiver::new(RATE);
    let u = |id, x| Update {
        id,
        kind: EntityKind::Npc,
        fields: [x, 0, 0, 0],
    };
    let mut sent: Vec<View> = Vec::new();
    for tick in 1..=100u32 {
        let base = tick.checked_sub(3).filter(|&b| b >= 1);
        let base_view = base.map(|b| &sent[b as usize - 1]);
        let (snap, view) = encode(
            tick,
            RATE,
            base_view,
            [0, 0],
            &[],
            &[u(1, tick as i32), u(2, 7)],
        );
        assert_eq!(rx.receive(&snap).unwrap(), &view);
        sent.push(view);
        assert!(
            rx.held() <= 3 + 1 + 2,
            "tick {tick}: {} views held",
            rx.held()
        );
    }
    // A snapshot against a released view (one a server cannot send any more, its
    // acknowledged tick having moved past it) is stale, not a missing baseline.
    let (behind, _) = encode(102, RATE, Some(&sent[80]), [0, 0], &[], &[]);
    assert_eq!(rx.receive(&behind), Err(ReceiveError::Stale));
    let (ok, view) = encode(102, RATE, Some(&sent[98]), [0, 0], &[], &[]);
    assert_eq!(rx.receive(&ok).unwrap(), &view);
}

/// The acknowledgement as the views themselves say it: the ring's views read one by one.
fn ack_from_views(rx: &Receiver) -> Option<Ack> {
    let newest = rx.newest?;
    let mut bits = 0u32;
    for i in 0..32u32 {
        let Some(t) = newest.checked_sub(1 + i) else {
            break;
        };
        if rx.ring[t as usize % BASELINE_RING]
            .as_ref()
            .is_some_and(|v| v.tick == t)
        {
            bits |= 1 << i;
        }
    }
    Some(Ack { newest, bits })
}

#[test]
fn the_receivers_tick_index_always_says_what_its_views_say() {
    // Snapshots built against the client's newest view or one of the two before it (when
    // held), delivered lost, late, out of order and twice; some views kept by a holder (as the interpolation buffer does) so that
    // releasing them cannot reuse them. After every receive, the index of ticks names exactly
    // the views held, and lookups and acknowledgements agree with the views themselves.
    for seed in 0..60u64 {
        let mut rng = crate::rng::SplitMix64::new(seed);
        let mut rx = Receiver::new(RATE);
        let mut sent: Vec<(DeltaSnapshot, View)> = Vec::new();
        let mut held: Vec<Arc<View>> = Vec::new();
        let mut in_flight: Vec<DeltaSnapshot> = Vec::new();
        for tick in 1..=400u32 {
            // The server's baseline: the newest view the client acknowledged, or one up to two
            // ticks before it, when the client still holds it; now and then none (a full one).
            let base = rx
                .ack()
                .filter(|_| rng.below(4) != 0)
                .map(|a| a.newest.saturating_sub(rng.below(3)))
                .filter(|&b| b >= 1 && rx.holds(b));
            let base_view = base.and_then(|b| rx.view(b)).cloned();
            let updates: Vec<Update> = (0..rng.below(5))
                .map(|_| {
                    let id = 1 + rng.below(40);
                    let update = Update {
                        id,
                        kind: EntityKind::Npc,
                        fields: [rng.below(1000) as i32, 0, 0, 0],
                    };
                    (id, update)
                })
                .collect::<std::collections::BTreeMap<u32, Update>>()
                .into_values()
                .collect();
            let (snap, view) = encode(tick, RATE, base_view.as_ref(), [0, 0], &[], &updates);
            sent.push((snap.clone(), view));
            if rng.below(6) != 0 {
                in_flight.push(snap);
            }
            // Deliver some of what is in flight, in any order, sometimes twice.
            while !in_flight.is_empty() && rng.below(3) != 0 {
                let i = rng.below(in_flight.len() as u32) as usize;
                let snap = if rng.below(8) == 0 {
                    in_flight[i].clone()
                } else {
                    in_flight.swap_remove(i)
                };
                if let Ok(v) = rx.receive(&snap) {
                    assert_eq!(v, &sent[snap.tick as usize - 1].1, "seed {seed}");
                    if rng.below(3) == 0 {
                        held.push(rx.shared(snap.tick).unwrap().clone());
                    }
                }
                for (slot, view) in rx.ring.iter().enumerate() {
                    assert_eq!(
                        rx.ticks[slot],
                        view.as_ref().map_or(0, |v| v.tick),
                        "seed {seed} slot {slot}"
                    );
                }
                assert_eq!(rx.ack(), ack_from_views(&rx), "seed {seed}");
            }
            if held.len() > 8 {
                // Let go of, as the interpolation buffer does: handed back or dropped.
                for view in held.drain(..4) {
                    if rng.below(2) == 0 {
                        rx.recycle(view);
                    }
                }
            }
        }
        assert!(rx.ack().is_some_and(|a| a.bits != 0), "seed {seed}");
    }
}

#[test]
fn a_view_its_other_holder_lets_go_of_serves_the_next_snapshot() {
    let update = |tick: u32| Update {
        id: 5,
        kind: EntityKind::Npc,
        fields: [tick as i32, 0, 0, 0],
    };
    let mut rx = Receiver::new(RATE);
    let mut views: Vec<View> = Vec::new();
    let receive = |rx: &mut Receiver, tick: u32, views: &mut Vec<View>| {
        let base = views.last();
        let (snap, view) = encode(tick, RATE, base, [0, 0], &[], &[update(tick)]);
        assert_eq!(rx.receive(&snap), Ok(&view));
        views.push(view);
    };
    receive(&mut rx, 1, &mut views);
    // The interpolation buffer's share of view 1.
    let other = rx.shared(1).expect("held").clone();
    let allocation = other.entities.as_ptr();
    receive(&mut rx, 2, &mut views);
    // View 1 is now below the newest baseline named: the receiver lets go of it, and cannot
    // reuse it while it is shared.
    receive(&mut rx, 3, &mut views);
    assert!(!rx.holds(1));
    assert_eq!(rx.held(), 2, "views 2 and 3, no spare");
    // A view the receiver still holds is not taken from it.
    rx.recycle(rx.shared(3).expect("held").clone());
    assert_eq!(rx.held(), 2);
    assert_eq!(rx.view(3), Some(&views[2]));
    // Handed back, it is a spare, and the next snapshot's view is written into it.
    rx.recycle(other);
    assert_eq!(rx.held(), 3, "views 2 and 3 and a spare");
    receive(&mut rx, 4, &mut views);
    assert_eq!(rx.shared(4).expect("held").entities.as_ptr(), allocation);
    // No more than the receiver's spares are kept.
    for _ in 0..4 {
        rx.recycle(Arc::new(views[0].clone()));
    }
    assert_eq!(rx.held(), 2 + SPARE_VIEWS, "views 3 and 4 and the spares");
}
