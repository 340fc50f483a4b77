//! The userspace link layer: one TCP proxy per directed link between node processes, with
//! per-direction faults (delay and jitter, loss, duplication, reordering, a bandwidth
//! limit) and partitions of two kinds, for any user and any kernel (no root, no netem).
//!
//! **Routing.** Node `i` is configured to reach node `j` only at the proxy for the link
//! `(i, j)`, which forwards to `j`'s replication port. libp2p connections are
//! bidirectional and either side may dial, so the connections between `i` and `j` run
//! through the proxy `(i, j)` (dialled by `i`) or `(j, i)` (dialled by `j`). Faults are
//! keyed by the direction the *bytes* flow, not by who dialled: the faults of the link
//! `(i, j)` apply to every byte `i` sends to `j`, on either proxy. The proxies dial the
//! target from a source address naming the dialling node (`127.0.1.<i+1>`), so a
//! connection that bypasses the proxies shows up as one from `127.0.0.1`
//! (see [`direct_connections`]). The node's transport dials only its bootstrap addresses
//! and sends only to connected peers; libp2p's identify cache could in a race dial a
//! peer's announced (direct) address, which is why the check exists.
//!
//! **What a fault means on TCP.** The proxy terminates TCP on both sides, so it models
//! what TCP would make of packet-level faults, per chunk of bytes read (a "segment", up to
//! [`SEGMENT_BYTES`]), never corrupting the stream:
//! - *delay + jitter*: each segment is delivered `delay_ms` plus a uniform `0..=jitter_ms`
//!   after it was read; TCP delivers in order, so a segment never overtakes an earlier one.
//! - *loss*: TCP never loses bytes. A lost segment is retransmitted after a retransmission
//!   timeout ([`RTO_MIN_MS`], doubling while the retransmission is lost too, with the same
//!   probability), and everything after it on that connection waits behind it
//!   (head-of-line blocking).
//! - *duplication*: the receiver's TCP discards duplicates; a duplicated segment costs
//!   twice its size against the bandwidth limit, and nothing else.
//! - *reordering*: a reordered segment arrives `reorder_delay_ms` late; TCP holds the
//!   later ones until it does (head-of-line delay).
//! - *bandwidth*: a token bucket per directed link (shared by its connections), bytes/s.
//! - *cut*, [`CutKind::Drop`]: like packets silently dropped. Connections stay open; the
//!   bytes sent across the cut are held (up to the proxy's buffer, then the sender's
//!   socket buffers fill and its writes block, as with a real cut). On heal, held bytes
//!   leave at the next retransmission instant of the oldest one (first retransmission
//!   [`RTO_MIN_MS`] after it was sent, doubling, capped at [`RTO_MAX_MS`]), as TCP's
//!   backed-off timer would send them. New connections between the two nodes are accepted
//!   (the kernel completes the handshake before a userspace proxy can refuse) but nothing
//!   is forwarded until the heal, so the dialler's handshake times out, as when SYNs are
//!   dropped. One direction cut is enough to hold new connections: a handshake needs both.
//! - *cut*, [`CutKind::Reset`]: like a blackhole or unreachable route, where the sender
//!   fails at once. Every connection between the two nodes is closed (a connection
//!   carries both directions, so cutting either closes it) and new ones are closed as soon
//!   as they are accepted, until the heal.

use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

// The nemesis's splitmix64: seeded, so a schedule's link faults can be replayed (up to
// the order in which the runtime happens to read segments).
use crate::nemesis::Rng;

/// The largest chunk the proxy reads at once: its unit for loss, reordering and jitter.
pub const SEGMENT_BYTES: usize = 16 * 1024;
/// The first retransmission timeout of the loss model (Linux's minimum RTO).
pub const RTO_MIN_MS: u64 = 200;
/// The cap on one backed-off retransmission interval (Linux's `TCP_RTO_MAX`).
pub const RTO_MAX_MS: u64 = 120_000;
/// Segments a connection's direction may hold before the proxy stops reading (8 MiB).
const QUEUE_SEGMENTS: usize = 512;
/// The bound on the proxy's own connect to the target node.
const CONNECT_TIMEOUT_MS: u64 = 5_000;

