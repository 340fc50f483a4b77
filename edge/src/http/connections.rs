//! Admission of HTTP connections at accept: a cap per client address, the global cap, and
//! a small overflow lane that answers what does not fit instead of resetting it.
//!
//! A global cap alone let one client holding 4,400 idle connections reset every new
//! connection — health checks included — until its connections timed out. So:
//! - each client address may hold `http.connections_per_client_max` connections (IPv6
//!   clients are counted per /64, the block one subscriber usually gets: counting per
//!   /128 would let one host take a fresh address per connection);
//! - the global `http.connections_max` stays, for everyone together;
//! - a connection over either cap is not dropped while the overflow lane has room
//!   (`http.overflow_connections_max`, a handful per client): it is served one request,
//!   without keep-alive and with a short head timeout, where `/healthz` and `/readyz` are
//!   answered as usual and everything else gets a JSON 429 `too_many_connections` (the
//!   client's own cap) or 503 `overloaded` (the node's), with `Retry-After`. Only past
//!   the lane too is a connection closed at accept.
//!
//! The counts live in one small map under a plain mutex: one probe at accept and one when
//! the connection ends, never held across an await.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Overflow connections one client may hold at once.
pub const OVERFLOW_PER_CLIENT_MAX: usize = 4;

/// The bounds, from `http.*`.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionCaps {
    pub connections_max: usize,
    /// 0: no per-client cap (a node behind a proxy sees one address).
    pub per_client_max: usize,
    pub overflow_max: usize,
}

/// Counts of open connections, global and per client.
pub struct Doorman {
    caps: ConnectionCaps,
    global: Arc<Semaphore>,
    overflow: Arc<Semaphore>,
    clients: Arc<Mutex<HashMap<ClientKey, usize>>>,
}

/// A client address as counted: IPv4 whole, IPv6 by its /64 (an IPv4-mapped IPv6 address
/// counts as the IPv4 address it carries).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    pub fn of(address: IpAddr) -> Self {
        match address {
            IpAddr::V4(v4) => ClientKey(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey(IpAddr::V4(v4)),
                None => {
                    let bits = u128::from(v6) & !((1u128 << 64) - 1);
                    ClientKey(IpAddr::V6(bits.into()))
                }
            },
        }
    }
}

/// Why a connection is in the overflow lane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Over {
    /// This client holds its share.
    Client,
    /// The node holds its cap.
    Node,
}

/// What accept does with a new connection. The slot travels with the connection and
/// frees its place when dropped.
pub enum Admission {
    Serve(Slot),
    Overflow(Slot, Over),
    Close,
}

/// A connection's place in the counts.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    clients: Arc<Mutex<HashMap<ClientKey, usize>>>,
    client: Option<ClientKey>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(client) = self.client {
            let mut clients = lock(&self.clients);
            if let Some(open) = clients.get_mut(&client) {
                *open -= 1;
                if *open == 0 {
                    clients.remove(&client);
                }
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Counters only: a panic elsewhere cannot leave them half-updated.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Doorman {
    pub fn new(caps: ConnectionCaps) -> Self {
        Self {
            caps,
            global: Arc::new(Semaphore::new(caps.connections_max)),
            overflow: Arc::new(Semaphore::new(caps.overflow_max)),
            clients: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Decides where a connection from `address` goes.
    pub fn admit(&self, address: IpAddr) -> Admission {
        let client = (self.caps.per_client_max > 0).then(|| ClientKey::of(address));
        let mut clients = lock(&self.clients);
        let open = client.map_or(0, |c| clients.get(&c).copied().unwrap_or(0));
        let slot = |permit| Slot {
            _permit: permit,
            clients: self.clients.clone(),
            client,
        };
        let over = if client.is_some() && open >= self.caps.per_client_max {
            Over::Client
        } else if let Ok(permit) = self.global.clone().try_acquire_owned() {
            if let Some(c) = client {
                *clients.entry(c).or_insert(0) += 1;
            }
            return Admission::Serve(slot(permit));
        } else {
            Over::Node
        };
        let overflow_room = client.is_none()
            || open
                < self
                    .caps
                    .per_client_max
                    .saturating_add(OVERFLOW_PER_CLIENT_MAX);
        match self.overflow.clone().try_acquire_owned() {
            Ok(permit) if overflow_room => {
                if let Some(c) = client {
                    *clients.entry(c).or_insert(0) += 1;
                }
                Admission::Overflow(slot(permit), over)
            }
            _ => Admission::Close,
        }
    }

    /// Connections counted for `address`'s client key.
    pub fn open_for(&self, address: IpAddr) -> usize {
        lock(&self.clients)
            .get(&ClientKey::of(address))
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doorman() -> Doorman {
        Doorman::new(ConnectionCaps {
            connections_max: 4,
            per_client_max: 2,
            overflow_max: 6,
        })
    }

    fn kind(admission: &Admission) -> &'static str {
        match admission {
            Admission::Serve(_) => "serve",
            Admission::Overflow(_, Over::Client) => "overflow:client",
            Admission::Overflow(_, Over::Node) => "overflow:node",
            Admission::Close => "close",
        }
    }

    #[test]
    fn one_client_cannot_take_the_node() {
        let door = doorman();
        let greedy: IpAddr = "192.0.2.7".parse().unwrap();
        let held: Vec<_> = (0..8).map(|_| door.admit(greedy)).collect();
        let kinds: Vec<_> = held.iter().map(kind).collect();
        // Two served, four answered in the overflow lane, then closed.
        assert_eq!(
            kinds,
            [
                "serve",
                "serve",
                "overflow:client",
                "overflow:client",
                "overflow:client",
                "overflow:client",
                "close",
                "close"
            ]
        );
        // Others are still served by the node.
        let a = door.admit("192.0.2.8".parse().unwrap());
        let b = door.admit("2001:db8::1".parse().unwrap());
        assert_eq!((kind(&a), kind(&b)), ("serve", "serve"));
        // An IPv6 client is one /64: another address in it shares the count.
        let c = door.admit("2001:db8::2".parse().unwrap());
        let d = door.admit("2001:db8::3".parse().unwrap());
        assert_eq!(kind(&c), "overflow:node", "the node is at its cap of 4");
        assert_eq!(door.open_for("2001:db8::ffff".parse().unwrap()), 3);
        assert_eq!(kind(&d), "overflow:client", "this /64 holds its two");
        drop((held, a, b, c, d));
        assert_eq!(
            door.open_for(greedy),
            0,
            "closed connections free their places"
        );
        assert_eq!(kind(&door.admit(greedy)), "serve");
    }

    #[test]
    fn mapped_addresses_count_as_their_ipv4() {
        let v4: IpAddr = "198.51.100.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:198.51.100.1".parse().unwrap();
        assert_eq!(ClientKey::of(v4), ClientKey::of(mapped));
    }
}
