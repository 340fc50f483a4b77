//! Fleet-scale figures of the protocol core (issue #13): the core driven on the simulated
//! network (`tessera_sync::sim`) at N nodes, default `SyncConfig` (production), random
//! 64-bit node ids (production byte sizes), printed as one markdown table with a column
//! per N.
//!
//! Run (release; the `sim` feature comes with the crate's dev-dependency on itself):
//! `cargo bench -p tessera-sync --bench fleet_scale` (or with `--features sim`, the same).
//! `FLEET_N=5,20,50` (the default) picks the fleet sizes, `FLEET_N=100,200` the large
//! ones; `FLEET_SEED` (default 1) the seed every run uses (node ids, network, nodes,
//! traffic), printed; `FLEET_THREADS` (default: the machine's cores) how many runs go at
//! once. Cost on a 2-core AMD EPYC (CPU time, all runs of a column): about 1 s at N=5,
//! 5 s at 20, 25 s at 50, 2 minutes at 100, 9 minutes at 200 — so N=5,20,50 take under a
//! minute of wall time on two threads, N=200 ten minutes or more. Each column prints its
//! CPU and wall time (docs/BENCHMARKS.md has the figures). Nothing here asserts a time:
//! only safety (never more admitted than the quota) is checked.
//!
//! The quota liveness and heal scenarios are `tessera_sync::sim::fleet` (sync/src/sim/
//! fleet.rs), which `tests/fleet.rs` runs too, at N=50 and smaller sizes, against the
//! issue's goals; this file adds the propagation and memory measurements, and the table.
//!
//! # What each row measures
//! Networks (`sim::NetConfig`): *perfect* 1–5 ms one way; *wan* 20–60 ms, no loss;
//! *faulty* 1–200 ms, 20% lost, 10% duplicated.
//!
//! - **Quota liveness.** One tenant, home node 0, a monthly request quota Q = 10,000 set
//!   at the home; 10 s later traffic starts: 1,000 requests/s offered (one per simulated
//!   ms), each admitted by `consume` and then billed (a ledger increment), as the edge
//!   does; refused requests are not retried. The *ideal time* is Q / offered rate = 10 s:
//!   what admitting the whole quota takes if rights were never the bottleneck. The row
//!   gives the share of Q admitted within 1x / 1.5x / 3x the ideal time from the first
//!   request. Traffic shapes: *1 node* (all at node 1, never the home), *3 nodes* (nodes
//!   1, 2, 3 in turn, a third each), *moving* (one node at a time, a new one drawn every
//!   2 s from the seed, starting at node 1). Safety is asserted: the true consumption never
//!   exceeds Q (each node's own net consumption ≤ its limit is checked at every step by
//!   the simulator).
//! - **Propagation.** On a quiet fleet, 200 increments, one every 250 ms, each of a fresh
//!   key at a node drawn from the seed; a sample's time is from its increment until every
//!   node's replica holds it (polled every 5 ms); p50 / p99 / max of the 200. Runs stop
//!   120 s after the last sample; a sample not everywhere by then is reported.
//! - **Heal.** wan. Halves (nodes `0..N/2` and `N/2..N`) partitioned; for 19 s every node
//!   increments one key every 100 ms (tenants drawn from 1,000, metrics from 4), then 1 s
//!   quiet (each half converges within itself), then the heal. Measured: bytes of every
//!   message sent cluster-wide from the heal until every node's ledger version vector is
//!   the same (polled every 10 ms), over the *minimum*: each node must receive, once, the
//!   entries the other half wrote that it lacks, and nothing else — per receiver, the
//!   encoded `LedgerChunk` messages carrying exactly those entries in the fewest chunks
//!   the protocol allows (`ledger_entries_max` each), summed over every receiver. Digests,
//!   pulls, duplicates and repeats from several peers are what the measured bytes add.
//! - **Escrow cells.** After the 1-node wan run and after the moving wan run: the most
//!   cells (grant, transfer, consumption, retirement and refund cells; `BoundedCounter::cell_count`) any
//!   replica holds in the tenant's counter, and that counter's encoded size. A counter
//!   travels whole (it is pushed whole on every change), so this is also each push's size.
//! - **Escrow push bytes/s.** The 1-node traffic shape on the perfect network: bytes of
//!   `escrow_push` messages sent cluster-wide during the ideal time (the first 10 s of
//!   traffic, when the tenant is busy throughout), per second; and every escrow message
//!   kind together (pushes, digests, buckets, counters, rights requests and replies).
//! - **Ledger memory per node.** A replica holding, for each of N writing nodes, all four
//!   metrics of every tenant in one month — what every node holds when every node serves
//!   every tenant. Measured at 10,000 tenants (each origin's ledger built by increments,
//!   three passes over its keys in a fresh random order each, then merged into one
//!   replica), with a counting allocator: heap bytes of the replica per slot, and
//!   `Ledger::encode` bytes per slot. The row gives `100,000 tenants × 4 metrics × N
//!   writers × bytes per slot` for both (the in-memory figure first), and the per-slot
//!   sizes.
//! - **Oversized**: messages the simulator dropped, across all of the N's runs, for being
//!   over the transport's 1 MiB frame limit (the transport drops them silently), by kind.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tessera_crdt::{CounterKey, Ledger, Metric, NodeId};
use tessera_sync::sim::fleet::{
    fleet, heal, key, liveness, traffic_rng, Heal, Liveness, Net, Oversized, Shape, HEAL_WAIT_MS,
    HEAL_WRITE_MS, QUOTA,
};
use tessera_sync::sim::random_ids;

