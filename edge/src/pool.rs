//! The bounded pool of blocking resize workers.
//!
//! Image work is CPU-bound and synchronous, so it never runs on the async event loop. The
//! pool is a fixed set of OS threads (one per core by default), each owning one
//! [`tessera_resize::Pipeline`] so decode and resize buffers are reused from one job to the
//! next without locking — the reason this is a hand-rolled pool and not `spawn_blocking`,
//! whose threads are anonymous and unbounded in number.
//!
//! Admission is decided at once, never by waiting:
//! - the queue has an explicit bound; a job beyond it is refused ([`Rejected::QueueFull`]);
//! - the expected wait (queued input bytes × measured seconds per input byte ÷ workers)
//!   is compared with the job's deadline; a job that cannot start in time is refused
//!   ([`Rejected::DeadlineUnreachable`]) instead of occupying a slot it will waste;
//! - a worker that picks up a job whose deadline has passed, or whose requester has gone
//!   away, drops it without doing the work.
//!
//! A panic inside the pipeline is caught, answered as an internal error, and the worker
//! carries on with a fresh pipeline: one poisoned image must not take a worker away.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prometheus_client::metrics::gauge::Gauge;
use tessera_resize::{Limits, Options, Output, Pipeline, ResizeError};
use tokio::sync::oneshot;

/// What a worker reports back for one job.
#[derive(Debug)]
pub enum JobOutcome {
    /// The pipeline ran; `queue_wait` is the time between submission and start.
    Done {
        result: Result<Output, ResizeError>,
        etag: String,
        queue_wait: Duration,
    },
    /// The requester's `If-None-Match` matched the job's ETag; no work was done.
    NotModified { etag: String },
    /// The deadline passed while the job waited in the queue; no work was done.
    Expired,
    /// The pipeline panicked on this input (a bug, reported as 500).
    Panicked,
}

/// Why a job was refused at submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    QueueFull {
        retry_after_s: u32,
    },
    DeadlineUnreachable {
        wait_estimate: Duration,
        retry_after_s: u32,
    },
    ShuttingDown,
}

/// One unit of work: the input, what to do with it, and where to answer.
pub struct Job {
    pub input: Bytes,
    pub options: Options,
    /// The `If-None-Match` header value, checked against the job's ETag before any work.
    pub if_none_match: Option<String>,
    pub deadline: Instant,
    pub reply: oneshot::Sender<JobOutcome>,
}

/// Gauges the pool keeps current (registered by the caller's metrics registry).
#[derive(Clone, Default)]
pub struct PoolGauges {
    pub queue_depth: Gauge,
    pub busy_workers: Gauge,
}

