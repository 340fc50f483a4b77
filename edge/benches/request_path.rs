//! What auth, rate limit, quota admission and metering cost one request on the request
//! path, in-process: no HTTP, no resize, no wait for the disk (the durable commit is
//! amortised by group commit and measured elsewhere). Product target: under 5 µs.
//!
//! The steps are those of `routes::resize` → `routes::payer`, `meter::admit` and
//! `meter::bill`, made with the same library calls and the same locking, against a
//! `std::sync::Mutex<tessera_sync::Node>` holding a 100K-tenant directory:
//! 1. **auth**: `auth::bearer` on the header, `auth::present` (parse, SHA-256 of the
//!    key), then under the lock `auth::check_presented` (prefix probe, constant-time
//!    compare, standing, scope);
//! 2. **rate**: `RateLimiter::check` (default table size, a rate that never refuses);
//! 3. **admission**: under one lock the tenant's enforced quotas become demands (one
//!    monthly `requests` quota here), `local_rights` is checked and `consume` spends one
//!    right — the local path of `meter::admit`, no transfer;
//! 4. **metering**: a request id, then under the lock four `increment`s (`Metric::ALL`
//!    for the month), `own_changes` (the ticket `meter::bill` would then wait on) and the
//!    usage record queued for the writer.
//!
//! Left out because they are not this path's own work: the Prometheus counters, the
//! transport wake-up (`wake_net`), and the wait for the ticket to become durable.
//!
//! The state is built the way a node gets 100K tenants in practice — from its store:
//! the directory is made with `Directory::change` (one `CreateTenant`, one `CreateKey`
//! minted by `auth::new_key`, one `SetQuota` per tenant; home = this node), then
//! `Node::new` from that state, then one `Input::Tick` starts the quota pass that turns the
//! quotas into local grants (it goes 128 tenants a tick; a tenant it has not reached yet is
//! granted at its first consume, as on a restarted node, and the drains' ticks finish it). Building through `Node::edit_directory` instead re-runs the quota
//! reconciliation over every tenant on each edit (quadratic at this size); what one such
//! edit costs on the built node is measured and printed too.
//!
//! Before timing, every tenant is served once (so its ledger slots and rate bucket exist,
//! as on a node in mid-month), then a random warm-up. Tenants are drawn uniformly with a
//! seeded SplitMix64. Every `DRAIN_EVERY` requests, outside the timed part, the bench does
//! what the node's writer and transport do in the background: `take_changes` (and the
//! records queue; their encoding is done after the lock is released), and an
//! `Input::Tick` plus `take_outputs` once `next_wakeup_ms` is due; so memory stays flat.
//! That hold is timed separately (from the lock taken to the lock let go; the changes are
//! dropped after, as the writer does) and reported per drain and per request, in wall time
//! and in this thread's CPU time, with its p99 and its longest. (The writer's periodic
//! snapshot, `Node::state` under the lock, 186–365 ms at this scale, is gone: the store
//! folds its own log into a snapshot beside the writer, `control::store::LogCompactor`.)
//!
//! Two timed passes: the whole sequence with one clock read per chunk (the mean, in wall
//! time and in this thread's CPU time, so that time spent preempted on a shared machine
//! can be told apart), and the same sequence with a clock read between steps on every
//! request (per-step means and percentiles; each read's cost is printed, and is included
//! in those figures).
//!
//! **Longest holds of the core's background work** (issue #15: no single hold over 1 ms).
//! First, on a second node built from a copy of the same state, with the clock injected
//! (no request traffic), every call into the core is timed alone — the hold the edge
//! would take for it — and the longest of each kind is printed: the ticks of the first
//! simulated minute after `Node::new` (8 peers connect first, as the transport connects
//! them; the first tick used to turn every quota into grants at once), the writer's
//! `take_changes` in that minute, a steady minute after it, the first minute of the next
//! hour (the hourly quota pass is due), and one incoming relayed `LedgerPush` of
//! `ledger_entries_max` entries and one `EscrowPush` of `escrow_counters_max` changed
//! counters from a connected peer. Set `TESSERA_BENCH_HOLDS_ONLY=1` to stop after it.
//!
//! Usage: `cargo bench -p tessera-edge --bench request_path -- [TENANTS] [ITERATIONS] [SAMPLE]`
//! (defaults 100000, 2000000, 500000).

