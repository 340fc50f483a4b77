//! True partitions between node processes with Linux network namespaces (root only).
//!
//! Each node runs in its own namespace (`ip netns exec`) with one veth link to a router
//! namespace that forwards between the nodes; the test process, in the root namespace,
//! reaches the nodes' HTTP ports through a further veth link to the router. Every
//! namespace of a cluster is named `tessera-t-<pid>-<n>-…`, so parallel tests never
//! collide and namespaces left by a crashed run (whose pid is gone) are removed at the
//! next [`Netns::create`].
//!
//! Addressing: a cluster owns one `10.A.B.0/24` not routed anywhere else in the root
//! namespace; the root link is `10.A.B.0/30` (root `.1`, router `.2`), node `i`'s link is
//! the `/30` at `4·(i+1)` (router `+1`, node `+2`). Every node listens on its own address,
//! HTTP on [`HTTP_PORT`] and replication on [`P2P_PORT`].
//!
//! Partitions, per directed link `(from, to)`:
//! - [`CutKind::Reset`]: `ip route add blackhole <to>/32` in `from`'s namespace. New
//!   connections from `from` to `to` fail at once (`connect` returns an error), as with a
//!   route withdrawn. Segments of connections already open are refused by the local route
//!   too, so those connections stall until TCP or the application gives up on them: a
//!   blackhole route fails the sender's *new* work at once, not its open sockets.
//! - [`CutKind::Drop`]: `ip rule add from <from> to <to> blackhole` in the router's
//!   namespace: the router silently discards what `from` sends to `to`, as a real network
//!   dropping packets does; neither end learns anything, and TCP backs off.
//!
//! Verified on the CI kernel: namespaces, veth, blackhole routes and rules, `tc tbf`; not
//! available there: `tc netem`, `prio` (so per-link delay and loss live in the userspace
//! link layer, [`crate::link`], and this backend refuses them).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use thiserror::Error;

use crate::link::{CutKind, Link};

/// Every node's HTTP port, on its own address.
pub const HTTP_PORT: u16 = 8080;
/// Every node's replication (libp2p) port, on its own address.
pub const P2P_PORT: u16 = 7400;
/// The prefix of every namespace this module creates.
const PREFIX: &str = "tessera-t-";

static CLUSTERS: AtomicU32 = AtomicU32::new(0);

#[derive(Debug, Error)]
pub enum NetnsError {
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("no free 10.x.y.0/24 for a namespace cluster")]
    NoSubnet,
    #[error("a namespace cluster has at most 62 nodes, not {0}")]
    TooManyNodes(usize),
}

