//! The libp2p transport that drives the protocol core between processes (feature `net`).
//!
//! This is the only part of the crate that does IO, reads a clock or runs on tokio; the
//! core ([`crate::node`]) never sees any of it. Shape:
//! - **Transport**: TCP, then the private-network handshake with the 32-byte cluster key
//!   (`pnet`: a peer without the key cannot even start noise), then noise, then yamux. No
//!   QUIC listener exists (pnet cannot protect QUIC, so one would bypass the key).
//! - **Identity**: an ed25519 keypair persisted by the caller; a node's [`NodeId`] is a
//!   hash of its peer id ([`node_id_of`]), so whatever a peer sends is attributed to the
//!   node its key proves it is, and a node that loses its key comes back as a new node.
//! - **Behaviours**: identify; request-response (cbor frames holding encoded
//!   [`Message`]s, answered with an empty ack) for [`Output::Send`], to a connected peer
//!   or, dialled from its advertised address, to a member beyond the mesh; dials for
//!   [`Output::Connect`]; optional mDNS; per-address admission of inbound connections
//!   ([`admission`]) and global connection limits. No gossipsub: the core disseminates
//!   by itself (epidemic push over its mesh, see [`crate::node`]), so what the simulator
//!   measures is what runs; the node's own [`Node::set_address`] is kept current from the
//!   listeners (or `advertise`).
//! - **Loop**: one task owns the swarm and the shared [`Node`]: it feeds swarm events and
//!   ticks (at [`Node::next_wakeup_ms`]) into the node and sends its outputs; local
//!   operations lock the node and call [`NetHandle::wake`] so their pushes leave at once.
//! - **Hostile peers**: every frame is size-capped by the codec and decoded with [`Message::decode`]; a refused frame changes nothing and is counted, and
//!   a peer that sends `garbage_max` refused frames is disconnected. Before any of that,
//!   inbound connections are admitted per remote address ([`admission`]): a few handshakes
//!   in progress and a bounded number of established connections per address (the global
//!   pending cap is larger, so one address cannot fill it), every inbound handshake bounded
//!   by `handshake_timeout_ms`, and an address whose handshakes keep failing (no key,
//!   garbage, silence) refused at once for a growing, jittered backoff that decays when it
//!   behaves; refusals are counted in [`NetStats::admission`]. Without this, sockets held
//!   open from one keyless host filled the pending cap and kept restarting peers out.
//! - **Liveness**: every connection is pinged every `ping_interval_ms` (500 ms), and one
//!   that has answered no ping for `liveness_timeout_ms` (1.5 s) is closed and its peer
//!   reported disconnected at once (a peer that does not speak ping is exempt). TCP alone
//!   cannot tell: through a partition that drops packets a connection stays open, every
//!   peer looked connected, and after the heal the nodes waited on TCP's retransmission
//!   backoff (12-20 s); a cut-off node also made quota requests wait for transfers that
//!   could not come. A stall of the transport's own loop is no evidence against its
//!   peers: it extends their deadlines.
//! - **Bootstrap**: configured addresses are dialled, and redialled when not connected,
//!   with jittered exponential backoff, capped at `redial_max_ms` (30 s) for an address
//!   that never answered and at `redial_lost_max_ms` (500 ms) for one whose peer was
//!   connected before, so a healed link is used again within about a second however long
//!   the partition lasted; a lost peer is redialled at once. Every dial is bounded by
//!   `dial_timeout_ms` (a dial into a silent network cannot hold the link back) and a few
//!   may be in flight per address. The exchange on connect ([`Input::PeerConnected`]
//!   makes the node sync with the peer) repairs what the partition held back; a peer that
//!   loses one of its connections and keeps another is reported ([`Input::ConnectionLost`])
//!   so the exchange starts again: what went out on the closed one is lost. Beyond the
//!   bootstrap list, the core asks for connections to members it learned of
//!   ([`Output::Connect`]): one bootstrap address is enough.
//! - **Clock**: the node's clock is the wall clock plus `clock_offset_ms` (0 but in fault
//!   tests that skew one node).
//! - **Durability**: with a [`DurabilityGate`], outputs that may reflect the node's own
//!   changes leave only once the store says those changes are durable (a transfer sent
//!   and then forgotten by a crash would hand out the same rights twice; an increment
//!   pushed and then lost would reuse its sequence number).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use libp2p::connection_limits::{self, ConnectionLimits};
use libp2p::core::transport::timeout::TransportTimeout;
use libp2p::core::upgrade::Version;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{
    identify, identity, mdns, noise, ping, tcp, yamux, StreamProtocol, Swarm, SwarmBuilder,
    Transport,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::{watch, Notify};

pub use libp2p::identity::Keypair;
pub use libp2p::{Multiaddr, PeerId};

use crate::escrow_digest::{fnv1a, FNV_OFFSET};
use crate::membership::ADDR_BYTES_MAX;
use crate::message::Message;
use crate::node::{Input, Node, Output};
use crate::rng::{mix, Rng};
use tessera_crdt::NodeId;

pub mod admission;

pub use admission::{AdmissionSettings, AdmissionStats};

const PROTOCOL: StreamProtocol = StreamProtocol::new("/tessera/sync/1");
const IDENTIFY_PROTOCOL: &str = "/tessera/id/1";
/// Dials to one bootstrap address that may be in flight at once (redials overlap when the
/// dial timeout is longer than the redial interval, so one dial lost in a silent network
/// does not hold the link back until it times out). No more than the peer's admission
/// lets one address hold in its handshake (`pending_per_ip_max`, 4 by default).
const DIALS_IN_FLIGHT_MAX: usize = 4;

/// Transport settings (the edge fills them from its config).
#[derive(Clone, Debug)]
pub struct NetSettings {
    pub listen: Vec<Multiaddr>,
    /// Addresses advertised to other members (the membership table carries them, so a
    /// node found by gossip can be dialled). Empty: the concrete addresses the listeners
    /// report, routable ones before loopback.
    pub advertise: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    pub cluster_key: [u8; 32],
    pub mdns: bool,
    /// Largest frame accepted or sent.
    pub message_bytes_max: usize,
    /// How long a frame sent may wait for its ack (a frame on a connection found dead
    /// fails as soon as the connection is closed).
    pub request_timeout_ms: u64,
    pub connections_max: u32,
    /// A bootstrap address is redialled after this long, doubling with jitter while it
    /// stays unreachable...
    pub redial_base_ms: u64,
    /// ...up to this long for an address that never answered...
    pub redial_max_ms: u64,
    /// ...and up to this long for one whose peer was connected before: a lost link
    /// (partition, restart) must be used again within about this long after it heals.
    pub redial_lost_max_ms: u64,
    /// How long a dial (TCP connect and the whole handshake) may take.
    pub dial_timeout_ms: u64,
    /// How often every connection is pinged.
    pub ping_interval_ms: u64,
    /// A connection that answered no ping for this long is closed and its peer reported
    /// disconnected (longer than `ping_interval_ms` plus a round trip, with margin for a
    /// loaded machine).
    pub liveness_timeout_ms: u64,
    /// Added to the wall clock to make the node's clock (a per-node skew in fault tests;
    /// 0 in production).
    pub clock_offset_ms: i64,
    /// Refused frames from one peer before it is disconnected.
    pub garbage_max: u32,
    /// Bounds on inbound connections per remote address, the inbound handshake timeout and
    /// the backoff of addresses whose handshakes fail (defaults in
    /// [`AdmissionSettings::default`]).
    pub admission: AdmissionSettings,
}

impl NetSettings {
    pub fn new(cluster_key: [u8; 32]) -> NetSettings {
        NetSettings {
            listen: vec!["/ip4/0.0.0.0/tcp/7400".parse().expect("valid multiaddr")],
            advertise: Vec::new(),
            bootstrap: Vec::new(),
            cluster_key,
            mdns: false,
            message_bytes_max: 1 << 20,
            request_timeout_ms: 5_000,
            connections_max: 64,
            redial_base_ms: 500,
            redial_max_ms: 30_000,
            redial_lost_max_ms: 500,
            dial_timeout_ms: 2_000,
            ping_interval_ms: 500,
            liveness_timeout_ms: 1_500,
            clock_offset_ms: 0,
            garbage_max: 16,
            admission: AdmissionSettings::default(),
        }
    }
}

#[derive(Debug, Error)]
pub enum NetError {
    #[error("building the libp2p swarm: {0}")]
    Build(String),
    #[error("listening on {addr}: {reason}")]
    Listen { addr: Multiaddr, reason: String },
    #[error("transport settings: {0}")]
    Settings(&'static str),
}

/// What the loop counted, for metrics and tests.
#[derive(Clone, Debug, Default)]
pub struct NetStats {
    /// By message kind: (messages, bytes).
    pub sent: BTreeMap<&'static str, (u64, u64)>,
    pub received: BTreeMap<&'static str, (u64, u64)>,
    pub refused_frames: u64,
    pub disconnected_for_garbage: u64,
    pub peers_connected: usize,
    /// Connections closed because they answered no ping within `liveness_timeout_ms`.
    pub connections_dead: u64,
    /// Established connections the swarm still holds, including dead ones whose close is
    /// under way (more than the live peers need for long means closes hang, and frames
    /// may still be routed onto dead connections).
    pub connections_open: u32,
    pub listen_addrs: Vec<Multiaddr>,
    /// By peer: (messages sent to it, messages received from it). Gossip counts once per
    /// publish on the sending side and once per delivery on the receiving side.
    pub per_peer: BTreeMap<NodeId, (u64, u64)>,
    /// Output batches dropped because the store did not make them durable in time.
    pub held_back: u64,
    /// Messages not sent because their encoding is over `message_bytes_max` (an error,
    /// logged: the core cuts its messages below its own `SyncConfig::message_bytes_max`,
    /// so this means the two caps disagree).
    pub messages_oversize: u64,
    /// Inbound connections refused per address, failed handshakes, backoffs.
    pub admission: AdmissionStats,
    /// Dials the core asked for to fill its mesh ([`Output::Connect`]) and dials or sends
    /// skipped because the member's advertised address was missing or unreadable.
    pub mesh_dials: u64,
    pub members_unreachable: u64,
    /// Connections closed because the node held more than twice `mesh_peers`.
    pub mesh_prunes: u64,
}

/// A member's address as the membership table carries it: one multiaddr per line, each
/// ending in `/p2p/<peer id>`, as many as fit in [`ADDR_BYTES_MAX`] bytes.
pub fn encode_member_addr(peer: &PeerId, addrs: &[Multiaddr]) -> Vec<u8> {
    let mut out = String::new();
    for addr in addrs {
        let line = format!("{}/p2p/{peer}", strip_p2p(addr));
        if out.len() + line.len() + 1 > ADDR_BYTES_MAX {
            break;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&line);
    }
    out.into_bytes()
}

/// Reads [`encode_member_addr`]'s encoding: the peer and its dialable addresses (`None`
/// if empty, unreadable, or naming different peers).
pub fn decode_member_addr(bytes: &[u8]) -> Option<(PeerId, Vec<Multiaddr>)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut peer = None;
    let mut addrs = Vec::new();
    for line in text.lines() {
        let addr: Multiaddr = line.parse().ok()?;
        let found = addr.iter().find_map(|p| match p {
            libp2p::multiaddr::Protocol::P2p(peer) => Some(peer),
            _ => None,
        })?;
        if peer.is_some_and(|p| p != found) {
            return None;
        }
        peer = Some(found);
        addrs.push(strip_p2p(&addr));
    }
    Some((peer?, addrs))
}

/// The addresses to advertise: the configured ones, else the listeners' concrete ones,
/// routable before loopback (a peer on another host cannot use loopback; one on this host
/// can use either).
fn advertised(settings: &NetSettings, listening: &[Multiaddr]) -> Vec<Multiaddr> {
    if !settings.advertise.is_empty() {
        return settings.advertise.clone();
    }
    let loopback = |addr: &Multiaddr| {
        addr.iter().any(|p| match p {
            libp2p::multiaddr::Protocol::Ip4(ip) => ip.is_loopback() || ip.is_unspecified(),
            libp2p::multiaddr::Protocol::Ip6(ip) => ip.is_loopback() || ip.is_unspecified(),
            _ => false,
        })
    };
    let unspecified = |addr: &Multiaddr| {
        addr.iter().any(|p| match p {
            libp2p::multiaddr::Protocol::Ip4(ip) => ip.is_unspecified(),
            libp2p::multiaddr::Protocol::Ip6(ip) => ip.is_unspecified(),
            _ => false,
        })
    };
    let mut out: Vec<Multiaddr> = listening.iter().filter(|a| !loopback(a)).cloned().collect();
    out.extend(
        listening
            .iter()
            .filter(|a| loopback(a) && !unspecified(a))
            .cloned(),
    );
    out
}

/// Holds outputs back until the node's own changes they may reflect are durable.
#[derive(Clone, Debug)]
pub struct DurabilityGate {
    /// Asks the store to write what is pending now.
    pub request: Arc<Notify>,
    /// The highest [`Node::own_changes`] count known durable.
    pub durable: watch::Receiver<u64>,
    /// How long one batch of outputs may wait; past it the batch is dropped (a store that
    /// cannot write must not let state it may lose leave the node).
    pub wait_ms: u64,
}

/// A frame: one encoded [`Message`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Frame(#[serde(with = "serde_bytes_vec")] pub Vec<u8>);

/// The empty answer to a frame (delivery is acknowledged; replies are frames of their own).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ack;

/// Frames travel as a cbor byte string (not an array of numbers, which serde's default
/// for `Vec<u8>` would produce at up to twice the size).
mod serde_bytes_vec {
    use std::fmt;

    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
            Ok(bytes.to_vec())
        }

        fn visit_byte_buf<E: Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(bytes)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_byte_buf(BytesVisitor)
    }
}

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// First: an address in backoff is refused before any other behaviour counts it.
    admission: admission::Behaviour,
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    frames: request_response::cbor::Behaviour<Frame, Ack>,
    mdns: Toggle<mdns::tokio::Behaviour>,
}

