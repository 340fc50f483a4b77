//! Admission of inbound connections, per remote address, before they cost a handshake.
//!
//! The replication port is open to anyone who can reach it, and the cluster key is checked
//! only by the handshake (pnet, then noise) that an accepted socket starts. Without bounds
//! per address, one host holding sockets open or re-opening them as they close fills the
//! swarm's pending-connection cap and keeps every keyed peer out. So, per remote address
//! (an IPv4 address, or an IPv6 prefix of `ipv6_prefix_bits`, by default the /64 one host
//! usually owns whole):
//! - at most [`AdmissionSettings::pending_per_ip_max`] inbound connections may be in their
//!   handshake and [`AdmissionSettings::established_per_ip_max`] established at once (the
//!   global pending cap, `pending_incoming_max`, enforced by libp2p's connection limits,
//!   is larger, so one address cannot fill it);
//! - an address whose handshakes fail (closed, garbage, wrong key, or not finished within
//!   the transport's `handshake_timeout_ms`) `handshake_failures_max` times within
//!   `handshake_failure_window_ms` is refused at once, without a handshake, for a backoff
//!   that doubles with each repeat (from `backoff_base_ms` up to `backoff_max_ms`, with
//!   jitter); each `backoff_max_ms` it then goes without a failure takes one doubling back,
//!   and a completed handshake (the address holds the key) forgets its record;
//! - the records are bounded (`addresses_max`): when full, the stalest record that holds
//!   no active backoff is dropped first, so a spray of addresses costs bounded memory.
//!
//! [`Admission`] is the bookkeeping, driven with explicit times (tested without sleeping);
//! [`Behaviour`] plugs it into the swarm and reads a monotonic clock.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv6Addr};
use std::task::{Context, Poll};
use std::time::Instant;

use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    dummy, ConnectionDenied, ConnectionId, FromSwarm, ListenError, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};
use thiserror::Error;

use crate::rng::Rng;

/// Bounds on inbound connections (part of the transport's settings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdmissionSettings {
    /// Inbound connections in their handshake, all addresses together (default 64;
    /// enforced by libp2p's connection limits). Must exceed `pending_per_ip_max`.
    pub pending_incoming_max: u32,
    /// Inbound connections in their handshake from one address (default 4).
    pub pending_per_ip_max: u32,
    /// Established inbound connections from one address (default 16: several nodes may
    /// share a host or a NAT).
    pub established_per_ip_max: u32,
    /// How long an inbound connection's pnet + noise + yamux handshake may take before it
    /// is dropped (and counted as a failed handshake; default 3 000 ms). Dials keep their
    /// own timeout (`NetSettings::dial_timeout_ms`).
    pub handshake_timeout_ms: u64,
    /// Failed handshakes from one address, within `handshake_failure_window_ms`, that put
    /// it in backoff (default 8).
    pub handshake_failures_max: u32,
    /// The window over which failed handshakes add up (default 10 000 ms): failures
    /// further apart than this never put an address in backoff.
    pub handshake_failure_window_ms: u64,
    /// The first backoff (default 1 000 ms); each repeat doubles it.
    pub backoff_base_ms: u64,
    /// The longest backoff (default 60 000 ms), and the quiet time that takes one doubling
    /// back.
    pub backoff_max_ms: u64,
    /// Addresses with a failure record kept at most (default 1 024).
    pub addresses_max: usize,
    /// How much of an IPv6 address names one remote (default 64: a host often owns a
    /// whole /64, so counting full addresses would let it count as 2^64 remotes). Raise
    /// it to 128 when cluster nodes share a /64 subnet, so they are counted apart.
    pub ipv6_prefix_bits: u8,
}

impl Default for AdmissionSettings {
    fn default() -> AdmissionSettings {
        AdmissionSettings {
            pending_incoming_max: 64,
            pending_per_ip_max: 4,
            established_per_ip_max: 16,
            handshake_timeout_ms: 3_000,
            handshake_failures_max: 8,
            handshake_failure_window_ms: 10_000,
            backoff_base_ms: 1_000,
            backoff_max_ms: 60_000,
            addresses_max: 1_024,
            ipv6_prefix_bits: 64,
        }
    }
}

