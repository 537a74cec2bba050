//! A UDP relay between clients and the server that a test can cut: while cut, every packet
//! either way is dropped, as when a player's network vanishes. No close frame gets through,
//! so each side learns of the loss only from its idle timeout.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::UdpSocket;
use tokio::task::{JoinHandle, JoinSet};

pub struct Relay {
    /// Where clients send: dial this instead of the server.
    pub addr: SocketAddr,
    open: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Relay {
    /// A relay on a loopback port to `server`, open.
    pub async fn start(server: SocketAddr) -> Self {
        let front = UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("relay binds on loopback");
        Self::start_on(front, server)
    }

    /// A relay on `front`, bound before the server started (so that the server's
    /// `--public-url` can name it), to `server`, open.
    pub fn start_on(front: UdpSocket, server: SocketAddr) -> Self {
        let front = Arc::new(front);
        let addr = front.local_addr().expect("bound");
        let open = Arc::new(AtomicBool::new(true));
        let task = tokio::spawn(forward(front, server, open.clone()));
        Self { addr, open, task }
    }

    /// Drops everything from now on, both ways.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Client → server: one upstream socket per client address, so the server sees each client
/// as its own peer; each upstream's replies go back to its client.
async fn forward(front: Arc<UdpSocket>, server: SocketAddr, open: Arc<AtomicBool>) {
    let mut upstreams: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    // Dropped with this task (abort), which aborts the backward halves too.
    let mut backward = JoinSet::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, from)) = front.recv_from(&mut buf).await else {
            return;
        };
        if !open.load(Ordering::SeqCst) {
            continue;
        }
        let up = match upstreams.get(&from) {
            Some(up) => up.clone(),
            None => {
                let Ok(up) = UdpSocket::bind("127.0.0.1:0").await else {
                    continue;
                };
                if up.connect(server).await.is_err() {
                    continue;
                }
                let up = Arc::new(up);
                backward.spawn(back(up.clone(), front.clone(), from, open.clone()));
                upstreams.insert(from, up.clone());
                up
            }
        };
        let _ = up.send(&buf[..n]).await;
    }
}

async fn back(
    up: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    client: SocketAddr,
    open: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 65_536];
    while let Ok(n) = up.recv(&mut buf).await {
        if open.load(Ordering::SeqCst) {
            let _ = front.send_to(&buf[..n], client).await;
        }
    }
}
