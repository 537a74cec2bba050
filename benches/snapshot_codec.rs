//! Encoding and decoding a full-state snapshot, as the server and every client do each tick;
//! and `delta_apply`: a client rebuilding its view from a delta snapshot and the baseline it
//! names (`snapshot::apply_into`, what every bot and browser does with each snapshot).
//!
//! `cargo bench --bench snapshot_codec`. Results and the machine are in BENCHMARKS.md.
//! Sizes are printed once per scenario (bytes on the wire matter more than nanoseconds here).

use std::hint::black_box;

use arena_shared::protocol::codec::{decode_datagram, encode_snapshot_parts};
use arena_shared::protocol::{EntityKind, EntityState};
use arena_shared::rng::SplitMix64;
use arena_shared::snapshot::{self, EntityRecord, Update, View};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// Entities spread over a 4096 world with velocities like the game's (NPCs up to 200 u/s).
fn world(n: u32) -> Vec<EntityState> {
    let mut rng = SplitMix64::new(42);
    (1..=n)
        .map(|id| EntityState {
            id,
            kind: if id % 20 == 0 {
                EntityKind::Player
            } else {
                EntityKind::Npc
            },
            pos: rng.square(16.0, 4080.0),
            vel: rng.square(-200.0, 200.0),
        })
        .collect()
}

/// The datagram size wtransport reported on loopback right after connecting.
const MAX_DATAGRAM: usize = 1350;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("full_snapshot");
    for n in [64u32, 1000] {
        let entities = world(n);
        let parts = encode_snapshot_parts(1, &entities, MAX_DATAGRAM);
        let bytes: usize = parts.iter().map(Vec::len).sum();
        eprintln!(
            "full_snapshot/{n}: {} datagrams, {bytes} bytes, {:.1} bytes/entity",
            parts.len(),
            bytes as f64 / f64::from(n)
        );
        group.throughput(Throughput::Elements(u64::from(n)));
        group.bench_with_input(BenchmarkId::new("encode", n), &entities, |b, e| {
            b.iter(|| encode_snapshot_parts(black_box(1), black_box(e), MAX_DATAGRAM))
        });
        group.bench_with_input(BenchmarkId::new("decode", n), &parts, |b, parts| {
            b.iter(|| {
                for p in parts {
                    black_box(decode_datagram(black_box(p)).ok());
                }
            })
        });
    }
    group.finish();
    delta_apply(c);
    client_codec(c);
    server_codec(c);
}

/// A baseline of `n` records (every third id, so entities can enter between them) and a
/// snapshot against it at the next tick that removes `removed`, enters `entered` and changes
/// `changed` of them: the live game's ~280 in view with ~22 sent a tick.
fn delta_case(n: u32, removed: u32, entered: u32, changed: u32) -> (View, snapshot::DeltaSnapshot) {
    let mut rng = SplitMix64::new(7);
    let base = View {
        tick: 100,
        entities: (1..=n)
            .map(|k| EntityRecord {
                id: 3 * k,
                kind: EntityKind::Npc,
                fields: [
                    rng.below(65_000) as i32,
                    rng.below(65_000) as i32,
                    rng.below(400) as i32 - 200,
                    rng.below(400) as i32 - 200,
                ],
                tick: 100 - rng.below(20),
            })
            .collect(),
    };
    // Spread over the view: removals and changes of distinct records, entries between them.
    let step = n / (removed + changed).max(1);
    let picked: Vec<u32> = (0..removed + changed).map(|k| 3 * (1 + k * step)).collect();
    let gone: Vec<u32> = picked
        .iter()
        .step_by(2)
        .take(removed as usize)
        .copied()
        .collect();
    let mut updates: Vec<Update> = picked
        .iter()
        .filter(|id| !gone.contains(id))
        .take(changed as usize)
        .map(|&id| {
            let r = base.entities[(id / 3 - 1) as usize];
            Update {
                id,
                kind: r.kind,
                fields: [
                    r.fields[0] + 40,
                    r.fields[1] - 300,
                    r.fields[2] + 1,
                    r.fields[3],
                ],
            }
        })
        .collect();
    updates.extend((0..entered).map(|k| Update {
        id: 3 * (1 + k * (n / entered.max(1))) + 1,
        kind: EntityKind::Player,
        fields: [1000, 2000, 30, -30],
    }));
    updates.sort_unstable_by_key(|u| u.id);
    let (snap, _) = snapshot::encode(101, 30, Some(&base), [0, 0], &gone, &updates);
    (base, snap)
}