use std::hint::black_box;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tessera_crdt::directory::{Change, Directory, KeyId, Scopes};
use tessera_crdt::{CounterKey, EscrowBook, Ledger, Metric, NodeId, Period, PeriodKind, TenantId};
use tessera_edge::control::auth;
use tessera_edge::control::now_ms;
use tessera_edge::control::ops::{self, Usage};
use tessera_edge::control::records::{Pending, RequestId};
use tessera_edge::work::rate::RateLimiter;
use tessera_sync::{Input, Message, Node, NodeState, SyncConfig};

const NODE: NodeId = NodeId(1);
/// The monthly requests quota of every tenant: never exhausted by the bench.
const QUOTA: u64 = 1_000_000_000_000;
/// Requests between two drains of the node's changes and outputs.
const DRAIN_EVERY: usize = 1000;
/// Ids are drawn like the admin API's: 1..=2^53-1.
const ID_MAX: u64 = (1 << 53) - 1;
const SEED: u64 = 0x7e55_e7a0_5eed;
/// What each request bills (a typical 256 KB photo to a small JPEG).
const USAGE: Usage = Usage {
    cpu_micros: 9_000,
    bytes_in: 262_144,
    bytes_out: 18_000,
};

/// SplitMix64 (Steele, Lea, Flood 2014): small, seeded, good enough to pick tenants.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (multiply-shift).
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    fn id(&mut self) -> u64 {
        self.next_u64() % ID_MAX + 1
    }
}

fn lock(node: &Mutex<Node>) -> MutexGuard<'_, Node> {
    node.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Step 1 (`routes::payer`): the bearer header, then the key against the directory.
fn authenticate(node: &Mutex<Node>, header: &str) -> TenantId {
    let caller = auth::bearer(Some(header))
        .and_then(auth::present)
        .and_then(|presented| {
            let node = lock(node);
            auth::check_presented(node.directory(), &presented, Scopes::RESIZE)
        })
        .unwrap_or_else(|e| panic!("a minted key is accepted: {}", e.code));
    caller.tenant
}

/// Step 2: the tenant's token bucket.
fn rate_check(rate: &RateLimiter, tenant: TenantId) {
    if let Err(retry_after_s) = rate.check(tenant, Instant::now()) {
        panic!("the bench rate never limits (retry after {retry_after_s} s)");
    }
}

/// Step 3 (`meter::admit`, local path): `ops::demands` and `ops::try_admit` under
/// one hold of the lock, as the node does.
fn admit(node: &Mutex<Node>, tenant: TenantId, bytes_in: u64) {
    let mut node = lock(node);
    let now = now_ms();
    let demands = ops::demands(&node, tenant, bytes_in, now);
    if demands.is_empty() {
        return;
    }
    ops::try_admit(&mut node, &demands, now, ops::Attempt::First)
        .unwrap_or_else(|e| panic!("the bench quota is never short: {e:?}"));
}

/// The node's queue of usage records (`ControlPlane::push_record`), drained by the writer.
static RECORDS: Mutex<Vec<Pending>> = Mutex::new(Vec::new());

/// Step 4 (`meter::bill` up to the durability wait): a request id, `ops::record_usage`
/// and the usage record queued, under one hold of the lock; returns the ticket.
fn bill(node: &Mutex<Node>, tenant: TenantId, usage: Usage) -> u64 {
    let request_id = RequestId::next();
    let mut node = lock(node);
    let now = now_ms();
    let ticket =
        ops::record_usage(&mut node, tenant, usage, now).expect("metering never overflows here");
    RECORDS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Pending {
            at_ms: now,
            tenant,
            key: None,
            request_id,
            route: "/v1/resize",
            status: 200,
            bytes_in: usage.bytes_in,
            bytes_out: usage.bytes_out,
            cpu_micros: usage.cpu_micros,
        });
    ticket
}

