//! Delta replication over real QUIC: what each bot reconstructs is the server's world.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arena_client_sim::swarm::{self, SwarmBehaviour};
use arena_server::replication::frame::WorldFrame;

use crate::common::{self, WAIT};

const AOI: f32 = 600.0;
const EXIT: f32 = 660.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_bots_among_two_thousand_npcs_see_exactly_the_server_state_of_their_area() {
    // A budget large enough that nothing waits: this test is about correctness of deltas,
    // baselines and interest over a real network; budget behaviour is tested sans-IO.
    let mut server = common::start(&["--npcs", "2000", "--client-kbps", "4000"]).await;
    let mut tap = server.frames.take().expect("frame tap");
    let frames: Arc<Mutex<BTreeMap<u32, Arc<WorldFrame>>>> = Arc::default();
    let collector = {
        let frames = frames.clone();
        tokio::spawn(async move {
            loop {
                match tap.recv().await {
                    Ok(f) => {
                        let mut map = frames.lock().unwrap();
                        map.insert(f.tick, f);
                        while map.len() > 900 {
                            map.pop_first();
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                }
            }
        })
    };
    let result = tokio::time::timeout(
        WAIT,
        swarm::run(common::swarm(&server, 20, 3, SwarmBehaviour::Wander, 11)),
    )
    .await
    .expect("swarm ends");
    let r = &result.report;
    common::assert_all_played(r, 20);
    assert_eq!(
        r.baseline_misses, 0,
        "no loss on loopback: every baseline was held"
    );
    assert!(r.snapshots_per_bot_hz >= 27.0, "{}", r.table());
    assert!(r.snapshot_bytes_p99 <= 1350.0, "{}", r.table());

    let frames = frames.lock().unwrap().clone();
    for bot in &result.bots {
        let view = bot
            .last_view
            .as_ref()
            .unwrap_or_else(|| panic!("{} reconstructed a view", bot.name));
        let frame = frames
            .get(&view.tick)
            .unwrap_or_else(|| panic!("frame of tick {} tapped", view.tick));
        let own = bot.entity.expect("welcomed");
        let me = frame.entities[frame.index_of(own).expect("own entity in the world")].pos;
        let mut in_area = 0;
        for e in &frame.entities {
            let d = e.pos.distance(me);
            if d <= AOI {
                in_area += 1;
                let rec = view
                    .get(e.id)
                    .unwrap_or_else(|| panic!("{}: entity {} at {d:.0} missing", bot.name, e.id));
                // Exact to the quantization step: the quantized fields are equal.
                assert_eq!(
                    rec.predict(view.tick, 30),
                    e.fields,
                    "{}: entity {} differs",
                    bot.name,
                    e.id
                );
            }
        }
        for rec in &view.entities {
            let i = frame
                .index_of(rec.id)
                .unwrap_or_else(|| panic!("{}: {} is not in the world", bot.name, rec.id));
            let d = frame.entities[i].pos.distance(me);
            assert!(
                d <= EXIT,
                "{}: entity {} sent from {d:.0} units away",
                bot.name,
                rec.id
            );
        }
        assert!(in_area > 20, "{} saw a crowd ({in_area})", bot.name);
    }
    collector.abort();
    server.stop().await;
}
