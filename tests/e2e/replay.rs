//! Recording over real QUIC: a run's replay holds every player, every input the server
//! applied, keyframes at their interval, rotates into files that each start from a keyframe,
//! reads back whole once the server has stopped, and re-simulates bit for bit: the whole run,
//! and each file alone from its first keyframe.

use arena_client_sim::swarm::{self, SwarmBehaviour};
use arena_shared::replay::{self, End, Record, Summary};

use crate::common::{self, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_bots_leave_a_replay_whose_numbers_match_what_they_did() {
    let dir = std::env::temp_dir().join(format!("arena-e2e-replay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir_arg = dir.display().to_string();
    let server = common::start(&[
        "--replay-dir",
        &dir_arg,
        "--replay-keyframe-ticks",
        "30",
        "--replay-rotate-secs",
        "4",
    ])
    .await;
    let result = tokio::time::timeout(
        WAIT,
        swarm::run(common::swarm(
            &server,
            20,
            10,
            SwarmBehaviour::default(),
            41,
        )),
    )
    .await
    .expect("swarm ends");
    common::assert_all_played(&result.report, 20);
    server.players_reach(0).await;
    server.stop().await;

    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("the replay directory")
        .map(|e| e.expect("an entry").path())
        .collect();
    files.sort();
    assert!(
        (2..=5).contains(&files.len()),
        "a 10 s run rotates every 4 s: {files:?}"
    );
    let mut records = Vec::new();
    let mut ticks_alone = 0;
    for (i, file) in files.iter().enumerate() {
        let read = replay::read(&std::fs::read(file).expect("readable"));
        assert_eq!(read.end, End::Clean);
        let Record::Header(header) = &read.records[0] else {
            panic!("a file starts with its header");
        };
        // A file starts from a full world: a keyframe, or the run's first tick (the fresh
        // world every re-simulation can start from). The run's first keyframe is taken at the
        // end of tick 1, so a bot whose join that tick applies (the first tick late on a
        // loaded machine) is recorded before it.
        let from_the_start = header.first_tick == 1 && read.records[1].tick() == 1;
        assert!(
            matches!(read.records[1], Record::Keyframe { .. }) || from_the_start,
            "a file starts from a full world: {:?} in {}",
            read.records[1],
            file.display()
        );
        // Each file verifies alone, from its first keyframe.
        let alone = arena_server::replay::verify(std::slice::from_ref(file)).expect("verifies");
        assert!(alone.skipped.is_empty(), "{alone:?}");
        ticks_alone += alone.ticks;
        let text = arena_server::replay::info_text(file).expect("info");
        eprintln!("{text}");
        records.extend(
            read.records
                .into_iter()
                .filter(|r| i == 0 || !matches!(r, Record::Header(_))),
        );
    }
    let s = Summary::of(&records);
    assert_eq!(ticks_alone, s.last_tick, "the files alone cover every tick");
    assert_eq!((s.players, s.joins, s.leaves), (20, 20, 20), "{s:?}");
    // Every input the server applied is recorded once; the bots' last few, for ticks after
    // they left, were never applied.
    let sent: u64 = result.bots.iter().map(|b| b.inputs_sent).sum();
    assert!(
        s.inputs <= sent && s.inputs + 20 * 10 >= sent,
        "{} recorded of {sent} sent",
        s.inputs
    );
    let expected = u64::from(s.ticks() / 30);
    assert!(
        s.keyframes >= expected && s.keyframes <= expected + 2,
        "{} keyframes over {} ticks",
        s.keyframes,
        s.ticks()
    );
    assert!(s.gaps.is_empty());
    assert!(s.events > 0, "they fought: {s:?}");
    let text = arena_server::replay::info_text(&files[0]).expect("info");
    assert!(text.contains("ticks       1..="), "{text}");

    // The proof of determinism: the server's systems, fed the recorded joins, leaves and
    // inputs, reproduce every input, event and keyframe, from the start and from each
    // keyframe's state.
    let verified = arena_server::replay::verify(&files).expect("verifies");
    eprintln!("{verified:?}");
    assert_eq!(verified.keyframes, s.keyframes);
    assert_eq!(verified.ticks, s.last_tick);
    assert!(verified.skipped.is_empty());

    // A keyframe altered by one quantization step is caught, with its tick and entity.
    let (tick, id) = records
        .iter_mut()
        .filter_map(|r| match r {
            Record::Keyframe { tick, entities, .. } if *tick > 1 && !entities.is_empty() => {
                entities[0].pos.x += 1.0 / 16.0;
                Some((*tick, entities[0].id))
            }
            _ => None,
        })
        .next()
        .expect("a keyframe after the first");
    let mut forged = replay::MAGIC.to_vec();
    for r in &records {
        replay::encode_record(r, &mut forged);
    }
    let forged_path = dir.join("forged.replay");
    std::fs::write(&forged_path, forged).expect("writable");
    match arena_server::replay::verify(&[forged_path]) {
        Err(arena_server::replay::VerifyError::Entity {
            tick: t, entity, ..
        }) => assert_eq!((t, entity), (tick, id)),
        other => panic!("expected a mismatch at tick {tick}, entity {id}: {other:?}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}