mod common;
use common::live_bytes;

const PROPAGATION_SAMPLES: u64 = 200;
const PROPAGATION_EVERY_MS: u64 = 250;
const PROPAGATION_POLL_MS: u64 = 5;
const PROPAGATION_WAIT_MS: u64 = 120_000;
const MEMORY_SAMPLE_TENANTS: u64 = 10_000;
const MEMORY_TENANTS: u64 = 100_000;

struct Propagation {
    /// Milliseconds per sample that reached every node in time, sorted.
    latencies_ms: Vec<u64>,
    /// Samples some node still lacked when the run stopped.
    incomplete: usize,
    /// `ledger_push` bytes sent during the run, per increment and per node: what
    /// dissemination costs each node, which must not grow with N.
    push_bytes_per_increment_per_node: f64,
    oversized: Oversized,
}

fn propagation(n: usize, seed: u64, net: Net) -> Propagation {
    let mut sim = fleet(n, seed, net);
    sim.run_for(5_000);
    let pushed =
        |sim: &tessera_sync::sim::Sim| sim.bytes_by_kind.get("ledger_push").copied().unwrap_or(0);
    let pushed_before = pushed(&sim);
    let mut rng = traffic_rng(seed, 2);
    // (increment time, origin, key, nodes that lack it)
    let mut pending: Vec<(u64, NodeId, CounterKey, Vec<usize>)> = Vec::new();
    let mut latencies_ms = Vec::new();
    let mut next_sample_ms = sim.now_ms;
    let mut samples = 0;
    let mut last_sample_ms = sim.now_ms;
    loop {
        if samples < PROPAGATION_SAMPLES && sim.now_ms >= next_sample_ms {
            let origin = rng.below(n as u64) as usize;
            let k = key(10_000 + samples, Metric::Requests);
            sim.increment(origin, k, 1);
            let others = (0..n).filter(|j| *j != origin).collect();
            pending.push((sim.now_ms, sim.ids[origin], k, others));
            samples += 1;
            last_sample_ms = sim.now_ms;
            next_sample_ms += PROPAGATION_EVERY_MS;
        }
        sim.run_for(PROPAGATION_POLL_MS);
        let now = sim.now_ms;
        pending.retain_mut(|(at, origin, k, lacking)| {
            lacking.retain(|j| sim.node(*j).ledger().slot(k, *origin).value == 0);
            if lacking.is_empty() {
                latencies_ms.push(now - *at);
            }
            !lacking.is_empty()
        });
        let done = samples == PROPAGATION_SAMPLES
            && (pending.is_empty() || now > last_sample_ms + PROPAGATION_WAIT_MS);
        if done {
            break;
        }
    }
    latencies_ms.sort_unstable();
    let push_bytes = (pushed(&sim) - pushed_before) as f64;
    Propagation {
        latencies_ms,
        incomplete: pending.len(),
        push_bytes_per_increment_per_node: push_bytes / PROPAGATION_SAMPLES as f64 / n as f64,
        oversized: sim.oversized_by_kind.clone(),
    }
}

struct Memory {
    heap_bytes_per_slot: f64,
    encoded_bytes_per_slot: f64,
}