/// The node id a peer id stands for: a fixed hash of the peer id's bytes.
pub fn node_id_of(peer: &PeerId) -> NodeId {
    NodeId(mix(fnv1a(&peer.to_bytes(), FNV_OFFSET)))
}

/// The transport's random seed: the node id mixed with the start time, so restarts and
/// nodes differ.
fn rng_seed(node_id: NodeId) -> u64 {
    mix(node_id.0) ^ now_ms()
}

/// Builds the swarm: TCP + pnet + noise + yamux, and the behaviours above.
pub fn build_swarm(
    keypair: identity::Keypair,
    settings: &NetSettings,
) -> Result<Swarm<Behaviour>, NetError> {
    let bounds = settings.admission.clone();
    if bounds.pending_incoming_max <= bounds.pending_per_ip_max {
        return Err(NetError::Settings(
            "pending_incoming_max must exceed pending_per_ip_max (one address could fill it)",
        ));
    }
    if settings.ping_interval_ms == 0 || settings.liveness_timeout_ms <= settings.ping_interval_ms {
        return Err(NetError::Settings(
            "liveness_timeout_ms must exceed a nonzero ping_interval_ms (live peers would be cut)",
        ));
    }
    let handshake_timeout = Duration::from_millis(bounds.handshake_timeout_ms);
    let dial_timeout = Duration::from_millis(settings.dial_timeout_ms);
    let ping_config = ping::Config::new()
        .with_interval(Duration::from_millis(settings.ping_interval_ms))
        .with_timeout(Duration::from_millis(settings.liveness_timeout_ms));
    let admission_seed = !rng_seed(node_id_of(&keypair.public().to_peer_id()));
    let psk = PreSharedKey::new(settings.cluster_key);
    let bytes_max = settings.message_bytes_max;
    let request_timeout = Duration::from_millis(settings.request_timeout_ms);
    let connections_max = settings.connections_max;
    let mdns_on = settings.mdns;
    let build = |e: &dyn std::fmt::Display| NetError::Build(e.to_string());
    let swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_other_transport(
            |key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                let noise_config = noise::Config::new(key)?;
                let upgraded = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                    // The cluster key first: without it nothing else of the stack is reached.
                    .and_then(move |socket, _| PnetConfig::new(psk).handshake(socket))
                    .upgrade(Version::V1Lazy)
                    .authenticate(noise_config)
                    .multiplex(yamux::Config::default());
                // An accepted socket must finish the whole stack within the handshake
                // timeout, a dial within the dial timeout.
                Ok(TransportTimeout::with_ingoing_timeout(
                    TransportTimeout::with_outgoing_timeout(upgraded, dial_timeout),
                    handshake_timeout,
                ))
            },
        )
        .map_err(|e| build(&e))?
        .with_behaviour(
            |key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                let identify = identify::Behaviour::new(
                    identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), key.public())
                        .with_agent_version(format!("tessera/{}", env!("CARGO_PKG_VERSION"))),
                );
                let codec = request_response::cbor::codec::Codec::<Frame, Ack>::default()
                    .set_request_size_maximum(bytes_max as u64 + 64)
                    .set_response_size_maximum(64);
                let frames = request_response::cbor::Behaviour::with_codec(
                    codec,
                    [(PROTOCOL, ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(request_timeout)
                        .with_max_concurrent_streams(64),
                );
                let mdns = if mdns_on {
                    Some(mdns::tokio::Behaviour::new(
                        mdns::Config::default(),
                        key.public().to_peer_id(),
                    )?)
                } else {
                    None
                };
                let limits = connection_limits::Behaviour::new(
                    ConnectionLimits::default()
                        .with_max_pending_incoming(Some(bounds.pending_incoming_max))
                        .with_max_pending_outgoing(Some(64))
                        .with_max_established(Some(connections_max))
                        .with_max_established_per_peer(Some(2)),
                );
                Ok(Behaviour {
                    admission: admission::Behaviour::new(bounds, admission_seed),
                    limits,
                    identify,
                    ping: ping::Behaviour::new(ping_config),
                    frames,
                    mdns: Toggle::from(mdns),
                })
            },
        )
        .map_err(|e| build(&e))?
        // The core manages its mesh (and sends on it every few seconds); a connection
        // made for a request beyond the mesh is closed after this long unused.
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
        // The outer bound; the transport above bounds each direction more tightly.
        .with_connection_timeout(dial_timeout.max(handshake_timeout))
        .build();
    Ok(swarm)
}

