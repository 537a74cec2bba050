//! The game over real QUIC: bots that chase fight each other and NPCs that fight back, and
//! nothing they fired outlives them.

use arena_client_sim::swarm::{self, SwarmBehaviour};
use arena_server::stats::Stats;

use crate::common::{self, WAIT};

const NPCS: u64 = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_chasing_bots_fight_for_ten_seconds_and_leave_no_entity_behind() {
    // A small arena, so that everyone meets everyone.
    let npcs = NPCS.to_string();
    let server = common::start(&[
        "--npcs",
        &npcs,
        "--world-size",
        "1200",
        "--obstacles",
        "6",
        "--npc-combat",
        "true",
    ])
    .await;
    let chase = SwarmBehaviour::Mix("chase=1".parse().expect("a mix"));
    let result = tokio::time::timeout(
        WAIT + WAIT,
        swarm::run(common::swarm(&server, 20, 10, chase, 31)),
    )
    .await
    .expect("swarm ends");
    let r = &result.report;
    common::assert_all_played(r, 20);
    eprintln!(
        "20 chasers, 10 s: {} shots, {} hits, {} kills, {} deaths; server: {} shots, {} hits, {} kills",
        r.shots_fired,
        r.hits_confirmed,
        r.kills,
        r.deaths,
        Stats::get(&server.stats.shots_fired),
        Stats::get(&server.stats.hits),
        Stats::get(&server.stats.kills),
    );
    assert!(r.shots_fired > 100, "{}", r.table());
    assert!(r.hits_confirmed > 20, "{}", r.table());
    assert!(r.kills > 0, "{}", r.table());
    assert!(r.deaths > 0, "NPCs fight back: {}", r.table());
    // What the bots counted agrees with what the server did: a bot counts a shot it sent for
    // a tick its weapon was ready; the server fires it unless the bot was already dead (the
    // bot learns of it a round trip later).
    let server_shots = Stats::get(&server.stats.shots_fired);
    assert!(
        server_shots <= r.shots_fired && server_shots * 10 >= r.shots_fired * 8,
        "server fired {server_shots}, bots counted {}",
        r.shots_fired
    );
    assert!(Stats::get(&server.stats.hits) >= r.hits_confirmed);
    assert!(Stats::get(&server.stats.kills) >= r.kills);
    assert_eq!(Stats::get(&server.stats.events_dropped), 0);
    // Every player gone, every projectile expired: the NPCs alone (the dead ones respawn).
    server.players_reach(0).await;
    server.entities_reach(NPCS).await;
    server.stop().await;
}