/// What admission counted (part of the transport's stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdmissionStats {
    /// Inbound connections refused at once because their address was in backoff.
    pub denied_backoff: u64,
    /// Refused because their address had `pending_per_ip_max` handshakes in progress.
    pub denied_pending_per_ip: u64,
    /// Refused because their address had `established_per_ip_max` connections.
    pub denied_established_per_ip: u64,
    /// Inbound handshakes that failed or timed out.
    pub handshake_failures: u64,
    /// Backoffs started (an address reaching `handshake_failures_max`).
    pub backoffs: u64,
    /// Failure records dropped to stay within `addresses_max`.
    pub records_evicted: u64,
    /// Addresses with a failure record now.
    pub addresses_tracked: usize,
}

/// Why an inbound connection was refused.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("address in backoff after failed handshakes, for {remaining_ms} ms more")]
    Backoff { remaining_ms: u64 },
    #[error("address has {0} inbound handshakes in progress")]
    PendingPerIp(u32),
    #[error("address has {0} established inbound connections")]
    EstablishedPerIp(u32),
}

/// The key connections are counted under: the IPv4 address, or the IPv6 address's first
/// `ipv6_prefix_bits` bits (an IPv4-mapped IPv6 address counts as its IPv4 address).
pub fn address_key(ip: IpAddr, ipv6_prefix_bits: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(ipv6_prefix_bits.min(128)))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        },
    }
}

/// The remote IP of a multiaddr, if it has one.
fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Pending,
    Established,
}

/// One address's failures.
#[derive(Clone, Debug)]
struct Record {
    /// Failures in the window that started at `window_start_ms`.
    failures: u32,
    window_start_ms: u64,
    /// Backoffs in a row (the next one lasts `backoff_base_ms << level`), up to the first
    /// that reaches `backoff_max_ms`.
    level: u32,
    backoff_until_ms: u64,
    /// The last failure or the end of the backoff, whichever is later: quiet time counts
    /// from here.
    last_bad_ms: u64,
}

impl Record {
    fn backing_off(&self, now_ms: u64) -> bool {
        self.backoff_until_ms > now_ms
    }
}

/// Per-address bookkeeping of inbound connections and failed handshakes.
#[derive(Debug)]
pub struct Admission {
    settings: AdmissionSettings,
    rng: Rng,
    connections: HashMap<ConnectionId, (IpAddr, Stage)>,
    /// By address key: (pending, established).
    counts: HashMap<IpAddr, (u32, u32)>,
    records: HashMap<IpAddr, Record>,
    stats: AdmissionStats,
}

impl Admission {
    pub fn new(settings: AdmissionSettings, seed: u64) -> Admission {
        Admission {
            settings,
            rng: Rng::new(seed),
            connections: HashMap::new(),
            counts: HashMap::new(),
            records: HashMap::new(),
            stats: AdmissionStats::default(),
        }
    }

    pub fn stats(&self) -> AdmissionStats {
        AdmissionStats {
            addresses_tracked: self.records.len(),
            ..self.stats
        }
    }

    /// An inbound connection from `ip` wants to start its handshake.
    pub fn admit_pending(
        &mut self,
        connection: ConnectionId,
        ip: IpAddr,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        let key = address_key(ip, self.settings.ipv6_prefix_bits);
        if let Some(record) = self.records.get(&key) {
            if record.backing_off(now_ms) {
                self.stats.denied_backoff += 1;
                return Err(Refusal::Backoff {
                    remaining_ms: record.backoff_until_ms - now_ms,
                });
            }
        }
        let count = self.counts.entry(key).or_default();
        if count.0 >= self.settings.pending_per_ip_max {
            self.stats.denied_pending_per_ip += 1;
            return Err(Refusal::PendingPerIp(count.0));
        }
        count.0 += 1;
        self.connections.insert(connection, (key, Stage::Pending));
        Ok(())
    }