/// Sends one raw frame to `peer` on a swarm built by [`build_swarm`] (what the driver does
/// for [`Output::Send`]; exposed for tools and tests that speak the wire directly).
pub fn send_frame(swarm: &mut Swarm<Behaviour>, peer: &PeerId, frame: Frame) {
    swarm.behaviour_mut().frames.send_request(peer, frame);
}

/// The running transport: wake it after a local operation, read its stats, stop it.
#[derive(Clone)]
pub struct NetHandle {
    wake: Arc<Notify>,
    stats: Arc<Mutex<NetStats>>,
    stop: watch::Sender<bool>,
    rights: watch::Receiver<u64>,
    pub peer_id: PeerId,
    pub node_id: NodeId,
}

impl NetHandle {
    /// Call after a local operation on the node so its outputs leave now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn stats(&self) -> NetStats {
        self.stats.lock().expect("stats lock").clone()
    }

    /// [`Node::rights_epoch`] as of the last input the transport handed the node: it
    /// changes when rights arrive from a peer, so a request waiting for rights waits on
    /// it (mark it seen, try, then wait for a change) instead of polling the node.
    pub fn rights_arrivals(&self) -> watch::Receiver<u64> {
        self.rights.clone()
    }

    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One bootstrap address's redial state.
struct Redial {
    addr: Multiaddr,
    /// The peer the address stands for: from its `/p2p/` part, else learned from the
    /// first dial that reached it (an inbound connection from it counts as connected).
    expected: Option<PeerId>,
    /// The peer connected through (or as) this address, while connected.
    peer: Option<PeerId>,
    /// Whether a peer was ever connected through this address (its backoff is then
    /// capped at `redial_lost_max_ms`).
    known: bool,
    failures: u32,
    next_ms: u64,
    in_flight: Vec<ConnectionId>,
}