pub struct Pool {
    shared: Arc<Shared>,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

struct Shared {
    state: Mutex<State>,
    available: Condvar,
    workers: usize,
    queue_max: usize,
    worker_niceness: i32,
    /// Measured cost of the work, as an exponentially weighted mean of nanoseconds per
    /// input byte (stored as f64 bits); 0 until the first job has run.
    ewma_ns_per_byte: AtomicU64,
    gauges: PoolGauges,
}

struct Queued {
    job: Job,
    submitted: Instant,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Queued>,
    queued_bytes: u64,
    closed: bool,
}

impl Pool {
    /// Starts `workers` threads sharing a queue of at most `queue_max` waiting jobs.
    pub fn start(
        workers: usize,
        queue_max: usize,
        worker_niceness: i32,
        limits: Limits,
        gauges: PoolGauges,
    ) -> Self {
        assert!(workers >= 1, "a pool needs at least one worker");
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            available: Condvar::new(),
            workers,
            queue_max,
            worker_niceness,
            ewma_ns_per_byte: AtomicU64::new(0f64.to_bits()),
            gauges,
        });
        let handles = (0..workers)
            .map(|index| {
                let shared = Arc::clone(&shared);
                let limits = limits.clone();
                std::thread::Builder::new()
                    .name(format!("tessera-resize-{index}"))
                    .spawn(move || worker_loop(&shared, limits))
                    .expect("spawning a resize worker thread")
            })
            .collect();
        Self {
            shared,
            handles: Mutex::new(handles),
        }
    }

    pub fn workers(&self) -> usize {
        self.shared.workers
    }

    /// Jobs that may wait in the queue.
    pub fn queue_max(&self) -> usize {
        self.shared.queue_max
    }

    /// Queues `job` or refuses it at once; never blocks.
    pub fn submit(&self, job: Job, now: Instant) -> Result<(), Rejected> {
        let shared = &self.shared;
        let mut state = shared.lock();
        let drain = shared.admit(&state)?;
        if now + drain > job.deadline {
            return Err(Rejected::DeadlineUnreachable {
                wait_estimate: drain,
                retry_after_s: retry_after_s(drain),
            });
        }
        state.queued_bytes += job.input.len() as u64;
        state.queue.push_back(Queued {
            job,
            submitted: now,
        });
        shared.gauges.queue_depth.set(state.queue.len() as i64);
        drop(state);
        shared.available.notify_one();
        Ok(())
    }

    /// Whether a job would be refused for a full queue or shutdown right now; lets a
    /// handler shed load before it reads a body.
    pub fn check_admission(&self) -> Result<(), Rejected> {
        self.shared.admit(&self.shared.lock()).map(drop)
    }

    /// Jobs waiting for a worker right now.
    pub fn queue_len(&self) -> usize {
        self.shared.lock().queue.len()
    }

    /// Refuses new jobs; workers finish what is queued and then exit.
    pub fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.available.notify_all();
    }

    /// Closes the pool and waits for every worker to exit.
    pub fn join(&self) {
        self.close();
        let handles = std::mem::take(&mut *self.handles.lock().unwrap_or_else(|e| e.into_inner()));
        for handle in handles {
            // A worker only ends by returning from its loop; a join error would mean a
            // panic escaped catch_unwind, which the loop does not allow.
            let _ = handle.join();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.close();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a queue and counters; a panic elsewhere cannot leave it half-updated.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The refusals that depend only on the pool (shut down, queue full); otherwise the
    /// expected wait before a new job would start.
    fn admit(&self, state: &State) -> Result<Duration, Rejected> {
        if state.closed {
            return Err(Rejected::ShuttingDown);
        }
        let drain = self.wait_estimate(state.queued_bytes);
        if state.queue.len() >= self.queue_max {
            return Err(Rejected::QueueFull {
                retry_after_s: retry_after_s(drain),
            });
        }
        Ok(drain)
    }

    fn wait_estimate(&self, queued_bytes: u64) -> Duration {
        let ns_per_byte = f64::from_bits(self.ewma_ns_per_byte.load(Ordering::Relaxed));
        let ns = ns_per_byte * queued_bytes as f64 / self.workers as f64;
        Duration::from_nanos(ns.min(u64::MAX as f64) as u64)
    }

    fn record_cost(&self, input_bytes: usize, elapsed: Duration) {
        if input_bytes == 0 {
            return;
        }
        let sample = elapsed.as_nanos() as f64 / input_bytes as f64;
        let old = f64::from_bits(self.ewma_ns_per_byte.load(Ordering::Relaxed));
        let new = if old == 0.0 {
            sample
        } else {
            0.9 * old + 0.1 * sample
        };
        // Races between workers lose a sample at worst; the estimate stays a mean.
        self.ewma_ns_per_byte
            .store(new.to_bits(), Ordering::Relaxed);
    }

    /// Blocks until a job is available; `None` once the pool is closed and drained.
    fn next(&self) -> Option<Queued> {
        let mut state = self.lock();
        loop {
            if let Some(queued) = state.queue.pop_front() {
                state.queued_bytes -= queued.job.input.len() as u64;
                self.gauges.queue_depth.set(state.queue.len() as i64);
                return Some(queued);
            }
            if state.closed {
                return None;
            }
            state = self
                .available
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}

fn retry_after_s(drain: Duration) -> u32 {
    drain.as_secs_f64().ceil().clamp(1.0, 60.0) as u32
}

/// Lowers the calling thread's scheduling priority by `niceness` (Linux: per thread).
///
/// Workers are throughput-bound and the event loop is latency-bound: at saturation, a
/// refusal or a health check must not wait behind a running decode for a time slice.
/// With the workers a few nice levels below, the scheduler runs the event loop's short
/// bursts first and hands every remaining cycle to the workers, so throughput is kept.
fn lower_priority(niceness: i32) {
    if niceness <= 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls on the calling thread's own id; no memory is shared.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        if libc::setpriority(libc::PRIO_PROCESS, tid, niceness) != 0 {
            tracing::warn!(niceness, "could not lower the resize worker's priority");
        }
    }
}

fn worker_loop(shared: &Shared, limits: Limits) {
    lower_priority(shared.worker_niceness);
    let mut pipeline = Pipeline::new(limits.clone());
    while let Some(Queued { job, submitted }) = shared.next() {
        let started = Instant::now();
        if job.reply.is_closed() {
            continue; // the requester gave up (timeout or disconnect)
        }
        if started > job.deadline {
            let _ = job.reply.send(JobOutcome::Expired);
            continue;
        }
        shared.gauges.busy_workers.inc();
        let etag = crate::etag::compute(&job.input, &job.options);
        let outcome = if job
            .if_none_match
            .as_deref()
            .is_some_and(|header| crate::etag::matches(header, &etag))
        {
            JobOutcome::NotModified { etag }
        } else {
            match catch_unwind(AssertUnwindSafe(|| {
                pipeline.process(&job.input, &job.options)
            })) {
                Ok(result) => JobOutcome::Done {
                    result,
                    etag,
                    queue_wait: started - submitted,
                },
                Err(_) => {
                    tracing::error!(
                        input_bytes = job.input.len(),
                        "resize pipeline panicked; worker continues with a fresh pipeline"
                    );
                    pipeline = Pipeline::new(limits.clone());
                    JobOutcome::Panicked
                }
            }
        };
        if matches!(&outcome, JobOutcome::Done { result: Ok(_), .. }) {
            // Only completed conversions say what work costs; refusals are near free.
            shared.record_cost(job.input.len(), started.elapsed());
        }
        shared.gauges.busy_workers.dec();
        let _ = job.reply.send(outcome);
    }
}
