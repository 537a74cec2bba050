//! The swarm's bots share sockets, a bounded number a flock: the server is reached from
//! exactly `ceil(bots / per_endpoint)` UDP sockets, and every bot is still its own connection,
//! session and player. A counting relay in front of the server sees the sockets.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use arena_client_sim::swarm::{self, SwarmBehaviour, SwarmConfig, SwarmResult};
use tokio::net::UdpSocket;
use tokio::task::JoinSet;

use crate::common::{self, TestServer};

/// Forwards UDP between clients and `server`, one upstream socket per client address (so the
/// server sees each client socket as its own peer), and remembers every client address.
struct CountingRelay {
    addr: SocketAddr,
    sources: Arc<Mutex<HashSet<SocketAddr>>>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingRelay {
    async fn start(server: SocketAddr) -> Self {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("relay binds"));
        let addr = front.local_addr().expect("bound");
        let sources = Arc::new(Mutex::new(HashSet::new()));
        let task = tokio::spawn(forward(front, server, sources.clone()));
        Self {
            addr,
            sources,
            task,
        }
    }

    fn sources(&self) -> HashSet<SocketAddr> {
        self.sources.lock().unwrap().clone()
    }
}

impl Drop for CountingRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(
    front: Arc<UdpSocket>,
    server: SocketAddr,
    sources: Arc<Mutex<HashSet<SocketAddr>>>,
) {
    let mut upstreams = std::collections::HashMap::new();
    // Aborted with this task.
    let mut backward = JoinSet::new();
    let mut buf = vec![0u8; 65_536];
    while let Ok((n, from)) = front.recv_from(&mut buf).await {
        let up: &Arc<UdpSocket> = match upstreams.entry(from) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                sources.lock().unwrap().insert(from);
                let up = UdpSocket::bind("127.0.0.1:0")
                    .await
                    .expect("upstream binds");
                up.connect(server).await.expect("upstream connects");
                let up = Arc::new(up);
                let (up2, front2) = (up.clone(), front.clone());
                backward.spawn(async move {
                    let mut buf = vec![0u8; 65_536];
                    while let Ok(n) = up2.recv(&mut buf).await {
                        let _ = front2.send_to(&buf[..n], from).await;
                    }
                });
                e.insert(up)
            }
        };
        let _ = up.send(&buf[..n]).await;
    }
}

/// `bots` bots, `per_endpoint` to an endpoint, bound to `bind`, dialling the server through a
/// counting relay and playing five seconds: the server holds each as its own session and
/// player, every bot plays to its end and sees snapshots. Returns the sources the relay saw
/// and the swarm's result.
async fn play_through_relay(
    bots: u32,
    per_endpoint: u32,
    bind: Option<IpAddr>,
) -> (HashSet<SocketAddr>, SwarmResult) {
    let server: TestServer = common::start(&[]).await;
    let relay = CountingRelay::start(server.wt_addr).await;
    let config = SwarmConfig {
        bots_per_endpoint: per_endpoint,
        bind,
        connect_via: Some(relay.addr),
        ..common::swarm(&server, bots, 5, SwarmBehaviour::default(), 21)
    };
    let running = tokio::spawn(swarm::run(config.clone()));
    server.sessions_reach(bots as usize).await;
    server.players_reach(u64::from(bots)).await;
    let result = tokio::time::timeout(common::WAIT, running)
        .await
        .expect("swarm ends")
        .expect("swarm task");
    let sources = relay.sources();
    common::assert_all_played(&result.report, u64::from(bots));
    let entities: HashSet<_> = result.bots.iter().filter_map(|b| b.entity).collect();
    assert_eq!(entities.len(), bots as usize, "every bot is its own player");
    for bot in &result.bots {
        assert!(
            bot.snapshots > 0,
            "{} saw snapshots on a shared socket",
            bot.name
        );
    }
    server.stop().await;
    (sources, result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_bots_ten_to_an_endpoint_reach_the_server_from_four_sockets_each_its_own_player() {
    let (sources, result) = play_through_relay(40, 10, None).await;
    assert_eq!(sources.len(), 4, "sources: {sources:?}");
    assert_eq!(result.endpoints, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swarm_bound_to_another_loopback_address_shares_its_sockets_there() {
    let host: IpAddr = "127.0.0.2".parse().unwrap();
    // Ten bots, four to an endpoint: three sockets, the last carrying two.
    let (sources, result) = play_through_relay(10, 4, Some(host)).await;
    assert_eq!(sources.len(), 3, "sources: {sources:?}");
    assert!(
        sources.iter().all(|s| s.ip() == host),
        "every socket is bound to {host}: {sources:?}"
    );
    assert_eq!(result.endpoints, 3);
}