/// One whole request's auth, rate, admission and metering.
fn request(node: &Mutex<Node>, rate: &RateLimiter, header: &str) -> u64 {
    let tenant = authenticate(node, header);
    rate_check(rate, tenant);
    admit(node, tenant, USAGE.bytes_in);
    bill(node, tenant, USAGE)
}

/// How long one background hold of the lock lasted: wall time, and this thread's CPU time
/// (on a shared machine a hold can be preempted; the CPU time is the work it did).
#[derive(Clone, Copy, Default)]
struct Hold {
    wall_ns: u64,
    cpu_ns: u64,
}

/// What the writer and the transport do in the background; returns how long the lock was
/// held.
fn drain(node: &Mutex<Node>) -> Hold {
    let mut node = lock(node);
    let cpu_started = thread_cpu_ns();
    let started = Instant::now();
    let now = now_ms();
    if now >= node.next_wakeup_ms() {
        node.handle(now, Input::Tick);
        black_box(node.take_outputs());
    }
    let changes = node.take_changes();
    let records = std::mem::take(&mut *RECORDS.lock().unwrap_or_else(PoisonError::into_inner));
    let held = Hold {
        wall_ns: started.elapsed().as_nanos() as u64,
        cpu_ns: thread_cpu_ns() - cpu_started,
    };
    drop(node);
    // The writer drops the changes and encodes the records outside the lock.
    black_box(changes);
    for record in &records {
        black_box(record.encode(NODE));
    }
    held
}

/// Times one call into the core, as one hold of the node's lock would last.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Hold) {
    let cpu_started = thread_cpu_ns();
    let started = Instant::now();
    let out = f();
    let held = Hold {
        wall_ns: started.elapsed().as_nanos() as u64,
        cpu_ns: thread_cpu_ns() - cpu_started,
    };
    (out, held)
}

/// The longest holds of one kind, and how many there were.
#[derive(Default)]
struct Longest {
    calls: usize,
    max: Hold,
    cpu_total_ns: u64,
    over_1ms: usize,
}

impl Longest {
    fn add(&mut self, hold: Hold) {
        self.calls += 1;
        self.max.wall_ns = self.max.wall_ns.max(hold.wall_ns);
        self.max.cpu_ns = self.max.cpu_ns.max(hold.cpu_ns);
        self.cpu_total_ns += hold.cpu_ns;
        self.over_1ms += usize::from(hold.cpu_ns > 1_000_000);
    }

    fn print(&self, what: &str) {
        println!(
            "{what:<44} {:>6} {:>10.3} {:>10.3} {:>8} {:>10.1}",
            self.calls,
            self.max.cpu_ns as f64 / 1e6,
            self.max.wall_ns as f64 / 1e6,
            self.over_1ms,
            self.cpu_total_ns as f64 / 1e6,
        );
    }
}

/// Ticks `node` whenever it asks to be woken, from `from_ms` to `until_ms` (injected clock),
/// as the transport does: each tick, with its outputs taken, is one hold; the writer's
/// `take_changes` after each tick is another (dropped outside the hold).
fn drive(node: &mut Node, from_ms: u64, until_ms: u64) -> (Longest, Longest) {
    let (mut ticks, mut takes) = (Longest::default(), Longest::default());
    let mut now = from_ms;
    while now <= until_ms {
        let (outputs, hold) = timed(|| {
            node.handle(now, Input::Tick);
            node.take_outputs()
        });
        ticks.add(hold);
        drop(outputs);
        let (changes, hold) = timed(|| node.take_changes());
        takes.add(hold);
        drop(changes);
        now = node.next_wakeup_ms().max(now + 1);
    }
    (ticks, takes)
}