/// One replica holding `n` origins' slots of every tenant of the sample (see the doc).
fn ledger_memory(n: usize, seed: u64) -> Memory {
    let ids = random_ids(n, seed);
    let mut rng = traffic_rng(seed, 4);
    let keys: Vec<CounterKey> = (0..MEMORY_SAMPLE_TENANTS)
        .flat_map(|t| Metric::ALL.map(|m| key(t, m)))
        .collect();
    let live_before = live_bytes();
    let mut replica = Ledger::new(ids[0]);
    for origin in &ids {
        let mut ledger = Ledger::new(*origin);
        let mut order = keys.clone();
        for _ in 0..3 {
            for i in (1..order.len()).rev() {
                order.swap(i, rng.below(i as u64 + 1) as usize);
            }
            for k in &order {
                ledger.increment(*k, 1).expect("increment");
            }
        }
        replica.merge(&ledger);
    }
    let heap = live_bytes() - live_before;
    let slots = replica.slot_count();
    assert_eq!(slots, keys.len() * n);
    let encoded = replica.encode().len();
    Memory {
        heap_bytes_per_slot: heap as f64 / slots as f64,
        encoded_bytes_per_slot: encoded as f64 / slots as f64,
    }
}

enum Outcome {
    Liveness(Liveness),
    Propagation(Propagation),
    Heal(Heal),
    Memory(Memory),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Run {
    Liveness(Shape, Net),
    Propagation(Net),
    Heal,
    Memory,
}

fn execute(run: Run, n: usize, seed: u64) -> Outcome {
    match run {
        Run::Liveness(shape, net) => Outcome::Liveness(liveness(n, seed, shape, net, QUOTA)),
        Run::Propagation(net) => Outcome::Propagation(propagation(n, seed, net)),
        Run::Heal => Outcome::Heal(heal(n, seed, HEAL_WRITE_MS)),
        Run::Memory => Outcome::Memory(ledger_memory(n, seed)),
    }
}

fn runs() -> Vec<Run> {
    let mut runs = Vec::new();
    for net in [Net::Wan, Net::Faulty] {
        for shape in [Shape::OneNode, Shape::ThreeNodes, Shape::Moving] {
            runs.push(Run::Liveness(shape, net));
        }
        runs.push(Run::Propagation(net));
    }
    runs.push(Run::Liveness(Shape::OneNode, Net::Perfect));
    runs.push(Run::Heal);
    runs.push(Run::Memory);
    runs
}

/// This thread's CPU time (user + system) from `/proc/thread-self/stat` (Linux; fields 14
/// and 15 of proc(5), in clock ticks of 10 ms: `USER_HZ` is 100 on Linux), or `None`. CPU
/// time rather than elapsed time: the figure must not depend on what else the machine runs.
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let ticks = |field: usize| fields.get(field - 3)?.parse::<u64>().ok();
    Some(Duration::from_millis((ticks(14)? + ticks(15)?) * 10))
}

/// How long a run took: its thread's CPU time where `/proc` tells it, else elapsed time.
#[derive(Clone, Copy)]
struct Took {
    cpu: Option<Duration>,
    elapsed: Duration,
}

impl Took {
    fn best(&self) -> Duration {
        self.cpu.unwrap_or(self.elapsed)
    }
}

/// Every run of one N, on `threads` threads; each result with the time its run took.
fn run_all(n: usize, seed: u64, threads: usize) -> BTreeMap<Run, (Outcome, Took)> {
    let queue = Mutex::new(runs().into_iter().collect::<VecDeque<Run>>());
    let results = Mutex::new(BTreeMap::new());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let Some(run) = queue.lock().expect("queue").pop_front() else {
                    break;
                };
                let (started, cpu_before) = (Instant::now(), thread_cpu());
                let outcome = execute(run, n, seed);
                let took = Took {
                    cpu: thread_cpu()
                        .zip(cpu_before)
                        .map(|(after, before)| after - before),
                    elapsed: started.elapsed(),
                };
                eprintln!(
                    "  N={n} {run:?}: CPU {:.1?}, elapsed {:.1?}",
                    took.cpu.unwrap_or_default(),
                    took.elapsed
                );
                results
                    .lock()
                    .expect("results")
                    .insert(run, (outcome, took));
            });
        }
    });
    results.into_inner().expect("results")
}

fn percent(part: u64, whole: u64) -> String {
    let p = 100.0 * part as f64 / whole as f64;
    if p >= 99.95 || p == 0.0 {
        format!("{p:.0}%")
    } else {
        format!("{p:.1}%")
    }
}

fn bytes(b: f64) -> String {
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} KB", b / 1e3)
    } else {
        format!("{b:.0} B")
    }
}