impl Redial {
    fn new(addr: &Multiaddr) -> Redial {
        let expected = addr.iter().find_map(|p| match p {
            libp2p::multiaddr::Protocol::P2p(peer) => Some(peer),
            _ => None,
        });
        Redial {
            addr: addr.clone(),
            expected,
            peer: None,
            known: false,
            failures: 0,
            next_ms: 0,
            in_flight: Vec::new(),
        }
    }
}

/// One established connection's liveness.
struct Liveness {
    peer: PeerId,
    /// When it last answered a ping (or was established).
    alive_ms: u64,
    /// False once the peer said it does not speak ping: exempt from the check.
    pinged: bool,
}

/// Starts the transport for `node` (whose id must be [`node_id_of`] the keypair's peer
/// id) on the current tokio runtime and returns its handle once it listens.
pub async fn spawn(
    keypair: identity::Keypair,
    settings: NetSettings,
    node: Arc<Mutex<Node>>,
    gate: Option<DurabilityGate>,
) -> Result<NetHandle, NetError> {
    let peer_id = keypair.public().to_peer_id();
    let node_id = node_id_of(&peer_id);
    let mut swarm = build_swarm(keypair, &settings)?;
    for addr in &settings.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| NetError::Listen {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
    }
    let stats = Arc::new(Mutex::new(NetStats::default()));
    // Wait for the listeners to have addresses, so callers can hand them to peers.
    while stats.lock().expect("stats lock").listen_addrs.len() < settings.listen.len() {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            stats.lock().expect("stats lock").listen_addrs.push(address);
        }
    }
    {
        let listening = stats.lock().expect("stats lock").listen_addrs.clone();
        let addr = encode_member_addr(&peer_id, &advertised(&settings, &listening));
        node.lock().expect("node lock").set_address(addr);
    }
    let wake = Arc::new(Notify::new());
    let (stop, stopped) = watch::channel(false);
    let (rights_tx, rights) = watch::channel(node.lock().expect("node lock").rights_epoch());
    let handle = NetHandle {
        wake: wake.clone(),
        stats: stats.clone(),
        stop,
        rights,
        peer_id,
        node_id,
    };
    let redials = settings.bootstrap.iter().map(Redial::new).collect();
    let mesh_peers = node.lock().expect("node lock").config().mesh_peers;
    let driver = Driver {
        swarm,
        node,
        settings,
        stats,
        peers: BTreeMap::new(),
        connections: BTreeMap::new(),
        garbage: BTreeMap::new(),
        redials,
        rng: Rng::new(rng_seed(node_id)),
        gate,
        mesh_peers,
        touched: true,
        rights: rights_tx,
    };
    tokio::spawn(driver.run(wake, stopped));
    Ok(handle)
}