/// The longest single holds of the core's background work at this scale (see the module
/// doc), on a node of its own made from `state`, with an injected clock.
fn longest_holds(state: NodeState) {
    const HOUR_MS: u64 = 3_600_000;
    const MINUTE_MS: u64 = 60_000;
    // 20 minutes into the current hour, so that the next hour is 40 minutes away.
    let start = now_ms() / HOUR_MS * HOUR_MS + 20 * MINUTE_MS;
    let config = SyncConfig::default();
    let (entries_max, counters_max) = (config.ledger_entries_max, config.escrow_counters_max);
    let mut node = Node::new(NODE, config, SEED, state, start);
    let peers: Vec<NodeId> = (2..=9).map(NodeId).collect();
    let mut connect = Longest::default();
    for &peer in &peers {
        let (outputs, hold) = timed(|| {
            node.handle(start, Input::PeerConnected(peer));
            node.take_outputs()
        });
        connect.add(hold);
        drop(outputs);
    }
    let first_tick = {
        let (outputs, hold) = timed(|| {
            node.handle(start, Input::Tick);
            node.take_outputs()
        });
        drop(outputs);
        hold
    };
    let (first_minute, first_takes) = drive(&mut node, start + 1, start + MINUTE_MS);
    let grants = node.escrow().iter().count();
    let (steady, steady_takes) = drive(&mut node, start + MINUTE_MS + 1, start + 2 * MINUTE_MS);
    // Traffic: every tenant consumes once at the same moment (100K keys with recent demand),
    // then 10 s of ticks (the demand expires after `donor_busy_ms`).
    let busy_at = start + 2 * MINUTE_MS + 1;
    let month = Period::containing(PeriodKind::Month, busy_at);
    let tenant_ids: Vec<TenantId> = node.directory().tenants().map(|(id, _)| id).collect();
    for tenant in tenant_ids {
        let key = CounterKey::new(tenant, month, Metric::Requests);
        node.increment(busy_at, key, 1)
            .expect("metering never overflows here");
        node.consume(busy_at, key, 1)
            .expect("the bench quota is never short");
    }
    let (busy, busy_takes) = drive(&mut node, busy_at, busy_at + 10_000);
    let next_hour = Period::containing(PeriodKind::Hour, start).end_ms();
    let (hourly, hourly_takes) = drive(&mut node, next_hour, next_hour + MINUTE_MS);
    let now = next_hour + MINUTE_MS + 1;

    // A peer's relayed ledger push: `entries_max` new entries of its own slot.
    let peer = peers[0];
    let month = Period::containing(PeriodKind::Month, now);
    let keys: Vec<CounterKey> = node
        .escrow()
        .iter()
        .map(|(key, _)| *key)
        .filter(|key| key.period == month)
        .take(entries_max.max(counters_max))
        .collect();
    let mut theirs = Ledger::new(peer);
    for key in keys.iter().take(entries_max) {
        theirs.increment(*key, 1).expect("a fresh slot");
    }
    let delta = theirs.delta_since(&Default::default(), entries_max);
    let (outputs, ledger_push) = timed(|| {
        node.handle(
            now,
            Input::Message {
                from: peer,
                message: Message::LedgerPush {
                    delta,
                    first_change_ms: now,
                    relay: true,
                },
            },
        );
        node.take_outputs()
    });
    let relayed = outputs.len();
    drop(outputs);
    // A peer's escrow push: `counters_max` counters, each with a right the home gave it.
    let counters: Vec<_> = keys
        .iter()
        .take(counters_max)
        .filter_map(|key| {
            let mut counter = node.escrow().get(key)?.clone();
            counter.transfer(NODE, peer, 1).ok()?;
            Some((*key, counter))
        })
        .collect();
    let refused = node.stats().messages_refused;
    let (outputs, escrow_push) = timed(|| {
        node.handle(
            now,
            Input::Message {
                from: peer,
                message: Message::EscrowPush(counters),
            },
        );
        node.take_outputs()
    });
    drop(outputs);
    let refused = node.stats().messages_refused - refused;
    let (after, after_takes) = drive(&mut node, now + 1, now + 10_000);

    println!();
    println!(
        "longest single holds (injected clock, one node, {} peers connected, {grants} counters \
         after the first minute; a tick's hold includes take_outputs):",
        peers.len()
    );
    println!(
        "{:<44} {:>6} {:>10} {:>10} {:>8} {:>10}",
        "call", "calls", "max CPU ms", "max wall", ">1ms CPU", "CPU sum ms"
    );
    connect.print("PeerConnected (x8, before the first tick)");
    let mut one = Longest::default();
    one.add(first_tick);
    one.print("first tick after Node::new");
    first_minute.print("ticks, rest of the first minute");
    first_takes.print("take_changes, first minute");
    steady.print("ticks, a steady minute");
    steady_takes.print("take_changes, a steady minute");
    busy.print("ticks, 10 s after 100K tenants consumed");
    busy_takes.print("take_changes, those 10 s");
    hourly.print("ticks, first minute of the next hour");
    hourly_takes.print("take_changes, first minute of the hour");
    let mut one = Longest::default();
    one.add(ledger_push);
    one.print(&format!(
        "LedgerPush ({entries_max} entries, relay: {relayed} out)"
    ));
    let mut one = Longest::default();
    one.add(escrow_push);
    one.print(&format!(
        "EscrowPush ({counters_max} counters, {refused} refused)"
    ));
    after.print("ticks, the 10 s after the pushes");
    after_takes.print("take_changes, the 10 s after the pushes");
}