/// A directed link: bytes sent by node `.0` to node `.1`.
pub type Link = (usize, usize);

/// How a partition behaves, for both backends (see the module doc and
/// [`crate::netns`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CutKind {
    /// Packets silently discarded: the sender learns nothing and TCP backs off.
    Drop,
    /// No route: the sender's connections fail at once and new ones are refused.
    Reset,
}

/// Per-direction faults of one link (all zero: a perfect link). Probabilities are per
/// segment, in `0.0..=1.0`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LinkFaults {
    pub delay_ms: u64,
    pub jitter_ms: u64,
    /// Chance a segment is lost (and retransmitted after a timeout, see the module doc).
    pub loss: f64,
    /// Chance a segment is duplicated (costs bandwidth only).
    pub duplicate: f64,
    /// Chance a segment arrives `reorder_delay_ms` late, holding the ones behind it.
    pub reorder: f64,
    pub reorder_delay_ms: u64,
    /// A token bucket on the bytes sent this way; `None` is unlimited.
    pub bandwidth_bytes_per_s: Option<u64>,
}

/// The links between two groups of nodes, both ways: every link from a node of `a` to a
/// node of `b` and back. `between(&[2], &[0, 1])` isolates node 2 from nodes 0 and 1.
pub fn between(a: &[usize], b: &[usize]) -> BTreeSet<Link> {
    let mut links = BTreeSet::new();
    for &x in a {
        for &y in b {
            if x != y {
                links.insert((x, y));
                links.insert((y, x));
            }
        }
    }
    links
}

/// Every link of node `node` in a cluster of `nodes`, both ways.
pub fn isolating(node: usize, nodes: usize) -> BTreeSet<Link> {
    let others: Vec<usize> = (0..nodes).filter(|j| *j != node).collect();
    between(&[node], &others)
}