struct Driver {
    swarm: Swarm<Behaviour>,
    node: Arc<Mutex<Node>>,
    settings: NetSettings,
    stats: Arc<Mutex<NetStats>>,
    /// Connected peers by node id, with their count of live connections.
    peers: BTreeMap<NodeId, (PeerId, u32)>,
    /// Live connections: established, not closed and not found dead.
    connections: BTreeMap<ConnectionId, Liveness>,
    garbage: BTreeMap<PeerId, u32>,
    redials: Vec<Redial>,
    rng: Rng,
    gate: Option<DurabilityGate>,
    /// The core's `mesh_peers` (read once).
    mesh_peers: usize,
    /// The node may have changed since its outputs and next wakeup were last read (an
    /// input, a tick or a local operation). Swarm events that never reach the node, such
    /// as a flood of refused connections, then cost no node lock.
    touched: bool,
    /// Publishes [`Node::rights_epoch`] after each input (see [`NetHandle::rights_arrivals`]).
    rights: watch::Sender<u64>,
}

impl Driver {
    async fn run(mut self, wake: Arc<Notify>, mut stopped: watch::Receiver<bool>) {
        let mut wakeup = 0;
        loop {
            self.redial();
            if std::mem::take(&mut self.touched) {
                wakeup = self.node.lock().expect("node lock").next_wakeup_ms();
            }
            let redial_at = self
                .redials
                .iter()
                .filter(|r| r.peer.is_none())
                .map(|r| r.next_ms)
                .min()
                .unwrap_or(u64::MAX);
            let dead_at = self
                .connections
                .values()
                .filter(|c| c.pinged)
                .map(|c| c.alive_ms + self.settings.liveness_timeout_ms + 1)
                .min()
                .unwrap_or(u64::MAX);
            let sleep_ms = wakeup
                .min(redial_at)
                .min(dead_at)
                .saturating_sub(self.now_ms())
                .min(1_000);
            let due_ms = self.now_ms() + sleep_ms;
            tokio::select! {
                event = self.swarm.select_next_some() => {
                    self.on_event(event);
                    let admission = self.swarm.behaviour().admission.stats();
                    let open = self.swarm.network_info().connection_counters().num_established();
                    let mut stats = self.stats.lock().expect("stats lock");
                    stats.admission = admission;
                    stats.connections_open = open;
                }
                () = tokio::time::sleep(Duration::from_millis(sleep_ms)) => {
                    let now = self.now_ms();
                    // Woken late: this process stalled, which says nothing about the
                    // peers (their answers may be waiting to be read), so they count as
                    // alive when the loop should have woken.
                    if now.saturating_sub(due_ms) > self.settings.ping_interval_ms / 2 {
                        for connection in self.connections.values_mut() {
                            connection.alive_ms = connection.alive_ms.max(due_ms);
                        }
                    }
                    self.bury_dead(now);
                    let mut node = self.node.lock().expect("node lock");
                    if node.next_wakeup_ms() <= now {
                        node.handle(now, Input::Tick);
                    }
                    self.touched = true;
                }
                () = wake.notified() => self.touched = true,
                _ = stopped.changed() => return,
            }
            if self.touched {
                self.flush().await;
            }
        }
    }

