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