/// True with probability `p` (the link's decisions need fractions of a percent).
fn chance(rng: &mut Rng, p: f64) -> bool {
    p > 0.0 && (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
}

/// The live state of one direction of a link.
struct DirectionState {
    faults: LinkFaults,
    cut: Option<CutKind>,
    /// When the bandwidth bucket is next free to send.
    next_free: Instant,
    rng: Rng,
}

struct Direction {
    state: Mutex<DirectionState>,
    /// Bumped on every change of `faults` or `cut`, to wake held connections.
    changed: watch::Sender<u64>,
}

impl Direction {
    fn new(seed: u64) -> Direction {
        Direction {
            state: Mutex::new(DirectionState {
                faults: LinkFaults::default(),
                cut: None,
                next_free: Instant::now(),
                rng: Rng::new(seed),
            }),
            changed: watch::channel(0).0,
        }
    }

    fn cut(&self) -> Option<CutKind> {
        self.state.lock().expect("link state").cut
    }

    fn update(&self, change: impl FnOnce(&mut DirectionState)) {
        change(&mut self.state.lock().expect("link state"));
        self.changed.send_modify(|generation| *generation += 1);
    }

    /// When a segment of `len` bytes read now is delivered, at the earliest.
    fn schedule(&self, len: usize, now: Instant) -> Instant {
        let mut state = self.state.lock().expect("link state");
        let faults = state.faults.clone();
        let jitter_ms = state.rng.range(0, faults.jitter_ms + 1);
        let mut at = now + Duration::from_millis(faults.delay_ms + jitter_ms);
        if chance(&mut state.rng, faults.loss) {
            let mut rto_ms = RTO_MIN_MS;
            let mut waited_ms = rto_ms;
            while chance(&mut state.rng, faults.loss) && waited_ms < RTO_MAX_MS {
                rto_ms = (rto_ms * 2).min(RTO_MAX_MS);
                waited_ms += rto_ms;
            }
            at += Duration::from_millis(waited_ms);
        }
        if chance(&mut state.rng, faults.reorder) {
            at += Duration::from_millis(faults.reorder_delay_ms);
        }
        if let Some(rate) = faults.bandwidth_bytes_per_s.filter(|r| *r > 0) {
            let copies = if chance(&mut state.rng, faults.duplicate) {
                2
            } else {
                1
            };
            let cost = Duration::from_secs_f64((len * copies) as f64 / rate as f64);
            let start = state.next_free.max(now);
            state.next_free = start + cost;
            at = at.max(state.next_free);
        }
        at
    }
}

/// Both directions of the pair a connection between `a` and `b` carries.
#[derive(Clone)]
struct Pair {
    forward: Arc<Direction>,
    backward: Arc<Direction>,
}

impl Pair {
    fn cut(&self) -> Option<CutKind> {
        match (self.forward.cut(), self.backward.cut()) {
            (Some(CutKind::Reset), _) | (_, Some(CutKind::Reset)) => Some(CutKind::Reset),
            (Some(CutKind::Drop), _) | (_, Some(CutKind::Drop)) => Some(CutKind::Drop),
            (None, None) => None,
        }
    }
}

/// The proxies of a cluster: one per directed link, all on loopback.
pub struct LinkMesh {
    nodes: usize,
    directions: HashMap<Link, Arc<Direction>>,
    ports: HashMap<Link, u16>,
    listeners: Vec<JoinHandle<()>>,
}

impl LinkMesh {
    /// Starts a proxy for every directed link between `targets.len()` nodes; the proxy
    /// for `(i, j)` forwards to `targets[j]` (node `j`'s replication port on loopback).
    /// `seed` seeds the fault decisions of every direction.
    pub async fn start(targets: &[u16], seed: u64) -> std::io::Result<LinkMesh> {
        let nodes = targets.len();
        let mut mesh = LinkMesh {
            nodes,
            directions: HashMap::new(),
            ports: HashMap::new(),
            listeners: Vec::new(),
        };
        for i in 0..nodes {
            for j in (0..nodes).filter(|j| *j != i) {
                let salt = (i * nodes + j) as u64;
                mesh.directions.insert(
                    (i, j),
                    Arc::new(Direction::new(
                        seed ^ salt.wrapping_mul(0xa076_1d64_78bd_642f),
                    )),
                );
            }
        }
        for i in 0..nodes {
            for j in (0..nodes).filter(|j| *j != i) {
                let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
                mesh.ports.insert((i, j), listener.local_addr()?.port());
                let pair = Pair {
                    forward: mesh.directions[&(i, j)].clone(),
                    backward: mesh.directions[&(j, i)].clone(),
                };
                let source = dialler_address(i);
                let target = SocketAddrV4::new(Ipv4Addr::LOCALHOST, targets[j]);
                mesh.listeners
                    .push(tokio::spawn(serve(listener, pair, source, target)));
            }
        }
        Ok(mesh)
    }

    /// Every proxy's listening port.
    pub fn ports(&self) -> Vec<u16> {
        self.ports.values().copied().collect()
    }

    /// The loopback port node `from` dials to reach node `to`.
    pub fn port(&self, from: usize, to: usize) -> u16 {
        self.ports[&(from, to)]
    }

    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// Sets the faults of the bytes `from` sends to `to` (replacing the previous ones).
    pub fn set_faults(&self, from: usize, to: usize, faults: LinkFaults) {
        self.directions[&(from, to)].update(|s| s.faults = faults);
    }

    /// Cuts every link in `links` (directed) with `kind`, keeping other links as they are.
    pub fn cut(&self, kind: CutKind, links: &BTreeSet<Link>) {
        for link in links {
            self.directions[link].update(|s| s.cut = Some(kind));
        }
    }

    /// Removes the cut from every link in `links` (directed), keeping the other cuts and
    /// every link's faults: a partial heal.
    pub fn uncut(&self, links: &BTreeSet<Link>) {
        for link in links {
            self.directions[link].update(|s| s.cut = None);
        }
    }

    /// Restores every link: no cut, no faults.
    pub fn heal(&self) {
        for direction in self.directions.values() {
            direction.update(|s| {
                s.cut = None;
                s.faults = LinkFaults::default();
            });
        }
    }

    /// Removes the cuts only, keeping delay, loss and the other faults.
    pub fn heal_cuts(&self) {
        for direction in self.directions.values() {
            direction.update(|s| s.cut = None);
        }
    }
}

impl Drop for LinkMesh {
    fn drop(&mut self) {
        for listener in &self.listeners {
            listener.abort();
        }
    }
}

/// The source address the proxies use when dialling on behalf of node `node`.
pub fn dialler_address(node: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 1, (node + 1) as u8)
}