    /// The node's clock: the wall clock plus the configured offset.
    fn now_ms(&self) -> u64 {
        now_ms().saturating_add_signed(self.settings.clock_offset_ms)
    }

    /// Hands one input to the node. Peers' directory ops it stages are enforced only once
    /// durable ([`Node::promote`]): with a store, its writer is asked to commit now (it
    /// promotes after the commit); without one, nothing here persists, so they are
    /// enforced at once.
    fn input(&mut self, input: Input) {
        let now = self.now_ms();
        let mut node = self.node.lock().expect("node lock");
        node.handle(now, input);
        let epoch = node.rights_epoch();
        self.rights
            .send_if_modified(|seen| std::mem::replace(seen, epoch) != epoch);
        if node.staged_directory_ops() > 0 {
            match &self.gate {
                Some(gate) => gate.request.notify_one(),
                None => {
                    let through = node.directory().version_vector().clone();
                    node.promote(&through);
                }
            }
        }
        drop(node);
        self.touched = true;
    }

    /// Closes the connections that answered no ping within the liveness timeout; their
    /// peers count as gone at once (closing a dead connection may itself take a while).
    fn bury_dead(&mut self, now: u64) {
        let timeout_ms = self.settings.liveness_timeout_ms;
        let dead: Vec<ConnectionId> = self
            .connections
            .iter()
            .filter(|(_, c)| c.pinged && now.saturating_sub(c.alive_ms) > timeout_ms)
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            if let Some(connection) = self.connections.get(&id) {
                tracing::warn!(
                    peer = %node_id_of(&connection.peer),
                    silent_ms = now.saturating_sub(connection.alive_ms),
                    "replication connection answered no ping: closed"
                );
            }
            self.swarm.close_connection(id);
            self.stats.lock().expect("stats lock").connections_dead += 1;
            self.connection_gone(id);
        }
    }

    /// A connection was established: its peer is connected, and a bootstrap address it
    /// was dialled at (or stands for) stops redialling.
    fn connection_up(&mut self, id: ConnectionId, peer_id: PeerId, dialed: Option<&Multiaddr>) {
        let now = self.now_ms();
        self.connections.insert(
            id,
            Liveness {
                peer: peer_id,
                alive_ms: now,
                pinged: true,
            },
        );
        let node_id = node_id_of(&peer_id);
        let entry = self.peers.entry(node_id).or_insert((peer_id, 0));
        entry.1 += 1;
        if entry.1 == 1 {
            tracing::info!(peer = %node_id, "replication peer connected");
            self.input(Input::PeerConnected(node_id));
        }
        for redial in &mut self.redials {
            redial.in_flight.retain(|dial| *dial != id);
            let dialed_here =
                dialed.is_some_and(|addr| redial.addr == *addr || strip_p2p(&redial.addr) == *addr);
            if dialed_here {
                redial.expected = Some(peer_id);
            }
            if dialed_here || redial.expected == Some(peer_id) {
                redial.peer = Some(peer_id);
                redial.known = true;
                redial.failures = 0;
            }
        }
        self.stats.lock().expect("stats lock").peers_connected = self.peers.len();
    }

    /// A connection closed or was found dead: once its peer has no live connection left,
    /// the peer is disconnected and its bootstrap addresses are redialled at once.
    fn connection_gone(&mut self, id: ConnectionId) {
        let Some(connection) = self.connections.remove(&id) else {
            return; // found dead earlier, or never established
        };
        let node_id = node_id_of(&connection.peer);
        let Some(entry) = self.peers.get_mut(&node_id) else {
            return;
        };
        entry.1 = entry.1.saturating_sub(1);
        if entry.1 > 0 {
            self.input(Input::ConnectionLost(node_id));
            return;
        }
        self.peers.remove(&node_id);
        tracing::info!(peer = %node_id, "replication peer disconnected");
        self.input(Input::PeerDisconnected(node_id));
        let now = self.now_ms();
        for redial in &mut self.redials {
            if redial.peer == Some(connection.peer) {
                redial.peer = None;
                redial.next_ms = now;
            }
        }
        self.stats.lock().expect("stats lock").peers_connected = self.peers.len();
    }

    /// Sends everything the node produced, once the own changes it may reflect are
    /// durable.
    async fn flush(&mut self) {
        let (outputs, own_changes, addrs) = {
            let mut node = self.node.lock().expect("node lock");
            let outputs = node.take_outputs();
            // Where to reach members this node holds no connection to (a mesh dial, a
            // request beyond the mesh), read under the same lock.
            let mut addrs: BTreeMap<NodeId, Vec<u8>> = BTreeMap::new();
            for output in &outputs {
                let (Output::Connect { to } | Output::Send { to, .. } | Output::Disconnect { to }) =
                    output;
                if !self.peers.contains_key(to) {
                    if let Some(member) = node.membership().get(*to) {
                        addrs.insert(*to, member.addr.clone());
                    }
                }
            }
            (outputs, node.own_changes(), addrs)
        };
        if outputs.is_empty() {
            return;
        }
        if let Some(gate) = &mut self.gate {
            if *gate.durable.borrow() < own_changes {
                gate.request.notify_one();
                let wait = Duration::from_millis(gate.wait_ms);
                let durable =
                    tokio::time::timeout(wait, gate.durable.wait_for(|d| *d >= own_changes)).await;
                if !matches!(durable, Ok(Ok(_))) {
                    self.stats.lock().expect("stats lock").held_back += 1;
                    return;
                }
            }
        }
        for output in outputs {
            let (message, to) = match output {
                Output::Send { to, message } => (message, to),
                Output::Connect { to } => {
                    self.dial_member(to, addrs.get(&to));
                    continue;
                }
                Output::Disconnect { to } => {
                    if let Some((peer, _)) = self.peers.get(&to) {
                        let _ = self.swarm.disconnect_peer_id(*peer);
                        self.stats.lock().expect("stats lock").mesh_prunes += 1;
                    }
                    continue;
                }
            };
            let bytes = message.encode();
            if bytes.len() > self.settings.message_bytes_max {
                // The core cuts its messages below its own cap; a bigger one means the
                // caps disagree. Peers would refuse the frame, so it is not sent; what it
                // carries stays undelivered until the caps agree: an error, said loudly.
                self.stats.lock().expect("stats lock").messages_oversize += 1;
                tracing::error!(
                    kind = message.kind(),
                    bytes = bytes.len(),
                    bytes_max = self.settings.message_bytes_max,
                    "replication message over the frame limit not sent"
                );
                continue;
            }
            {
                let mut stats = self.stats.lock().expect("stats lock");
                let entry = stats.sent.entry(message.kind()).or_default();
                entry.0 += 1;
                entry.1 += bytes.len() as u64;
            }
            let peer = match self.peers.get(&to) {
                Some((peer, _)) => Some(*peer),
                // A member beyond the mesh: the request dials it.
                None => self.member_peer(to, addrs.get(&to)),
            };
            if let Some(peer) = peer {
                send_frame(&mut self.swarm, &peer, Frame(bytes));
                self.stats
                    .lock()
                    .expect("stats lock")
                    .per_peer
                    .entry(to)
                    .or_default()
                    .0 += 1;
            }
        }
    }

    /// The peer id of member `to` from its advertised address, with the address handed
    /// to the swarm for a dial (`None`, counted, if it advertised none usable).
    fn member_peer(&mut self, to: NodeId, addr: Option<&Vec<u8>>) -> Option<PeerId> {
        let decoded = addr
            .and_then(|a| decode_member_addr(a))
            .filter(|(peer, _)| node_id_of(peer) == to);
        let Some((peer, addrs)) = decoded else {
            self.stats.lock().expect("stats lock").members_unreachable += 1;
            return None;
        };
        for addr in addrs {
            self.swarm.add_peer_address(peer, addr);
        }
        Some(peer)
    }

    /// Dials member `to` for the mesh, unless connected or being dialled already.
    fn dial_member(&mut self, to: NodeId, addr: Option<&Vec<u8>>) {
        if self.peers.contains_key(&to) {
            return;
        }
        let Some(peer) = self.member_peer(to, addr) else {
            return;
        };
        let dial = DialOpts::peer_id(peer)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        if self.swarm.dial(dial).is_ok() {
            self.stats.lock().expect("stats lock").mesh_dials += 1;
        }
    }

    fn receive(&mut self, from: PeerId, bytes: &[u8]) -> bool {
        match Message::decode(bytes, self.settings.message_bytes_max) {
            Ok(message) => {
                {
                    let mut stats = self.stats.lock().expect("stats lock");
                    let entry = stats.received.entry(message.kind()).or_default();
                    entry.0 += 1;
                    entry.1 += bytes.len() as u64;
                    stats.per_peer.entry(node_id_of(&from)).or_default().1 += 1;
                }
                self.input(Input::Message {
                    from: node_id_of(&from),
                    message,
                });
                true
            }
            Err(_) => {
                self.refused(from);
                false
            }
        }
    }

    fn refused(&mut self, from: PeerId) {
        self.stats.lock().expect("stats lock").refused_frames += 1;
        let count = self.garbage.entry(from).or_default();
        *count += 1;
        if *count >= self.settings.garbage_max {
            self.garbage.remove(&from);
            self.stats
                .lock()
                .expect("stats lock")
                .disconnected_for_garbage += 1;
            let _ = self.swarm.disconnect_peer_id(from);
        }
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                let listening = {
                    let mut stats = self.stats.lock().expect("stats lock");
                    stats.listen_addrs.push(address);
                    stats.listen_addrs.clone()
                };
                let peer = *self.swarm.local_peer_id();
                let addr = encode_member_addr(&peer, &advertised(&self.settings, &listening));
                self.node.lock().expect("node lock").set_address(addr);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let dialed = endpoint.is_dialer().then(|| endpoint.get_remote_address());
                self.connection_up(connection_id, peer_id, dialed);
            }
            SwarmEvent::ConnectionClosed { connection_id, .. } => {
                self.connection_gone(connection_id);
            }
            SwarmEvent::OutgoingConnectionError { connection_id, .. } => {
                for redial in &mut self.redials {
                    redial.in_flight.retain(|dial| *dial != connection_id);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                connection, result, ..
            })) => {
                let now = self.now_ms();
                if let Some(live) = self.connections.get_mut(&connection) {
                    match result {
                        Ok(_) => live.alive_ms = now,
                        Err(ping::Failure::Unsupported) => live.pinged = false,
                        // Timeouts and stream errors: the deadline decides.
                        Err(_) => {}
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Frames(request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            })) => {
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .frames
                    .send_response(channel, Ack);
                self.receive(peer, &request.0);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Frames(
                request_response::Event::InboundFailure { peer, .. },
            )) => {
                // A frame the codec refused (oversized or not cbor).
                self.refused(peer);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    self.swarm.add_peer_address(peer, addr);
                    if !self.swarm.is_connected(&peer) {
                        let _ = self.swarm.dial(peer);
                    }
                }
            }
            _ => {}
        }
    }

    /// Dials bootstrap addresses that are not connected and due — while the node holds
    /// fewer than `mesh_peers` connections (always, with `mesh_peers` 0): past that the
    /// core keeps its mesh from the member table, and redialling a seed that pruned this
    /// node would only make it prune again.
    fn redial(&mut self) {
        let now = self.now_ms();
        if self.mesh_peers > 0 && self.peers.len() >= self.mesh_peers {
            return;
        }
        for redial in &mut self.redials {
            if redial.peer.is_some() || redial.next_ms > now {
                continue;
            }
            if redial.in_flight.len() < DIALS_IN_FLIGHT_MAX {
                let dial = DialOpts::unknown_peer_id()
                    .address(redial.addr.clone())
                    .build();
                let id = dial.connection_id();
                if self.swarm.dial(dial).is_ok() {
                    redial.in_flight.push(id);
                }
            }
            redial.failures = redial.failures.saturating_add(1);
            let cap_ms = if redial.known {
                self.settings.redial_lost_max_ms
            } else {
                self.settings.redial_max_ms
            };
            let backoff = self
                .settings
                .redial_base_ms
                .saturating_mul(1u64 << (redial.failures - 1).min(16))
                .min(cap_ms);
            redial.next_ms = now + self.rng.jitter(backoff, 0.5).max(1);
        }
    }
}

fn strip_p2p(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .filter(|p| !matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
        .collect()
}
