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
//! - **Behaviours**: identify; gossipsub for [`Output::Broadcast`] (signed by the origin,
//!   strict validation, messages reported valid only after [`Message::decode`] accepts
//!   them, mesh sized for small clusters); request-response (cbor frames holding encoded
//!   [`Message`]s, answered with an empty ack) for [`Output::Send`]; optional mDNS;
//!   per-address admission of inbound connections ([`admission`]) and global connection
//!   limits.
//! - **Loop**: one task owns the swarm and the shared [`Node`]: it feeds swarm events and
//!   ticks (at [`Node::next_wakeup_ms`]) into the node and sends its outputs; local
//!   operations lock the node and call [`NetHandle::wake`] so their pushes leave at once.
//! - **Hostile peers**: every frame is size-capped by the codec and the gossip config and
//!   decoded with [`Message::decode`]; a refused frame changes nothing and is counted, and
//!   a peer that sends `garbage_max` refused frames is disconnected. Before any of that,
//!   inbound connections are admitted per remote address ([`admission`]): a few handshakes
//!   in progress and a bounded number of established connections per address (the global
//!   pending cap is larger, so one address cannot fill it), every inbound handshake bounded
//!   by `handshake_timeout_ms`, and an address whose handshakes keep failing (no key,
//!   garbage, silence) refused at once for a growing, jittered backoff that decays when it
//!   behaves; refusals are counted in [`NetStats::admission`]. Without this, sockets held
//!   open from one keyless host filled the pending cap and kept restarting peers out.
//! - **Bootstrap**: configured addresses are dialled, and redialled when not connected,
//!   with capped exponential backoff and jitter.
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
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    gossipsub, identify, identity, mdns, noise, tcp, yamux, StreamProtocol, Swarm, SwarmBuilder,
    Transport,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::{watch, Notify};

pub use libp2p::identity::Keypair;
pub use libp2p::{Multiaddr, PeerId};

use crate::escrow_digest::{fnv1a, FNV_OFFSET};
use crate::message::Message;
use crate::node::{Input, Node, Output};
use crate::rng::{mix, Rng};
use tessera_crdt::NodeId;

pub mod admission;

pub use admission::{AdmissionSettings, AdmissionStats};

const PROTOCOL: StreamProtocol = StreamProtocol::new("/tessera/sync/1");
const IDENTIFY_PROTOCOL: &str = "/tessera/id/1";
const TOPIC: &str = "tessera/sync/1";
/// How long a dial (TCP connect and the whole handshake) may take; also the outer bound on
/// inbound handshakes, so never below `handshake_timeout_ms`.
const DIAL_TIMEOUT_MS: u64 = 5_000;

/// Transport settings (the edge fills them from its config).
#[derive(Clone, Debug)]
pub struct NetSettings {
    pub listen: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    pub cluster_key: [u8; 32],
    pub mdns: bool,
    /// Largest frame accepted or sent, gossip or request.
    pub message_bytes_max: usize,
    pub request_timeout_ms: u64,
    pub connections_max: u32,
    pub redial_base_ms: u64,
    pub redial_max_ms: u64,
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
            bootstrap: Vec::new(),
            cluster_key,
            mdns: false,
            message_bytes_max: 1 << 20,
            request_timeout_ms: 5_000,
            connections_max: 64,
            redial_base_ms: 500,
            redial_max_ms: 30_000,
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
    pub listen_addrs: Vec<Multiaddr>,
    /// By peer: (messages sent to it, messages received from it). Gossip counts once per
    /// publish on the sending side and once per delivery on the receiving side.
    pub per_peer: BTreeMap<NodeId, (u64, u64)>,
    /// Output batches dropped because the store did not make them durable in time.
    pub held_back: u64,
    /// Inbound connections refused per address, failed handshakes, backoffs.
    pub admission: AdmissionStats,
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
    gossipsub: gossipsub::Behaviour,
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
    let handshake_timeout = Duration::from_millis(bounds.handshake_timeout_ms);
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
                // timeout (dials keep the swarm's connection timeout below).
                Ok(TransportTimeout::with_ingoing_timeout(
                    upgraded,
                    handshake_timeout,
                ))
            },
        )
        .map_err(|e| build(&e))?
        .with_behaviour(
            |key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                let gossipsub_config = gossipsub::ConfigBuilder::default()
                    .max_transmit_size(bytes_max)
                    .mesh_n(3)
                    .mesh_n_low(1)
                    .mesh_n_high(6)
                    .mesh_outbound_min(1)
                    .gossip_lazy(3)
                    .heartbeat_interval(Duration::from_millis(500))
                    .validation_mode(gossipsub::ValidationMode::Strict)
                    .validate_messages()
                    .build()?;
                let gossipsub = gossipsub::Behaviour::new(
                    gossipsub::MessageAuthenticity::Signed(key.clone()),
                    gossipsub_config,
                )?;
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
                        .with_max_pending_outgoing(Some(16))
                        .with_max_established(Some(connections_max))
                        .with_max_established_per_peer(Some(2)),
                );
                Ok(Behaviour {
                    admission: admission::Behaviour::new(bounds, admission_seed),
                    limits,
                    identify,
                    gossipsub,
                    frames,
                    mdns: Toggle::from(mdns),
                })
            },
        )
        .map_err(|e| build(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .with_connection_timeout(Duration::from_millis(DIAL_TIMEOUT_MS).max(handshake_timeout))
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
    peer: Option<PeerId>,
    failures: u32,
    next_ms: u64,
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
    let topic = gossipsub::IdentTopic::new(TOPIC);
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&topic)
        .map_err(|e| NetError::Build(e.to_string()))?;
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
    let wake = Arc::new(Notify::new());
    let (stop, stopped) = watch::channel(false);
    let handle = NetHandle {
        wake: wake.clone(),
        stats: stats.clone(),
        stop,
        peer_id,
        node_id,
    };
    let redials = settings
        .bootstrap
        .iter()
        .map(|addr| Redial {
            addr: addr.clone(),
            peer: None,
            failures: 0,
            next_ms: 0,
        })
        .collect();
    let driver = Driver {
        swarm,
        node,
        settings,
        topic,
        stats,
        peers: BTreeMap::new(),
        garbage: BTreeMap::new(),
        redials,
        rng: Rng::new(rng_seed(node_id)),
        gate,
        touched: true,
    };
    tokio::spawn(driver.run(wake, stopped));
    Ok(handle)
}