async fn serve(listener: TcpListener, pair: Pair, source: Ipv4Addr, target: SocketAddrV4) {
    while let Ok((inbound, _)) = listener.accept().await {
        let pair = pair.clone();
        tokio::spawn(connection(inbound, pair, source, target));
    }
}

/// Waits until the pair is not cut with [`CutKind::Drop`]; false when it is (or becomes)
/// cut with [`CutKind::Reset`], or the client gives up first. What the client sends
/// meanwhile is kept in `held` (up to [`SEGMENT_BYTES`]), so a client that closes is
/// noticed and its socket freed instead of piling up through a long cut.
async fn wait_until_not_dropped(pair: &Pair, inbound: &mut TcpStream, held: &mut Vec<u8>) -> bool {
    let mut forward = pair.forward.changed.subscribe();
    let mut backward = pair.backward.changed.subscribe();
    let mut buf = vec![0u8; SEGMENT_BYTES];
    loop {
        match pair.cut() {
            None => return true,
            Some(CutKind::Reset) => return false,
            Some(CutKind::Drop) => {}
        }
        let room = SEGMENT_BYTES.saturating_sub(held.len());
        tokio::select! {
            _ = forward.changed() => {}
            _ = backward.changed() => {}
            read = inbound.read(&mut buf[..room]), if room > 0 => match read {
                Ok(0) | Err(_) => return false,
                Ok(n) => held.extend_from_slice(&buf[..n]),
            },
        }
    }
}

async fn connection(mut inbound: TcpStream, pair: Pair, source: Ipv4Addr, target: SocketAddrV4) {
    // A new connection needs both directions: held while either is dropped, closed at
    // once while either is reset.
    let mut held = Vec::new();
    if !wait_until_not_dropped(&pair, &mut inbound, &mut held).await {
        return;
    }
    let outbound = tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), async {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::V4(SocketAddrV4::new(source, 0)))?;
        let mut outbound = socket.connect(SocketAddr::V4(target)).await?;
        // What arrived while the connection was held goes first, at the heal.
        outbound.write_all(&held).await?;
        Ok::<_, std::io::Error>(outbound)
    })
    .await;
    let Ok(Ok(outbound)) = outbound else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (inbound_read, inbound_write) = inbound.into_split();
    let (outbound_read, outbound_write) = outbound.into_split();
    let mut tasks = Vec::new();
    tasks.extend(pump(inbound_read, outbound_write, pair.forward.clone()));
    tasks.extend(pump(outbound_read, inbound_write, pair.backward.clone()));
    let aborts: Vec<_> = tasks.iter().map(JoinHandle::abort_handle).collect();
    let mut forward = pair.forward.changed.subscribe();
    let mut backward = pair.backward.changed.subscribe();
    let all_done = async {
        for task in tasks {
            let _ = task.await;
        }
    };
    tokio::pin!(all_done);
    loop {
        tokio::select! {
            _ = &mut all_done => return,
            _ = forward.changed() => {}
            _ = backward.changed() => {}
        }
        if pair.cut() == Some(CutKind::Reset) {
            break;
        }
    }
    // A reset: abort both directions; dropping the halves closes both sockets.
    for abort in aborts {
        abort.abort();
    }
}

/// One direction of one connection: a reader that schedules each segment, and a writer
/// that delivers it at its time, holding everything while the direction is dropped.
fn pump(from: OwnedReadHalf, to: OwnedWriteHalf, direction: Arc<Direction>) -> [JoinHandle<()>; 2] {
    let (queue, segments) = mpsc::channel::<(Instant, Instant, Vec<u8>)>(QUEUE_SEGMENTS);
    let reader = tokio::spawn(read_segments(from, direction.clone(), queue));
    let writer = tokio::spawn(write_segments(to, direction, segments));
    [reader, writer]
}

