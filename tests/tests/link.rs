//! The userspace link layer against an echo server (no node processes): each fault does
//! what its documentation promises to the bytes of a real TCP connection — delay holds
//! them at least that long, loss and reordering delay but never corrupt or reorder the
//! stream, a bandwidth limit paces them, a `Drop` cut holds them (and new connections)
//! until the heal, a `Reset` cut closes connections and refuses new ones.
//!
//! The timing assertions are lower bounds that define the faults (a delayed byte cannot
//! arrive early), with no upper bound tighter than a generous liveness limit.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tessera_tests::link::{CutKind, LinkFaults, LinkMesh};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A bound on anything that should happen, so a broken proxy fails instead of hanging.
const LIVENESS: Duration = Duration::from_secs(20);

/// An echo server on loopback; returns its port.
async fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = socket.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    port
}

/// Two "nodes": node 1 is the echo server; node 0 reaches it through the proxy (0, 1).
async fn mesh() -> LinkMesh {
    let echo = echo_server().await;
    LinkMesh::start(&[echo, echo], 7).await.unwrap()
}

async fn connect(mesh: &LinkMesh) -> TcpStream {
    TcpStream::connect(("127.0.0.1", mesh.port(0, 1)))
        .await
        .unwrap()
}

/// Writes `bytes` and reads them back; returns how long the round trip took.
async fn round_trip(stream: &mut TcpStream, bytes: &[u8]) -> Duration {
    let started = Instant::now();
    stream.write_all(bytes).await.unwrap();
    let mut back = vec![0u8; bytes.len()];
    tokio::time::timeout(LIVENESS, stream.read_exact(&mut back))
        .await
        .expect("the echo comes back")
        .unwrap();
    assert_eq!(back, bytes, "the stream was corrupted");
    started.elapsed()
}

fn link(from: usize, to: usize) -> BTreeSet<(usize, usize)> {
    BTreeSet::from([(from, to)])
}

#[tokio::test]
async fn delay_holds_each_direction_at_least_its_delay() {
    let mesh = mesh().await;
    mesh.set_faults(
        0,
        1,
        LinkFaults {
            delay_ms: 100,
            jitter_ms: 20,
            ..LinkFaults::default()
        },
    );
    mesh.set_faults(
        1,
        0,
        LinkFaults {
            delay_ms: 50,
            ..LinkFaults::default()
        },
    );
    let mut stream = connect(&mesh).await;
    for _ in 0..3 {
        let took = round_trip(&mut stream, b"ping").await;
        assert!(took >= Duration::from_millis(150), "{took:?}");
    }
}

#[tokio::test]
async fn loss_and_reordering_delay_the_stream_but_keep_it_whole_and_in_order() {
    let mesh = mesh().await;
    mesh.set_faults(
        0,
        1,
        LinkFaults {
            loss: 0.3,
            reorder: 0.2,
            reorder_delay_ms: 30,
            duplicate: 0.2,
            ..LinkFaults::default()
        },
    );
    let mut stream = connect(&mesh).await;
    let mut slowest = Duration::ZERO;
    for i in 0..40u32 {
        let message: Vec<u8> = (0..100).map(|b| (b as u32 + i) as u8).collect();
        slowest = slowest.max(round_trip(&mut stream, &message).await);
    }
    // With 40 segments lost with probability 0.3, at least one waited a retransmission.
    assert!(slowest >= Duration::from_millis(200), "{slowest:?}");
}

#[tokio::test]
async fn a_bandwidth_limit_paces_the_bytes() {
    let mesh = mesh().await;
    mesh.set_faults(
        0,
        1,
        LinkFaults {
            bandwidth_bytes_per_s: Some(32 * 1024),
            ..LinkFaults::default()
        },
    );
    let mut stream = connect(&mesh).await;
    let payload = vec![7u8; 48 * 1024];
    let took = round_trip(&mut stream, &payload).await;
    // 48 KiB at 32 KiB/s: the first segment may leave at once, the rest are paced.
    assert!(took >= Duration::from_millis(1_000), "{took:?}");
    eprintln!("48 KiB through a 32 KiB/s link in {took:?}");
}

#[tokio::test]
async fn a_drop_cut_holds_bytes_and_new_connections_until_the_heal() {
    let mesh = mesh().await;
    let mut stream = connect(&mesh).await;
    round_trip(&mut stream, b"before").await;
    mesh.cut(CutKind::Drop, &link(0, 1));
    stream.write_all(b"during").await.unwrap();
    let mut back = [0u8; 6];
    let early =
        tokio::time::timeout(Duration::from_millis(700), stream.read_exact(&mut back)).await;
    assert!(early.is_err(), "bytes crossed a dropped link");
    // A new connection is accepted but carries nothing.
    let mut fresh = connect(&mesh).await;
    fresh.write_all(b"fresh").await.unwrap();
    let mut fresh_back = [0u8; 5];
    let early = tokio::time::timeout(
        Duration::from_millis(300),
        fresh.read_exact(&mut fresh_back),
    )
    .await;
    assert!(early.is_err(), "a new connection crossed a dropped link");
    let healed = Instant::now();
    mesh.heal();
    tokio::time::timeout(LIVENESS, stream.read_exact(&mut back))
        .await
        .expect("held bytes are delivered after the heal")
        .unwrap();
    assert_eq!(&back, b"during");
    tokio::time::timeout(LIVENESS, fresh.read_exact(&mut fresh_back))
        .await
        .expect("a held connection goes through after the heal")
        .unwrap();
    assert_eq!(&fresh_back, b"fresh");
    eprintln!(
        "held bytes delivered {:?} after the heal (the next retransmission)",
        healed.elapsed()
    );
    round_trip(&mut stream, b"after").await;
}

#[tokio::test]
async fn a_reset_cut_closes_connections_and_refuses_new_ones_until_the_heal() {
    let mesh = mesh().await;
    let mut stream = connect(&mesh).await;
    round_trip(&mut stream, b"before").await;
    // Cutting the far direction is enough: a connection carries both.
    mesh.cut(CutKind::Reset, &link(1, 0));
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(LIVENESS, stream.read(&mut buf))
        .await
        .expect("the connection is closed at once");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let mut refused = connect(&mesh).await;
    let read = tokio::time::timeout(LIVENESS, refused.read(&mut buf))
        .await
        .expect("a new connection is closed at once");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    mesh.heal();
    let mut again = connect(&mesh).await;
    round_trip(&mut again, b"after").await;
}