    /// A pending inbound connection finished its handshake: the address holds the key,
    /// so its failure record is forgotten.
    pub fn admit_established(&mut self, connection: ConnectionId) -> Result<(), Refusal> {
        let Some(&(key, Stage::Pending)) = self.connections.get(&connection) else {
            return Ok(());
        };
        let count = self.counts.entry(key).or_default();
        if count.1 >= self.settings.established_per_ip_max {
            self.stats.denied_established_per_ip += 1;
            return Err(Refusal::EstablishedPerIp(count.1));
        }
        count.0 -= 1;
        count.1 += 1;
        self.connections
            .insert(connection, (key, Stage::Established));
        self.records.remove(&key);
        Ok(())
    }

    /// A connection admitted here ended (closed, or refused by another bound) through no
    /// fault of its handshake.
    pub fn release(&mut self, connection: ConnectionId) -> Option<IpAddr> {
        let (key, stage) = self.connections.remove(&connection)?;
        if let Some(count) = self.counts.get_mut(&key) {
            match stage {
                Stage::Pending => count.0 -= 1,
                Stage::Established => count.1 -= 1,
            }
            if *count == (0, 0) {
                self.counts.remove(&key);
            }
        }
        Some(key)
    }

    /// A pending inbound connection's handshake failed or timed out.
    pub fn handshake_failed(&mut self, connection: ConnectionId, now_ms: u64) {
        let Some(key) = self.release(connection) else {
            return;
        };
        self.stats.handshake_failures += 1;
        if !self.records.contains_key(&key) && self.records.len() >= self.settings.addresses_max {
            self.evict(now_ms);
        }
        let settings = &self.settings;
        let record = self.records.entry(key).or_insert(Record {
            failures: 0,
            window_start_ms: now_ms,
            level: 0,
            backoff_until_ms: 0,
            last_bad_ms: now_ms,
        });
        // Quiet time since the address last misbehaved takes doublings back.
        let quiet_ms = now_ms.saturating_sub(record.last_bad_ms);
        let steps = quiet_ms / settings.backoff_max_ms.max(1);
        record.level = record
            .level
            .saturating_sub(u32::try_from(steps).unwrap_or(u32::MAX));
        if now_ms.saturating_sub(record.window_start_ms) >= settings.handshake_failure_window_ms {
            record.failures = 0;
            record.window_start_ms = now_ms;
        }
        record.failures += 1;
        record.last_bad_ms = now_ms;
        if record.failures >= settings.handshake_failures_max {
            let doubled = settings
                .backoff_base_ms
                .saturating_mul(1u64 << record.level.min(32))
                .min(settings.backoff_max_ms);
            let backoff_ms = self
                .rng
                .jitter(doubled, 0.25)
                .clamp(1, settings.backoff_max_ms.max(1));
            if doubled < settings.backoff_max_ms {
                record.level += 1;
            }
            record.backoff_until_ms = now_ms + backoff_ms;
            record.last_bad_ms = record.backoff_until_ms;
            record.failures = 0;
            record.window_start_ms = record.backoff_until_ms;
            self.stats.backoffs += 1;
        }
    }

    /// Drops the stalest record, preferring one that holds no active backoff.
    fn evict(&mut self, now_ms: u64) {
        let stalest = self
            .records
            .iter()
            .min_by_key(|(_, r)| (r.backing_off(now_ms), r.last_bad_ms))
            .map(|(key, _)| *key);
        if let Some(key) = stalest {
            self.records.remove(&key);
            self.stats.records_evicted += 1;
        }
    }
}

/// The swarm side of [`Admission`]: refuses inbound connections past the per-address
/// bounds and learns from their outcomes. Outbound connections are not bounded here.
pub struct Behaviour {
    admission: Admission,
    started: Instant,
}

impl Behaviour {
    pub fn new(settings: AdmissionSettings, seed: u64) -> Behaviour {
        Behaviour {
            admission: Admission::new(settings, seed),
            started: Instant::now(),
        }
    }