fn seconds(ms: u64) -> String {
    if ms >= 1_000 {
        format!("{:.1} s", ms as f64 / 1_000.0)
    } else {
        format!("{ms} ms")
    }
}

/// A row's cell for one N, from that N's results.
type RowCell = fn(&BTreeMap<Run, (Outcome, Took)>, usize) -> String;

fn liveness_of(results: &BTreeMap<Run, (Outcome, Took)>, run: Run) -> &Liveness {
    match &results[&run].0 {
        Outcome::Liveness(l) => l,
        _ => unreachable!("a liveness run"),
    }
}

fn shares(results: &BTreeMap<Run, (Outcome, Took)>, shape: Shape, net: Net) -> String {
    let l = liveness_of(results, Run::Liveness(shape, net));
    l.admitted
        .iter()
        .map(|a| percent(*a, QUOTA))
        .collect::<Vec<_>>()
        .join(" / ")
}

fn push_bytes_cell(results: &BTreeMap<Run, (Outcome, Took)>, net: Net) -> String {
    let Outcome::Propagation(p) = &results[&Run::Propagation(net)].0 else {
        unreachable!("a propagation run")
    };
    format!("{:.0} B", p.push_bytes_per_increment_per_node)
}

fn propagation_cell(results: &BTreeMap<Run, (Outcome, Took)>, net: Net) -> String {
    let Outcome::Propagation(p) = &results[&Run::Propagation(net)].0 else {
        unreachable!("a propagation run")
    };
    let lat = &p.latencies_ms;
    if lat.is_empty() {
        return format!("none of {PROPAGATION_SAMPLES} arrived everywhere");
    }
    // Nearest rank over every sample, those that never arrived counting as the slowest.
    let total = lat.len() + p.incomplete;
    let rank = |q: f64| ((q * total as f64).ceil() as usize).max(1) - 1;
    let at = |q: f64| {
        lat.get(rank(q))
            .map_or(format!("> {}", seconds(PROPAGATION_WAIT_MS)), |ms| {
                seconds(*ms)
            })
    };
    let mut cell = format!("{} / {} / {}", at(0.5), at(0.99), at(1.0));
    if p.incomplete > 0 {
        cell += &format!(" ({} never arrived)", p.incomplete);
    }
    cell
}