async fn read_segments(
    mut from: OwnedReadHalf,
    direction: Arc<Direction>,
    queue: mpsc::Sender<(Instant, Instant, Vec<u8>)>,
) {
    let mut buf = vec![0u8; SEGMENT_BYTES];
    let mut last = Instant::now();
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let now = Instant::now();
                // In order: a segment never overtakes the one before it.
                last = direction.schedule(n, now).max(last);
                if queue.send((now, last, buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn write_segments(
    mut to: OwnedWriteHalf,
    direction: Arc<Direction>,
    mut segments: mpsc::Receiver<(Instant, Instant, Vec<u8>)>,
) {
    let mut changes = direction.changed.subscribe();
    // The earliest time the next segment may leave (a retransmission after a heal holds
    // the ones behind it too).
    let mut not_before = Instant::now();
    while let Some((sent, at, bytes)) = segments.recv().await {
        let mut at = at.max(not_before);
        loop {
            tokio::time::sleep_until(at).await;
            if direction.cut() != Some(CutKind::Drop) {
                break;
            }
            while direction.cut() == Some(CutKind::Drop) {
                if changes.changed().await.is_err() {
                    return;
                }
            }
            at = at.max(next_retransmission(sent, Instant::now()));
        }
        not_before = at;
        if to.write_all(&bytes).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}

/// The first instant at or after `now` at which TCP retransmits a segment first sent at
/// `sent`: `sent + 200 ms`, then intervals doubling (capped at [`RTO_MAX_MS`]).
pub fn next_retransmission(sent: Instant, now: Instant) -> Instant {
    let mut at = sent;
    let mut interval_ms = RTO_MIN_MS;
    loop {
        at += Duration::from_millis(interval_ms);
        if at >= now {
            return at;
        }
        interval_ms = (interval_ms * 2).min(RTO_MAX_MS);
    }
}

/// Established TCP connections on any of `p2p_ports` that do not involve a proxy: a
/// node bypassing the link layer, as `(local port, remote address)`. A proxied
/// connection's far end is either a proxy's listening port (the dialling node's side;
/// libp2p dials from its listen port) or a [`dialler_address`] (the accepting node's
/// side). Read from `/proc/net/tcp`; empty where it is absent.
pub fn direct_connections(p2p_ports: &[u16], proxy_ports: &[u16]) -> Vec<(u16, SocketAddrV4)> {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // sl local_address rem_address st ...; state 01 is ESTABLISHED.
        let (Some(local), Some(remote), Some(&"01")) =
            (fields.get(1), fields.get(2), fields.get(3))
        else {
            continue;
        };
        let (Some(local), Some(remote)) = (parse_proc_addr(local), parse_proc_addr(remote)) else {
            continue;
        };
        let proxied =
            remote.ip().octets()[..3] == [127, 0, 1] || proxy_ports.contains(&remote.port());
        if p2p_ports.contains(&local.port()) && !proxied {
            found.push((local.port(), remote));
        }
    }
    found
}

/// `0100007F:1F90` (address in host byte order as hex, port in hex) → 127.0.0.1:8080.
fn parse_proc_addr(text: &str) -> Option<SocketAddrV4> {
    let (ip, port) = text.split_once(':')?;
    let ip = u32::from_str_radix(ip, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(SocketAddrV4::new(Ipv4Addr::from(ip.to_le_bytes()), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retransmissions_back_off_from_the_send() {
        let sent = Instant::now();
        let ms = |m| sent + Duration::from_millis(m);
        assert_eq!(next_retransmission(sent, sent), ms(200));
        assert_eq!(next_retransmission(sent, ms(201)), ms(600));
        assert_eq!(next_retransmission(sent, ms(1_000)), ms(1_400));
        assert_eq!(next_retransmission(sent, ms(10_000)), ms(12_600));
    }

    #[test]
    fn proc_addresses_parse_in_host_order() {
        assert_eq!(
            parse_proc_addr("0100007F:1F90"),
            Some(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080))
        );
        assert_eq!(
            parse_proc_addr("0201007F:0050"),
            Some(SocketAddrV4::new(Ipv4Addr::new(127, 0, 1, 2), 80))
        );
    }

    #[test]
    fn partitions_name_both_directions() {
        assert_eq!(
            isolating(2, 3),
            BTreeSet::from([(0, 2), (1, 2), (2, 0), (2, 1)])
        );
        assert_eq!(between(&[0], &[0, 1]), BTreeSet::from([(0, 1), (1, 0)]));
    }
}