    pub fn stats(&self) -> AdmissionStats {
        self.admission.stats()
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let Some(ip) = ip_of(remote_addr) else {
            return Ok(());
        };
        let now_ms = self.now_ms();
        self.admission
            .admit_pending(connection_id, ip, now_ms)
            .map_err(ConnectionDenied::new)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _peer: PeerId,
        _local_addr: &Multiaddr,
        _remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.admission
            .admit_established(connection_id)
            .map_err(ConnectionDenied::new)?;
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionClosed(closed) => {
                self.admission.release(closed.connection_id);
            }
            FromSwarm::ListenFailure(failure) => match failure.error {
                ListenError::Transport(_) => {
                    let now_ms = self.now_ms();
                    self.admission
                        .handshake_failed(failure.connection_id, now_ms);
                }
                _ => {
                    self.admission.release(failure.connection_id);
                }
            },
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer_id: PeerId,
        _connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _cx: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn settings() -> AdmissionSettings {
        AdmissionSettings {
            pending_per_ip_max: 2,
            established_per_ip_max: 1,
            handshake_failures_max: 3,
            handshake_failure_window_ms: 1_000,
            backoff_base_ms: 1_000,
            backoff_max_ms: 8_000,
            addresses_max: 4,
            ..AdmissionSettings::default()
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    /// Numbers connections as the swarm would.
    struct Conns(usize);

    impl Conns {
        fn next(&mut self) -> ConnectionId {
            self.0 += 1;
            ConnectionId::new_unchecked(self.0)
        }
    }

    /// `n` handshakes from `from` that fail at `now_ms`.
    fn fail(table: &mut Admission, conns: &mut Conns, from: IpAddr, n: u32, now_ms: u64) {
        for _ in 0..n {
            let c = conns.next();
            table.admit_pending(c, from, now_ms).expect("admitted");
            table.handshake_failed(c, now_ms);
        }
    }

    /// Whether a connection from `from` is let in at `now_ms` (released at once).
    fn admitted(table: &mut Admission, conns: &mut Conns, from: IpAddr, now_ms: u64) -> bool {
        let c = conns.next();
        let admitted = table.admit_pending(c, from, now_ms).is_ok();
        table.release(c);
        admitted
    }

    fn backoff_ms(table: &mut Admission, conns: &mut Conns, from: IpAddr, now_ms: u64) -> u64 {
        match table.admit_pending(conns.next(), from, now_ms) {
            Err(Refusal::Backoff { remaining_ms }) => remaining_ms,
            other => panic!("expected a backoff, got {other:?}"),
        }
    }

    #[test]
    fn pending_and_established_are_bounded_per_address() {
        let mut table = Admission::new(settings(), 1);
        let mut conns = Conns(0);
        let (c1, c2, c3) = (conns.next(), conns.next(), conns.next());
        table.admit_pending(c1, ip(1), 0).unwrap();
        table.admit_pending(c2, ip(1), 0).unwrap();
        assert_eq!(
            table.admit_pending(c3, ip(1), 0),
            Err(Refusal::PendingPerIp(2))
        );
        // Another address is not affected, nor is the same host's IPv4-mapped form spared.
        table.admit_pending(conns.next(), ip(2), 0).unwrap();
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        assert!(table.admit_pending(conns.next(), mapped, 0).is_err());
        // One handshake completes: a pending slot frees, the established bound is reached.
        table.admit_established(c1).unwrap();
        table.admit_pending(c3, ip(1), 0).unwrap();
        assert_eq!(
            table.admit_established(c3),
            Err(Refusal::EstablishedPerIp(1))
        );
        table.release(c3);
        table.release(c1);
        let c4 = conns.next();
        table.admit_pending(c4, ip(1), 0).unwrap();
        table.admit_established(c4).unwrap();
        let stats = table.stats();
        assert_eq!(stats.denied_pending_per_ip, 2);
        assert_eq!(stats.denied_established_per_ip, 1);
        assert_eq!(stats.handshake_failures, 0);
    }

    #[test]
    fn ipv6_addresses_count_per_prefix() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        // By default a /64 is one remote: a and b share its two pending slots.
        let mut table = Admission::new(settings(), 1);
        let mut conns = Conns(0);
        table.admit_pending(conns.next(), a, 0).unwrap();
        table.admit_pending(conns.next(), b, 0).unwrap();
        assert!(table.admit_pending(conns.next(), a, 0).is_err());
        table.admit_pending(conns.next(), other, 0).unwrap();
        // Counted by full address, they are apart.
        let full = AdmissionSettings {
            ipv6_prefix_bits: 128,
            ..settings()
        };
        let mut table = Admission::new(full, 1);
        for _ in 0..2 {
            table.admit_pending(conns.next(), a, 0).unwrap();
        }
        table.admit_pending(conns.next(), b, 0).unwrap();
        assert!(table.admit_pending(conns.next(), a, 0).is_err());
    }

    #[test]
    fn failed_handshakes_back_an_address_off_longer_each_time_then_decay() {
        let mut table = Admission::new(settings(), 7);
        let mut conns = Conns(0);
        // Failures spread wider than the window never add up to a backoff.
        for round in 0..5 {
            fail(&mut table, &mut conns, ip(1), 2, round * 1_000);
        }
        assert!(admitted(&mut table, &mut conns, ip(1), 5_000));
        // Three within the window: refused at once, for the base backoff with jitter.
        fail(&mut table, &mut conns, ip(9), 3, 10_000);
        let first = backoff_ms(&mut table, &mut conns, ip(9), 10_000);
        assert!((750..=1_250).contains(&first), "{first}");
        // Other addresses are not affected.
        assert!(admitted(&mut table, &mut conns, ip(2), 10_000));
        // After it, the address is let in; failing again doubles the backoff, up to the cap.
        let mut now = 10_000 + first;
        for expected in [2_000, 4_000, 8_000, 8_000] {
            assert!(admitted(&mut table, &mut conns, ip(9), now), "backoff over");
            fail(&mut table, &mut conns, ip(9), 3, now);
            let backoff = backoff_ms(&mut table, &mut conns, ip(9), now);
            assert!(
                backoff * 4 >= expected * 3 && backoff <= (expected * 5 / 4).min(8_000),
                "{backoff} for {expected}"
            );
            now += backoff;
        }
        // Two backoff_max of good behaviour take two doublings back: 8 s -> 2 s.
        now += 16_000;
        fail(&mut table, &mut conns, ip(9), 3, now);
        let decayed = backoff_ms(&mut table, &mut conns, ip(9), now);
        assert!((1_500..=2_500).contains(&decayed), "{decayed}");
        now += decayed;
        // A completed handshake (the address holds the key) forgets the record.
        let keyed = conns.next();
        table.admit_pending(keyed, ip(9), now).unwrap();
        table.admit_established(keyed).unwrap();
        fail(&mut table, &mut conns, ip(9), 3, now);
        let fresh = backoff_ms(&mut table, &mut conns, ip(9), now);
        assert!((750..=1_250).contains(&fresh), "{fresh}");
        let stats = table.stats();
        assert_eq!(stats.backoffs, 7);
        assert_eq!(stats.denied_backoff, 7);
        assert_eq!(stats.handshake_failures, 10 + 7 * 3);
    }

    #[test]
    fn a_spray_of_addresses_keeps_the_table_bounded_and_the_backoffs_that_matter() {
        let mut table = Admission::new(settings(), 3);
        let mut conns = Conns(0);
        fail(&mut table, &mut conns, ip(200), 3, 0);
        assert!(table.admit_pending(conns.next(), ip(200), 0).is_err());
        for i in 0..100u8 {
            fail(&mut table, &mut conns, ip(i), 1, 1 + u64::from(i));
            assert!(table.stats().addresses_tracked <= 4);
        }
        // The address in backoff kept its record; the one-off failures were evicted.
        assert!(table.admit_pending(conns.next(), ip(200), 200).is_err());
        let stats = table.stats();
        assert_eq!(stats.addresses_tracked, 4);
        assert_eq!(stats.records_evicted, 97);
        // Connection bookkeeping is empty again: every failed connection was released.
        assert!(table.connections.is_empty() && table.counts.is_empty());
    }
}