/// CPU time this thread has run (ns): what a chunk cost with the time it sat preempted
/// left out (the machine may be shared).
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "CLOCK_THREAD_CPUTIME_ID is readable");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Resident memory of this process, from `/proc/self/status`.
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// Percentile `p` (0..=100) of sorted samples.
fn pct(sorted: &[u32], p: f64) -> u32 {
    let i = ((sorted.len() as f64 - 1.0) * p / 100.0).round() as usize;
    sorted[i]
}

struct Built {
    node: Mutex<Node>,
    /// `Authorization` header values, one per tenant.
    headers: Vec<String>,
    tenants: Vec<TenantId>,
    /// The state the node was made from, for the holds measured with an injected clock.
    state: NodeState,
}

fn build(count: usize, rng: &mut SplitMix64) -> Built {
    let total = Instant::now();

    let started = Instant::now();
    let keys: Vec<auth::NewKey> = (0..count).map(|_| auth::new_key()).collect();
    let mint_ms = ms(started);

    let started = Instant::now();
    let now = now_ms();
    let mut directory = Directory::new(NODE);
    let mut tenants = Vec::with_capacity(count);
    for (i, minted) in keys.iter().enumerate() {
        let tenant = TenantId(rng.id());
        let changes = [
            Change::CreateTenant {
                tenant,
                name: format!("tenant-{i}"),
                home: NODE,
            },
            Change::CreateKey {
                tenant,
                key: KeyId(rng.id()),
                prefix: minted.prefix.clone(),
                secret_hash: minted.secret_hash,
                scopes: Scopes::RESIZE,
                label: "bench".to_owned(),
            },
            Change::SetQuota {
                tenant,
                metric: Metric::Requests,
                period: PeriodKind::Month,
                limit: Some(QUOTA),
            },
        ];
        for change in changes {
            directory
                .change(now, "bench", change)
                .expect("a fresh random id is free");
        }
        tenants.push(tenant);
    }
    let directory_ms = ms(started);

    let started = Instant::now();
    let state = NodeState {
        ledger: Ledger::new(NODE),
        directory,
        escrow: EscrowBook::new(),
    };
    let copy = state.clone();
    let mut node = Node::new(NODE, SyncConfig::default(), SEED, state, now_ms());
    let new_ms = ms(started);

    let started = Instant::now();
    node.handle(now_ms(), Input::Tick);
    let grant_ms = ms(started);
    let grants = node.escrow().iter().count();

    let started = Instant::now();
    let changes = node.take_changes();
    black_box(node.take_outputs());
    let take_ms = ms(started);
    let persisted = changes.escrow.len() + changes.ledger.len() + changes.directory.len();
    drop(changes);

    let headers = keys.iter().map(|k| format!("Bearer {}", k.key)).collect();
    println!(
        "build: {count} tenants in {:.0} ms — mint keys {mint_ms:.0} ms, directory \
         ({} ops) {directory_ms:.0} ms, Node::new {new_ms:.0} ms, first Tick (quota → {grants} \
         local grants) {grant_ms:.0} ms, first take_changes ({persisted} items) {take_ms:.0} ms",
        ms(total),
        3 * count,
    );
    Built {
        node: Mutex::new(node),
        headers,
        tenants,
        state: copy,
    }
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .map(|a| {
            a.parse()
                .expect("arguments: [TENANTS] [ITERATIONS] [SAMPLE]")
        })
        .collect();
    let count = args.first().copied().unwrap_or(100_000).max(1);
    let iterations = args.get(1).copied().unwrap_or(2_000_000).max(DRAIN_EVERY);
    let sample = args.get(2).copied().unwrap_or(500_000).max(DRAIN_EVERY);

    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "machine: {cpus} CPUs, {}; load average at start {}",
        cpu_model(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );

    let mut rng = SplitMix64(SEED);
    let built = build(count, &mut rng);
    let rate = RateLimiter::new(1e9, 1e9, 1_000_000);
    let (node, headers) = (&built.node, &built.headers);
    println!("RSS after build: {:.0} MiB", rss_mib());
    longest_holds(built.state);
    if std::env::var_os("TESSERA_BENCH_HOLDS_ONLY").is_some_and(|v| v == "1") {
        return;
    }

    // Every tenant once (ledger slots and rate buckets exist, as in mid-month), then a
    // random warm-up.
    let mut drains: Vec<Hold> = Vec::new();
    for (i, header) in headers.iter().enumerate() {
        black_box(request(node, &rate, header));
        if i % DRAIN_EVERY == DRAIN_EVERY - 1 {
            drain(node);
        }
    }
    for i in 0..iterations / 10 {
        black_box(request(node, &rate, &headers[rng.below(count)]));
        if i % DRAIN_EVERY == DRAIN_EVERY - 1 {
            drain(node);
        }
    }
    drain(node);
    println!("RSS after warm-up: {:.0} MiB", rss_mib());

    // Pass 1: the whole sequence, one clock read per chunk of DRAIN_EVERY requests.
    let mut picks = vec![0usize; DRAIN_EVERY];
    let mut whole_ns: u128 = 0;
    let mut whole_cpu_ns: u64 = 0;
    let mut chunk_ns: Vec<u64> = Vec::with_capacity(iterations / DRAIN_EVERY);
    let mut done = 0;
    while done < iterations {
        picks.iter_mut().for_each(|p| *p = rng.below(count));
        let cpu_started = thread_cpu_ns();
        let started = Instant::now();
        for &p in &picks {
            black_box(request(node, &rate, &headers[p]));
        }
        let elapsed = started.elapsed().as_nanos();
        whole_cpu_ns += thread_cpu_ns() - cpu_started;
        whole_ns += elapsed;
        chunk_ns.push(elapsed as u64);
        done += DRAIN_EVERY;
        drains.push(drain(node));
    }
    let whole_mean = whole_ns as f64 / done as f64;
    let whole_cpu_mean = whole_cpu_ns as f64 / done as f64;
    chunk_ns.sort_unstable();
    let rss_after_pass1 = rss_mib();

    // Pass 2: a clock read between steps on every request.
    let mut steps: [Vec<u32>; 5] = std::array::from_fn(|_| Vec::with_capacity(sample));
    let mut done2 = 0;
    while done2 < sample {
        picks.iter_mut().for_each(|p| *p = rng.below(count));
        for &p in &picks {
            let t0 = Instant::now();
            let tenant = authenticate(node, &headers[p]);
            let t1 = Instant::now();
            rate_check(&rate, tenant);
            let t2 = Instant::now();
            admit(node, tenant, USAGE.bytes_in);
            let t3 = Instant::now();
            black_box(bill(node, tenant, USAGE));
            let t4 = Instant::now();
            let ns = |a: Instant, b: Instant| (b - a).as_nanos().min(u128::from(u32::MAX)) as u32;
            steps[0].push(ns(t0, t1));
            steps[1].push(ns(t1, t2));
            steps[2].push(ns(t2, t3));
            steps[3].push(ns(t3, t4));
            steps[4].push(ns(t0, t4));
        }
        done2 += DRAIN_EVERY;
        drains.push(drain(node));
    }

    // The cost of one clock read, to read pass 2's figures by.
    let reads = 1_000_000u32;
    let started = Instant::now();
    for _ in 0..reads {
        black_box(Instant::now());
    }
    let clock_ns = started.elapsed().as_nanos() as f64 / f64::from(reads);

    // One admin edit on the built node: the lock is held for the whole reconciliation.
    let mut edit_ns: Vec<u64> = Vec::new();
    for _ in 0..10 {
        let tenant = built.tenants[rng.below(count)];
        let mut guard = lock(node);
        let started = Instant::now();
        guard
            .edit_directory(
                now_ms(),
                "bench",
                Change::SetQuota {
                    tenant,
                    metric: Metric::Requests,
                    period: PeriodKind::Month,
                    limit: Some(QUOTA),
                },
            )
            .expect("the tenant exists");
        edit_ns.push(started.elapsed().as_nanos() as u64);
    }
    edit_ns.sort_unstable();

    println!();
    println!(
        "{done} requests timed whole over {count} tenants (+ {sample} instrumented), \
         drained every {DRAIN_EVERY}; one Instant::now() = {clock_ns:.1} ns"
    );
    println!(
        "{:<24} {:>9} {:>8} {:>8} {:>8} {:>9}",
        "step (instrumented)", "mean ns", "p50", "p99", "p99.9", "max"
    );
    let names = ["1 auth", "2 rate", "3 admission", "4 metering", "all four"];
    for (name, samples) in names.iter().zip(steps.iter_mut()) {
        let mean = samples.iter().map(|&v| f64::from(v)).sum::<f64>() / samples.len() as f64;
        samples.sort_unstable();
        println!(
            "{name:<24} {mean:>9.0} {:>8} {:>8} {:>8} {:>9}",
            pct(samples, 50.0),
            pct(samples, 99.0),
            pct(samples, 99.9),
            samples[samples.len() - 1],
        );
    }
    let chunk = |p: f64| {
        let i = ((chunk_ns.len() as f64 - 1.0) * p / 100.0).round() as usize;
        chunk_ns[i] as f64 / DRAIN_EVERY as f64
    };
    println!(
        "{:<24} {whole_mean:>9.0}   (mean over chunks of {DRAIN_EVERY}: best {:.0}, p50 {:.0}, \
         worst {:.0})",
        "whole, uninstrumented",
        chunk(0.0),
        chunk(50.0),
        chunk(100.0),
    );
    println!(
        "{:<24} {whole_cpu_mean:>9.0}   (thread CPU time: the same requests without the time \
         spent preempted)",
        "whole, on-CPU"
    );
    let mut wall: Vec<u64> = drains.iter().map(|h| h.wall_ns).collect();
    let mut cpu: Vec<u64> = drains.iter().map(|h| h.cpu_ns).collect();
    wall.sort_unstable();
    cpu.sort_unstable();
    let mean = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len() as f64;
    let at = |v: &[u64], p: f64| v[((v.len() as f64 - 1.0) * p / 100.0).round() as usize] as f64;
    println!(
        "background drain (not in the figures above), {} drains of {DRAIN_EVERY} requests, lock \
         held: wall mean {:.0} µs, p99 {:.0} µs, max {:.0} µs = {:.0} ns per request; on-CPU \
         mean {:.0} µs, p99 {:.0} µs, max {:.0} µs = {:.0} ns per request",
        drains.len(),
        mean(&wall) / 1e3,
        at(&wall, 99.0) / 1e3,
        at(&wall, 100.0) / 1e3,
        mean(&wall) / DRAIN_EVERY as f64,
        mean(&cpu) / 1e3,
        at(&cpu, 99.0) / 1e3,
        at(&cpu, 100.0) / 1e3,
        mean(&cpu) / DRAIN_EVERY as f64,
    );
    println!(
        "one Node::edit_directory (SetQuota) on this node, lock held: median {:.2} ms, \
         max {:.2} ms",
        edit_ns[edit_ns.len() / 2] as f64 / 1e6,
        edit_ns[edit_ns.len() - 1] as f64 / 1e6,
    );
    println!(
        "RSS after pass 1: {rss_after_pass1:.0} MiB, after pass 2: {:.0} MiB",
        rss_mib()
    );
    println!(
        "target < 5000 ns per request: {} ({whole_mean:.0} ns uninstrumented)",
        if whole_mean < 5000.0 {
            "met"
        } else {
            "NOT met"
        }
    );
}
