//! The connection cork (`quinn::Connection::set_stream_cork`, the vendored quinn's fourth
//! patch), over real QUIC on loopback: while corked, what a stream is given leaves with the
//! connection's next datagram instead of in a packet of its own.

use std::time::Duration;

use wtransport::{ClientConfig, Connection, Endpoint, Identity, ServerConfig};

const WAIT: Duration = Duration::from_secs(10);

/// A server connection and the client's, over loopback, with the server's transport.
async fn pair() -> (Connection, Connection) {
    let identity = Identity::self_signed(["localhost", "127.0.0.1"]).expect("a certificate");
    let hash = identity.certificate_chain().as_slice()[0].hash();
    let server = Endpoint::server(
        ServerConfig::builder()
            .with_bind_address("127.0.0.1:0".parse().expect("an address"))
            .with_custom_transport(identity, super::transport_config())
            .build(),
    )
    .expect("a server endpoint");
    let port = server.local_addr().expect("bound").port();
    let client = Endpoint::client(
        ClientConfig::builder()
            .with_bind_default()
            .with_server_certificate_hashes([hash])
            .build(),
    )
    .expect("a client endpoint");
    let accepting = async {
        let request = server.accept().await.await.expect("a request");
        request.accept().await.expect("a session")
    };
    let url = format!("https://127.0.0.1:{port}/");
    let (s, c) = tokio::join!(accepting, client.connect(&url));
    (s, c.expect("connected"))
}

/// Packets, stream frames and datagram frames the connection has read.
fn read(c: &Connection) -> [u64; 3] {
    let s = c.quic_connection().stats();
    [s.udp_rx.datagrams, s.frame_rx.stream, s.frame_rx.datagram]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corked_connections_stream_bytes_leave_with_its_next_datagram() {
    let (s, c) = pair().await;
    let mut up = s.open_uni().await.expect("a stream").await.expect("opened");
    up.write_all(&[0]).await.expect("written");
    let mut down = tokio::time::timeout(WAIT, c.accept_uni())
        .await
        .expect("in time")
        .expect("a stream");
    let mut byte = [0u8; 1];
    down.read_exact(&mut byte).await.expect("the first byte");

    s.quic_connection().set_stream_cork(true);
    let before = read(&c);
    const ROUNDS: u8 = 30;
    // `disturbed`: rounds in which an acknowledgement from the client reached the server while
    // the write waited; the driver, awake for it, sends what is pending, so the write may leave
    // early. How many there are depends on how late a loaded machine runs the client's driver.
    // `calm`: the others, and `calm_packets` the packets the client read in them.
    let (mut disturbed, mut calm, mut calm_packets) = (0u64, 0u64, 0u64);
    let acks = || s.quic_connection().stats().frame_rx.acks;
    for round in 1..=ROUNDS {
        let (acks_before, packets_before) = (acks(), read(&c)[0]);
        up.write_all(&[round]).await.expect("written");
        // Pacing, not a wait for an event: were the write to wake the driver, its packet
        // would leave in these 5 ms, before the datagram is even queued.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let calm_round = acks() == acks_before;
        s.send_datagram([round]).expect("a datagram");
        let d = tokio::time::timeout(WAIT, c.receive_datagram())
            .await
            .expect("in time")
            .expect("a datagram");
        assert_eq!(&d.payload()[..], [round]);
        tokio::time::timeout(WAIT, down.read_exact(&mut byte))
            .await
            .expect("in time")
            .expect("the byte");
        assert_eq!(byte, [round]);
        if calm_round {
            calm += 1;
            calm_packets += read(&c)[0] - packets_before;
        } else {
            disturbed += 1;
        }
    }
    let after = read(&c);
    let [packets, streams, datagrams] = [0, 1, 2].map(|i| after[i] - before[i]);
    assert_eq!(datagrams, u64::from(ROUNDS));
    assert!(streams >= u64::from(ROUNDS), "{streams} stream frames");
    // Uncorked: a packet for each write and each datagram, 60. Corked: one a round (34-36
    // read here), plus a write carried out early when the client's acknowledgement arrives
    // while it waits (quinn acknowledges every second packet at once: at most one round in
    // two on an idle machine), and an MTU probe or two. The early writes are counted, not
    // guessed: a loaded machine makes more of them (46 packets were read once with the whole
    // suite running, over the 45 that "one round in two" allowed).
    assert!(
        packets <= u64::from(ROUNDS) + disturbed + 2,
        "{packets} packets for {ROUNDS} writes and {ROUNDS} datagrams, {disturbed} rounds disturbed"
    );
    // And a calm round is one packet (an MTU probe or two aside), in enough rounds to tell.
    assert!(calm >= 5, "only {calm} calm rounds of {ROUNDS}");
    assert!(
        calm_packets <= calm + 2,
        "{calm_packets} packets in {calm} calm rounds"
    );

    // Uncorked again, what waits leaves at once, and so does the next write.
    up.write_all(&[100]).await.expect("written");
    s.quic_connection().set_stream_cork(false);
    up.write_all(&[101]).await.expect("written");
    let mut two = [0u8; 2];
    tokio::time::timeout(WAIT, down.read_exact(&mut two))
        .await
        .expect("in time, with no datagram")
        .expect("the bytes");
    assert_eq!(two, [100, 101]);
}