fn delta_apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("delta_apply");
    for (name, n, removed, entered, changed) in
        [("280x22", 280, 3, 3, 16), ("1000x120", 1000, 10, 10, 100)]
    {
        let (base, snap) = delta_case(n, removed, entered, changed);
        let mut view = View::default();
        snapshot::apply_into(&snap, Some(&base), 30, &mut view).expect("applies");
        assert_eq!(view.entities.len() as u32, n - removed + entered);
        group.throughput(Throughput::Elements(u64::from(n)));
        group.bench_function(name, |b| {
            b.iter(|| {
                snapshot::apply_into(black_box(&snap), Some(&base), 30, &mut view)
                    .expect("applies");
                black_box(&view);
            })
        });
    }
    group.finish();
}

/// What a client's codec does with each snapshot it gets and each input it sends: a delta
/// datagram of the live game's size decoded, an input framed. bitcode's one-shot calls
/// against the codec's, which keep bitcode's working memory on the thread
/// (`protocol::codec`'s `BUFFER`).
fn client_codec(c: &mut Criterion) {
    use arena_shared::protocol::codec::{self, encode_datagram};
    use arena_shared::protocol::{Buttons, ClientMsg, Input, InputStatus, ServerDatagram};
    use arena_shared::quant::{Aim, MoveDir};
    let (_, snap) = delta_case(280, 3, 3, 16);
    let bytes = encode_datagram(&ServerDatagram::Delta(InputStatus::default(), snap));
    eprintln!("client_codec: a delta datagram of {} bytes", bytes.len());
    let input = ClientMsg::Input(Input {
        seq: 1234,
        tick: 5678,
        movement: MoveDir::from_vec2(glam::Vec2::new(1.0, 0.5)),
        aim: Aim::from_radians(0.7),
        buttons: Buttons(Buttons::FIRE),
        view_tick: 5670,
        view_frac: 128,
    });
    let mut group = c.benchmark_group("client_codec");
    group.bench_function("decode_delta/one_shot", |b| {
        b.iter(|| black_box(bitcode::decode::<ServerDatagram>(black_box(&bytes)).ok()))
    });
    group.bench_function("decode_delta/codec", |b| {
        b.iter(|| black_box(decode_datagram(black_box(&bytes)).ok()))
    });
    group.bench_function("encode_input/one_shot", |b| {
        b.iter(|| black_box(bitcode::encode(black_box(&input)).len()))
    });
    let mut out = Vec::new();
    group.bench_function("encode_input/codec", |b| {
        b.iter(|| {
            out.clear();
            codec::encode_client(black_box(&input), &mut out).expect("fits");
            black_box(&out);
        })
    });
    group.finish();
}

/// What the server does with each snapshot it builds: the delta datagram encoded, by bitcode's
/// derived encoder (its working memory kept, as the server kept it before) and by the
/// server's own writer of the same bytes (`protocol::codec`'s `delta_writer`). `280x22` is the
/// combat world's client (~280 in view, ~22 sent), `190x5` the replication bench's arena
/// client (~190 in view, ~5 sent).
fn server_codec(c: &mut Criterion) {
    use arena_shared::protocol::codec::DatagramEncoder;
    use arena_shared::protocol::{InputStatus, ServerDatagram};
    let mut group = c.benchmark_group("server_codec");
    for (name, n, removed, entered, changed) in [("280x22", 280, 3, 3, 16), ("190x5", 190, 0, 1, 4)]
    {
        let (_, snap) = delta_case(n, removed, entered, changed);
        let input = InputStatus::default();
        let datagram = ServerDatagram::Delta(input, snap.clone());
        let mut buffer = bitcode::Buffer::new();
        let mut encoder = DatagramEncoder::default();
        assert_eq!(
            buffer.encode(&datagram),
            encoder.encode_delta(&input, &snap)
        );
        group.bench_function(format!("encode_delta/bitcode/{name}"), |b| {
            b.iter(|| black_box(buffer.encode(black_box(&datagram)).to_vec()))
        });
        group.bench_function(format!("encode_delta/writer/{name}"), |b| {
            b.iter(|| black_box(encoder.encode_delta(&input, black_box(&snap))))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
