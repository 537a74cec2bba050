//! Player names on demand: snapshots carry entity ids only, and `WhoIs` turns the ids of
//! players into their names, bounded per request and per second.

use arena_client_sim::connect::Transport;
use arena_server::stats::Stats;
use arena_shared::protocol::codec::FrameReader;
use arena_shared::protocol::{
    CLOSE_CLIENT_LEFT, ClientMsg, DisconnectReason, MAX_WHOIS, Ping, PlayerName, ServerMsg, WhoIs,
};
use wtransport::VarInt;

use crate::common::{self, WAIT};

/// Sends a `WhoIs` and returns the `Names` that answers it.
async fn who_is(
    t: &mut Transport,
    reader: &mut FrameReader,
    entities: Vec<u32>,
) -> Vec<PlayerName> {
    t.send_msg(&ClientMsg::WhoIs(WhoIs { entities }))
        .await
        .expect("stream open");
    loop {
        match tokio::time::timeout(WAIT, t.read_msg(reader))
            .await
            .expect("an answer in time")
        {
            Ok((ServerMsg::Names(names), _)) => return names,
            Ok((ServerMsg::Event(_) | ServerMsg::Pong(_), _)) => {}
            other => panic!("expected Names, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whois_names_the_players_asked_about_and_forgets_those_who_left() {
    let server = common::start(&[]).await;
    let common::Joined {
        t: mut a,
        reader: mut reader_a,
        welcome: ada,
        ..
    } = server.join("ada").await;
    let common::Joined {
        t: b, welcome: bob, ..
    } = server.join("bob").await;
    server.players_reach(2).await;

    let names = who_is(
        &mut a,
        &mut reader_a,
        vec![bob.entity, 4_000_000, ada.entity],
    )
    .await;
    assert_eq!(
        names,
        [
            PlayerName {
                entity: bob.entity,
                name: "bob".into()
            },
            PlayerName {
                entity: ada.entity,
                name: "ada".into()
            }
        ],
        "players only, in the order asked"
    );

    // Bob leaves for good: his entity goes, and so does his name.
    b.conn.close(VarInt::from_u32(CLOSE_CLIENT_LEFT), b"bye");
    server.players_reach(1).await;
    let names = who_is(&mut a, &mut reader_a, vec![bob.entity, ada.entity]).await;
    assert_eq!(
        names.iter().map(|n| n.entity).collect::<Vec<_>>(),
        [ada.entity]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whois_past_its_rate_is_dropped_and_past_its_size_closes_the_session() {
    let server = common::start(&["--max-whois-per-sec", "1"]).await;
    let common::Joined {
        t: mut a,
        mut reader,
        welcome: ada,
        ..
    } = server.join("ada").await;
    // Three at once against a burst of one: one answer, two dropped and counted. The pong
    // after them says the server has read all three.
    for _ in 0..3 {
        a.send_msg(&ClientMsg::WhoIs(WhoIs {
            entities: vec![ada.entity],
        }))
        .await
        .expect("stream open");
    }
    a.send_msg(&ClientMsg::Ping(Ping { nonce: 77 }))
        .await
        .expect("stream open");
    let mut answers = 0;
    loop {
        match tokio::time::timeout(WAIT, a.read_msg(&mut reader))
            .await
            .expect("a pong in time")
        {
            Ok((ServerMsg::Names(_), _)) => answers += 1,
            Ok((ServerMsg::Pong(p), _)) if p.nonce == 77 => break,
            Ok((ServerMsg::Pong(_) | ServerMsg::Event(_), _)) => {}
            other => panic!("expected Names or the pong, got {other:?}"),
        }
    }
    assert_eq!(answers, 1);
    assert_eq!(Stats::get(&server.stats.whois_rate_limited), 2);

    // One id over the limit is a protocol violation: a reason, and the session closed.
    a.send_msg(&ClientMsg::WhoIs(WhoIs {
        entities: vec![ada.entity; MAX_WHOIS + 1],
    }))
    .await
    .expect("stream open");
    let reason = loop {
        match tokio::time::timeout(WAIT, a.read_msg(&mut reader))
            .await
            .expect("a disconnect in time")
        {
            Ok((ServerMsg::Disconnect(d), _)) => break d,
            Ok((ServerMsg::Names(_) | ServerMsg::Pong(_) | ServerMsg::Event(_), _)) => {}
            other => panic!("expected a Disconnect, got {other:?}"),
        }
    };
    assert_eq!(reason.reason, DisconnectReason::MalformedFrame);
    assert!(reason.message.contains("at most 64"), "{}", reason.message);
    server.stop().await;
}
