//! Encoding and decoding a full-state snapshot, as the server and every client do each tick.
//!
//! `cargo bench --bench snapshot_codec`. Results and the machine are in BENCHMARKS.md.
//! Sizes are printed once per scenario (bytes on the wire matter more than nanoseconds here).

use std::hint::black_box;

use arena_shared::protocol::codec::{decode_datagram, encode_snapshot_parts};
use arena_shared::protocol::{EntityKind, EntityState};
use arena_shared::rng::SplitMix64;
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
}

criterion_group!(benches, bench);
criterion_main!(benches);