struct Driver {
    swarm: Swarm<Behaviour>,
    node: Arc<Mutex<Node>>,
    settings: NetSettings,
    topic: gossipsub::IdentTopic,
    stats: Arc<Mutex<NetStats>>,
    /// Connected peers by node id, with their connection count.
    peers: BTreeMap<NodeId, (PeerId, u32)>,
    garbage: BTreeMap<PeerId, u32>,
    redials: Vec<Redial>,
    rng: Rng,
    gate: Option<DurabilityGate>,
    /// The node may have changed since its outputs and next wakeup were last read (an
    /// input, a tick or a local operation). Swarm events that never reach the node, such
    /// as a flood of refused connections, then cost no node lock.
    touched: bool,
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
            let sleep_ms = wakeup.min(redial_at).saturating_sub(now_ms()).min(1_000);
            tokio::select! {
                event = self.swarm.select_next_some() => {
                    self.on_event(event);
                    let admission = self.swarm.behaviour().admission.stats();
                    self.stats.lock().expect("stats lock").admission = admission;
                }
                () = tokio::time::sleep(Duration::from_millis(sleep_ms)) => {
                    let now = now_ms();
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

    fn input(&mut self, input: Input) {
        self.node.lock().expect("node lock").handle(now_ms(), input);
        self.touched = true;
    }

    /// Sends everything the node produced, once the own changes it may reflect are
    /// durable.
    async fn flush(&mut self) {
        let (outputs, own_changes) = {
            let mut node = self.node.lock().expect("node lock");
            (node.take_outputs(), node.own_changes())
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
                Output::Send { to, message } => (message, Some(to)),
                Output::Broadcast(message) => (message, None),
            };
            let bytes = message.encode();
            if bytes.len() > self.settings.message_bytes_max {
                // The core chunks below the cap; a bigger message is a configuration
                // mismatch (a cap lower than the core's chunks). Drop it: anti-entropy
                // will carry the data in smaller pieces once the caps agree.
                continue;
            }
            {
                let mut stats = self.stats.lock().expect("stats lock");
                let entry = stats.sent.entry(message.kind()).or_default();
                entry.0 += 1;
                entry.1 += bytes.len() as u64;
            }
            match to {
                Some(to) => {
                    if let Some((peer, _)) = self.peers.get(&to) {
                        let peer = *peer;
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
                None => {
                    // No subscribed peer yet is not an error worth more than a skip: the
                    // next anti-entropy round repairs what a lost push would carry.
                    if self
                        .swarm
                        .behaviour_mut()
                        .gossipsub
                        .publish(self.topic.clone(), bytes)
                        .is_ok()
                    {
                        let mut stats = self.stats.lock().expect("stats lock");
                        for id in self.peers.keys() {
                            stats.per_peer.entry(*id).or_default().0 += 1;
                        }
                    }
                }
            }
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
                self.stats
                    .lock()
                    .expect("stats lock")
                    .listen_addrs
                    .push(address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                let id = node_id_of(&peer_id);
                let entry = self.peers.entry(id).or_insert((peer_id, 0));
                entry.1 += 1;
                if entry.1 == 1 {
                    self.input(Input::PeerConnected(id));
                }
                let remote = endpoint.get_remote_address().clone();
                for redial in &mut self.redials {
                    if redial.addr == remote || strip_p2p(&redial.addr) == remote {
                        redial.peer = Some(peer_id);
                        redial.failures = 0;
                    }
                }
                self.stats.lock().expect("stats lock").peers_connected = self.peers.len();
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                let id = node_id_of(&peer_id);
                self.peers.remove(&id);
                self.input(Input::PeerDisconnected(id));
                let now = now_ms();
                for redial in &mut self.redials {
                    if redial.peer == Some(peer_id) {
                        redial.peer = None;
                        redial.next_ms = now + self.settings.redial_base_ms;
                    }
                }
                self.stats.lock().expect("stats lock").peers_connected = self.peers.len();
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
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                let acceptance = match message.source {
                    Some(source) if self.receive(source, &message.data) => {
                        gossipsub::MessageAcceptance::Accept
                    }
                    _ => gossipsub::MessageAcceptance::Reject,
                };
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&message_id, &propagation_source, acceptance);
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

    /// Dials bootstrap addresses that are not connected and due.
    fn redial(&mut self) {
        let now = now_ms();
        for redial in &mut self.redials {
            if redial.peer.is_some() || redial.next_ms > now {
                continue;
            }
            let _ = self.swarm.dial(redial.addr.clone());
            redial.failures = redial.failures.saturating_add(1);
            let backoff = self
                .settings
                .redial_base_ms
                .saturating_mul(1u64 << redial.failures.min(16))
                .min(self.settings.redial_max_ms);
            redial.next_ms = now + self.rng.jitter(backoff, 0.5).max(1);
        }
    }
}

fn strip_p2p(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .filter(|p| !matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
        .collect()
}