fn rows() -> Vec<(&'static str, RowCell)> {
    vec![
        (
            "quota liveness: share of Q=10,000 admitted within 1x / 1.5x / 3x the ideal time, traffic at 1 node, wan",
            |r, _| shares(r, Shape::OneNode, Net::Wan),
        ),
        ("same, faulty network", |r, _| {
            shares(r, Shape::OneNode, Net::Faulty)
        }),
        ("same, perfect network", |r, _| {
            shares(r, Shape::OneNode, Net::Perfect)
        }),
        ("traffic at 3 nodes, wan (1x / 1.5x / 3x)", |r, _| {
            shares(r, Shape::ThreeNodes, Net::Wan)
        }),
        ("same, faulty network", |r, _| {
            shares(r, Shape::ThreeNodes, Net::Faulty)
        }),
        (
            "traffic moving between nodes every 2 s, wan (1x / 1.5x / 3x)",
            |r, _| shares(r, Shape::Moving, Net::Wan),
        ),
        ("same, faulty network", |r, _| {
            shares(r, Shape::Moving, Net::Faulty)
        }),
        (
            "propagation of one increment to every node, wan: p50 / p99 / max",
            |r, _| propagation_cell(r, Net::Wan),
        ),
        ("same, faulty network", |r, _| {
            propagation_cell(r, Net::Faulty)
        }),
        (
            "ledger_push bytes per increment per node during the propagation runs, wan / faulty",
            |r, _| format!("{} / {}", push_bytes_cell(r, Net::Wan), push_bytes_cell(r, Net::Faulty)),
        ),
        (
            "bytes sent cluster-wide to heal a 20 s half/half partition (wan), × the minimum (measured / minimum, time to converge)",
            |r, _| {
                let Outcome::Heal(h) = &r[&Run::Heal].0 else {
                    unreachable!("the heal run")
                };
                let time = h
                    .converged_ms
                    .map_or(format!("not converged in {}", seconds(HEAL_WAIT_MS)), seconds);
                format!(
                    "{:.1}x ({} / {}, {time})",
                    h.bytes as f64 / h.minimum_bytes as f64,
                    bytes(h.bytes as f64),
                    bytes(h.minimum_bytes as f64)
                )
            },
        ),
        (
            "escrow cells of the counter after the run (encoded size), 1-node / moving traffic, wan",
            |r, _| {
                let one = liveness_of(r, Run::Liveness(Shape::OneNode, Net::Wan));
                let moving = liveness_of(r, Run::Liveness(Shape::Moving, Net::Wan));
                format!(
                    "{} ({}) / {} ({})",
                    one.cells,
                    bytes(one.counter_bytes as f64),
                    moving.cells,
                    bytes(moving.counter_bytes as f64)
                )
            },
        ),
        (
            "escrow push traffic for ONE busy tenant (1 node, 1,000 req/s), perfect network: escrow_push / all escrow kinds, per second",
            |r, _| {
                let l = liveness_of(r, Run::Liveness(Shape::OneNode, Net::Perfect));
                format!(
                    "{}/s / {}/s",
                    bytes(l.escrow_push_bytes_per_s),
                    bytes(l.escrow_bytes_per_s)
                )
            },
        ),
        (
            "ledger memory per node, 100K tenants × 4 metrics, every node writing every tenant, one month: in memory / encoded (bytes per slot)",
            |r, n| {
                let Outcome::Memory(m) = &r[&Run::Memory].0 else {
                    unreachable!("the memory run")
                };
                let slots = (MEMORY_TENANTS * Metric::ALL.len() as u64 * n as u64) as f64;
                format!(
                    "{} / {} ({:.0} / {:.0} B)",
                    bytes(slots * m.heap_bytes_per_slot),
                    bytes(slots * m.encoded_bytes_per_slot),
                    m.heap_bytes_per_slot,
                    m.encoded_bytes_per_slot
                )
            },
        ),
        (
            "messages dropped over the 1 MiB frame limit, all runs",
            |r, _| {
                let mut by_kind: Oversized = BTreeMap::new();
                for (outcome, _) in r.values() {
                    let oversized = match outcome {
                        Outcome::Liveness(l) => &l.oversized,
                        Outcome::Propagation(p) => &p.oversized,
                        Outcome::Heal(h) => &h.oversized,
                        Outcome::Memory(_) => continue,
                    };
                    for (kind, count) in oversized {
                        *by_kind.entry(kind).or_default() += count;
                    }
                }
                if by_kind.is_empty() {
                    return "0".to_owned();
                }
                by_kind
                    .iter()
                    .map(|(kind, count)| format!("{count} {kind}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        ),
        (
            "CPU time of the column's runs, summed (each run is single-threaded)",
            |r, _| {
                let total: Duration = r.values().map(|(_, took)| took.best()).sum();
                let what = if r.values().all(|(_, took)| took.cpu.is_some()) {
                    ""
                } else {
                    " (elapsed: no /proc)"
                };
                format!("{:.0} s{what}", total.as_secs_f64())
            },
        ),
    ]
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value}: not a number")),
        Err(_) => default,
    }
}

fn main() {
    let ns: Vec<usize> = std::env::var("FLEET_N")
        .unwrap_or_else(|_| "5,20,50".to_owned())
        .split(',')
        .map(|n| {
            n.trim()
                .parse()
                .unwrap_or_else(|_| panic!("FLEET_N: {n:?} is not a node count"))
        })
        .collect();
    assert!(
        ns.iter().all(|n| *n >= 4),
        "FLEET_N: at least 4 nodes (the home and three traffic nodes)"
    );
    let seed: u64 = env_or("FLEET_SEED", 1);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let threads: usize = env_or("FLEET_THREADS", cores).max(1);
    println!(
        "fleet scale: N = {ns:?}, seed {seed} for every run, {threads} threads, default SyncConfig, random 64-bit node ids"
    );
    let mut columns = Vec::new();
    for n in &ns {
        let started = Instant::now();
        let results = run_all(*n, seed, threads);
        let wall = started.elapsed();
        println!("N={n}: {:.0} s wall", wall.as_secs_f64());
        columns.push((*n, results, wall));
    }
    println!();
    let header: Vec<String> = columns.iter().map(|(n, _, _)| format!("N={n}")).collect();
    println!("| measured | {} |", header.join(" | "));
    println!("|---|{}", "---|".repeat(columns.len()));
    for (name, cell) in rows() {
        let cells: Vec<String> = columns.iter().map(|(n, r, _)| cell(r, *n)).collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
    let walls: Vec<String> = columns
        .iter()
        .map(|(_, _, wall)| format!("{:.0} s", wall.as_secs_f64()))
        .collect();
    println!(
        "| wall time of the column ({threads} threads) | {} |",
        walls.join(" | ")
    );
}