/// Runs `ip <args>`; the error names the command and its stderr.
fn ip(args: &[&str]) -> Result<String, NetnsError> {
    let command = format!("ip {}", args.join(" "));
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| NetnsError::Command {
            command: command.clone(),
            stderr: e.to_string(),
        })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(NetnsError::Command {
            command,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// Why namespace clusters cannot run here (not root, no `ip`, namespaces refused), or
/// `None` when they can. Suites print the reason and skip.
pub fn unavailable_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions and touches no memory of ours.
    if unsafe { libc::geteuid() } != 0 {
        return Some("network namespaces need root".to_owned());
    }
    let n = CLUSTERS.fetch_add(1, Ordering::Relaxed);
    let probe = format!("{PREFIX}{}-{n}-probe", std::process::id());
    match ip(&["netns", "add", &probe]) {
        Ok(_) => {
            let _ = ip(&["netns", "del", &probe]);
            None
        }
        Err(e) => Some(format!("cannot create a network namespace: {e}")),
    }
}

/// Removes namespaces of this module whose creating process no longer exists.
fn remove_stale() {
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or_default();
        if !pid.is_empty() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// The namespaces, links and cuts of one cluster; removed on drop.
pub struct Netns {
    router: String,
    nodes: Vec<String>,
    /// `10.A.B.0/24`, as (A, B).
    subnet: (u8, u8),
    /// The cuts in place, to undo on heal.
    cuts: BTreeSet<(Link, CutKind)>,
}

impl Netns {
    /// Creates the router and `nodes` node namespaces, links them, and routes the
    /// cluster's subnet from the root namespace through the router.
    pub fn create(nodes: usize) -> Result<Netns, NetnsError> {
        if nodes > 62 {
            return Err(NetnsError::TooManyNodes(nodes));
        }
        remove_stale();
        let pid = std::process::id();
        let n = CLUSTERS.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{PREFIX}{pid}-{n}");
        let subnet = free_subnet(pid, n)?;
        let mut netns = Netns {
            router: format!("{tag}-r"),
            nodes: (0..nodes).map(|i| format!("{tag}-n{i}")).collect(),
            subnet,
            cuts: BTreeSet::new(),
        };
        // From here on, a failure drops `netns`, which removes what was created.
        netns.build(&format!("tt{pid}x{n}"))?;
        Ok(netns)
    }

    fn addr(&self, last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.subnet.0, self.subnet.1, last)
    }

    fn build(&mut self, root_if: &str) -> Result<(), NetnsError> {
        let router = self.router.clone();
        ip(&["netns", "add", &router])?;
        for name in self.nodes.clone() {
            ip(&["netns", "add", &name])?;
        }
        let in_router = |args: &[&str]| {
            let mut all = vec!["-n", router.as_str()];
            all.extend_from_slice(args);
            ip(&all)
        };
        in_router(&["link", "set", "lo", "up"])?;
        ip(&[
            "netns",
            "exec",
            &router,
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.ip_forward=1",
        ])?;
        // The root namespace's way in.
        ip(&[
            "link", "add", root_if, "type", "veth", "peer", "name", "root", "netns", &router,
        ])?;
        let cidr = |last: u8| format!("{}/30", self.addr(last));
        ip(&["addr", "add", &cidr(1), "dev", root_if])?;
        ip(&["link", "set", root_if, "up"])?;
        in_router(&["addr", "add", &cidr(2), "dev", "root"])?;
        in_router(&["link", "set", "root", "up"])?;
        let subnet = format!("10.{}.{}.0/24", self.subnet.0, self.subnet.1);
        ip(&["route", "add", &subnet, "via", &self.addr(2).to_string()])?;
        for (i, name) in self.nodes.iter().enumerate() {
            let base = 4 * (i as u8 + 1);
            let router_if = format!("n{i}");
            ip(&[
                "link", "add", "eth0", "netns", name, "type", "veth", "peer", "name", &router_if,
                "netns", &router,
            ])?;
            in_router(&["addr", "add", &cidr(base + 1), "dev", &router_if])?;
            in_router(&["link", "set", &router_if, "up"])?;
            ip(&["-n", name, "link", "set", "lo", "up"])?;
            ip(&["-n", name, "addr", "add", &cidr(base + 2), "dev", "eth0"])?;
            ip(&["-n", name, "link", "set", "eth0", "up"])?;
            ip(&[
                "-n",
                name,
                "route",
                "add",
                "default",
                "via",
                &self.addr(base + 1).to_string(),
            ])?;
        }
        Ok(())
    }

    /// Node `i`'s address (HTTP on [`HTTP_PORT`], replication on [`P2P_PORT`]).
    pub fn node_addr(&self, i: usize) -> Ipv4Addr {
        self.addr(4 * (i as u8 + 1) + 2)
    }

    /// Node `i`'s namespace, for `ip netns exec`.
    pub fn namespace(&self, i: usize) -> &str {
        &self.nodes[i]
    }

    fn apply(&self, (from, to): Link, kind: CutKind, add: bool) -> Result<(), NetnsError> {
        let verb = if add { "add" } else { "del" };
        let (src, dst) = (
            self.node_addr(from).to_string(),
            self.node_addr(to).to_string(),
        );
        match kind {
            CutKind::Reset => ip(&[
                "-n",
                &self.nodes[from],
                "route",
                verb,
                "blackhole",
                &format!("{dst}/32"),
            ]),
            CutKind::Drop => ip(&[
                "-n",
                &self.router,
                "rule",
                verb,
                "from",
                &src,
                "to",
                &dst,
                "blackhole",
            ]),
        }
        .map(drop)
    }

    /// Cuts every directed link in `links` with `kind` (a link already cut the same way
    /// is left as it is).
    pub fn cut(&mut self, kind: CutKind, links: &BTreeSet<Link>) -> Result<(), NetnsError> {
        for link in links {
            if self.cuts.insert((*link, kind)) {
                if let Err(e) = self.apply(*link, kind, true) {
                    self.cuts.remove(&(*link, kind));
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Removes every cut.
    pub fn heal(&mut self) -> Result<(), NetnsError> {
        while let Some((link, kind)) = self.cuts.pop_first() {
            self.apply(link, kind, false)?;
        }
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the router's namespace destroys its veth ends, and with them the root
        // namespace's interface and route.
        for name in self.nodes.iter().chain(std::iter::once(&self.router)) {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// A `10.A.B.0/24` (A in 100..=199) that the root namespace routes nowhere yet, derived
/// from the pid and the cluster counter so parallel runs start from different places.
fn free_subnet(pid: u32, n: u32) -> Result<(u8, u8), NetnsError> {
    let routes = ip(&["-4", "route", "show"])?;
    let addrs = ip(&["-4", "addr", "show"])?;
    let start = pid.wrapping_mul(131).wrapping_add(n.wrapping_mul(7919));
    for k in 0..25_600u32 {
        let index = start.wrapping_add(k) % 25_600;
        let (a, b) = ((100 + index / 256) as u8, (index % 256) as u8);
        let prefix = format!("10.{a}.{b}.");
        if !routes.contains(&prefix) && !addrs.contains(&prefix) {
            return Ok((a, b));
        }
    }
    Err(NetnsError::NoSubnet)
}
