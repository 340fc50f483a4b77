//! The bounded pool of blocking resize workers, with a fair queue between tenants.
//!
//! Image work is CPU-bound and synchronous, so it never runs on the async event loop. The
//! pool is a fixed set of OS threads (one per core by default), each owning one
//! [`tessera_resize::Pipeline`] so decode and resize buffers are reused from one job to the
//! next without locking — the reason this is a hand-rolled pool and not `spawn_blocking`,
//! whose threads are anonymous and unbounded in number.
//!
//! **Fair share.** Jobs queue per *flow* (the paying tenant; anonymous callers are one
//! flow) and workers take them in start-time fair queuing order: each job gets a virtual
//! start tag `max(now_v, its flow's last finish tag)` and a finish tag `start + predicted
//! cost`, and the job with the smallest start tag runs next. Flows with equal weight share
//! the workers in proportion to CPU time, not to how many requests they send, so a tenant
//! flooding at three times capacity delays another tenant's modest traffic by about one
//! job, not by the whole queue. (A FIFO served a light tenant 22% of the time under such a
//! flood.)
//!
//! Admission is decided at once, never by waiting:
//! - a job whose predicted cost ([`crate::work::cost`]) exceeds its deadline even on an idle
//!   node is refused before any work ([`Rejected::TooCostly`]): some stages (an AVIF
//!   encode) cannot be interrupted once started;
//! - each flow may queue at most `tenant_queue_max` jobs ([`Rejected::QueueFull`]);
//! - when the whole queue (`queue_max`) is full, a job from a lighter flow pushes out the
//!   newest job of the heaviest flow (answered [`JobOutcome::PushedOut`]); a job from the
//!   heaviest flow itself is refused;
//! - the expected wait in the fair queue (what every flow would be served before this
//!   job, over the workers) plus the job's own cost is compared with its deadline; a job
//!   that cannot finish in time is refused ([`Rejected::DeadlineUnreachable`]) instead of
//!   occupying a slot it will waste.
//!
//! **The express lane.** Workers are not preempted, so with every worker busy on a heavy
//! tenant's long jobs, a light tenant's 15 ms job would wait for one of them to end
//! (~250 ms for a 1 MB photo to WebP). One extra thread takes, only while every worker is
//! busy, the next job of a tenant that has nothing running, if it is predicted to take at
//! most `pool.express_cost_max_ms`; it runs at half the workers' niceness. It briefly
//! oversubscribes the cores by one thread; the scheduler then shares them, so the light
//! job runs at once on most of a core instead of queueing behind a whole heavy job, and
//! the heavy tenant loses that share for that long. A tenant gets the lane only for one
//! short job at a time, never more than one core's worth.
//!
//! **Work stops when nobody will take the answer.** A worker drops a job whose deadline
//! passed or whose requester went away before starting it, and the pipeline checks the
//! same two conditions between stages and inside its long loops
//! (`Pipeline::process_cancellable`), so a job stops within a check interval of either.
//! For an AVIF output the deadline checked is moved forward by the predicted encode,
//! which cannot be interrupted once begun: a job that can no longer finish stops before
//! the encode rather than running seconds past its deadline.
//! The cost model learns from every job, completed or not.
//!
//! A panic inside the pipeline is caught, answered as an internal error, and the worker
//! carries on with a fresh pipeline: one poisoned image must not take a worker away.

use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use tessera_crdt::TenantId;
use tessera_resize::{InfoBuffers, Limits, Options, Output, Pipeline, ResizeError};
use tokio::sync::oneshot;

use crate::http::body::Buffered;
use crate::work::cost::{CostModel, Shape};

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
    /// The deadline passed while the job waited or ran; the work was not finished.
    Expired,
    /// A lighter flow's job took this job's place in a full queue; no work was done.
    PushedOut { retry_after_s: u32 },
    /// The pipeline panicked on this input (a bug, reported as 500).
    Panicked,
    /// An info job ran ([`Work::Info`]).
    Info {
        result: Result<tessera_resize::Info, ResizeError>,
        queue_wait: Duration,
    },
}

/// What a job asks of its worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    /// Convert the input as the job's options say.
    Resize,
    /// Read what the input is (`tessera_resize::info`): the options are not used.
    Info,
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
    /// The job alone would take longer than its deadline allows.
    TooCostly {
        predicted: Duration,
        deadline: Duration,
    },
    ShuttingDown,
}

/// One unit of work: the input, what to do with it, who it is for, and where to answer.
pub struct Job {
    /// The input with its charge to the body-memory budget, released only when the job
    /// is dropped: a requester that leaves does not free memory its queued job still holds.
    pub input: Buffered,
    pub options: Options,
    /// The tenant's watermark, when `options.watermark` draws it.
    pub watermark: Option<Arc<crate::work::marks::Mark>>,
    /// The `If-None-Match` header value, checked against the job's ETag before any work.
    pub if_none_match: Option<String>,
    pub deadline: Instant,
    /// The fair queue's flow: the paying tenant (`None`: anonymous callers, one flow).
    pub flow: Option<TenantId>,
    /// What the header says the work is, for the cost model.
    pub shape: Shape,
    pub work: Work,
    pub reply: oneshot::Sender<JobOutcome>,
}

/// Gauges the pool keeps current (registered by the caller's metrics registry).
#[derive(Clone)]
pub struct PoolGauges {
    pub queue_depth: Gauge,
    pub busy_workers: Gauge,
    /// Worker time spent on a job after its deadline: what a stop check's interval and the
    /// stages it cannot interrupt cost (the bound issue #11 asks to document).
    pub past_deadline: Histogram,
}

impl Default for PoolGauges {
    fn default() -> Self {
        Self {
            queue_depth: Gauge::default(),
            busy_workers: Gauge::default(),
            // 100 µs to ~26 s.
            past_deadline: Histogram::new(exponential_buckets(0.000_1, 2.0, 19)),
        }
    }
}

/// How the pool is sized.
#[derive(Clone, Copy, Debug)]
pub struct PoolSize {
    pub workers: usize,
    /// Jobs waiting in the whole queue.
    pub queue_max: usize,
    /// Jobs one flow may have waiting.
    pub tenant_queue_max: usize,
    /// How many nice levels below the event loop the workers run.
    pub worker_niceness: i32,
    /// The express lane takes jobs predicted at most this long (zero: no express lane).
    pub express_cost_max: Duration,
}

pub struct Pool {
    shared: Arc<Shared>,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

struct Shared {
    state: Mutex<State>,
    available: Condvar,
    /// Wakes the express thread: a job queued, or a job ended.
    express: Condvar,
    size: PoolSize,
    cost: CostModel,
    gauges: PoolGauges,
}

struct Queued {
    job: Job,
    submitted: Instant,
    /// Virtual start tag (ns of fair service).
    start_v: u64,
    cost_ns: u64,
}

/// One flow's waiting jobs, oldest first.
#[derive(Default)]
struct Flow {
    jobs: VecDeque<Queued>,
    /// Predicted ns of the jobs waiting.
    queued_ns: u64,
    /// Virtual finish tag of the newest job.
    finish_v: u64,
}

#[derive(Default)]
struct State {
    flows: HashMap<Option<TenantId>, Flow>,
    /// Jobs waiting, over all flows.
    queued: usize,
    /// Virtual time: the start tag of the job most recently taken.
    now_v: u64,
    /// Jobs running per flow (both lanes).
    running: HashMap<Option<TenantId>, usize>,
    /// Regular workers running a job.
    busy: usize,
    closed: bool,
}

/// Which kind of thread takes a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lane {
    Regular,
    Express,
}

impl State {
    /// The flow with the most predicted work waiting.
    fn heaviest(&self) -> Option<(Option<TenantId>, &Flow)> {
        self.flows
            .iter()
            .max_by_key(|(_, flow)| (flow.queued_ns, flow.jobs.len()))
            .map(|(id, flow)| (*id, flow))
    }

    /// Fair-queue wait of a job of `flow` with virtual start `start_v`: in the fluid model
    /// every flow is served up to that virtual time before it, at most what it has queued.
    fn wait_ns(&self, start_v: u64) -> u64 {
        let span = start_v.saturating_sub(self.now_v);
        self.flows
            .values()
            .map(|flow| flow.queued_ns.min(span))
            .sum()
    }

    fn pop_newest(&mut self, flow: Option<TenantId>) -> Option<Queued> {
        let entry = self.flows.get_mut(&flow)?;
        let queued = entry.jobs.pop_back()?;
        entry.queued_ns -= queued.cost_ns;
        // The flow's next job starts where the pushed-out one would have.
        entry.finish_v = queued.start_v;
        self.queued -= 1;
        self.forget_idle();
        Some(queued)
    }

    /// The job with the smallest start tag, among the heads of the flows `eligible` keeps.
    fn pop_next(&mut self, eligible: impl Fn(Option<TenantId>, &Queued) -> bool) -> Option<Queued> {
        let flow = self
            .flows
            .iter()
            .filter_map(|(id, flow)| flow.jobs.front().map(|q| (q, *id)))
            .filter(|(q, id)| eligible(*id, q))
            .map(|(q, id)| (q.start_v, id))
            .min()
            .map(|(_, id)| id)?;
        let entry = self.flows.get_mut(&flow)?;
        let queued = entry.jobs.pop_front()?;
        entry.queued_ns -= queued.cost_ns;
        self.queued -= 1;
        self.now_v = self.now_v.max(queued.start_v);
        self.forget_idle();
        Some(queued)
    }

    /// Drops flows with nothing queued whose last finish tag virtual time has passed. A
    /// flow that has just emptied keeps its tag until then: forgetting it at once let a
    /// tenant with one job queued at a time restart at `now_v` every time, ahead of
    /// everyone (and two such tenants tie there for good).
    fn forget_idle(&mut self) {
        let now_v = self.now_v;
        self.flows
            .retain(|_, flow| !flow.jobs.is_empty() || flow.finish_v > now_v);
    }
}

impl Pool {
    /// Starts `size.workers` threads sharing a fair queue.
    pub fn start(size: PoolSize, limits: Limits, gauges: PoolGauges) -> Self {
        assert!(size.workers >= 1, "a pool needs at least one worker");
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            available: Condvar::new(),
            express: Condvar::new(),
            size,
            cost: CostModel::default(),
            gauges,
        });
        let express = (!size.express_cost_max.is_zero()).then_some(Lane::Express);
        let handles = (0..size.workers)
            .map(|_| Lane::Regular)
            .chain(express)
            .enumerate()
            .map(|(index, lane)| {
                let shared = Arc::clone(&shared);
                let limits = limits.clone();
                let name = match lane {
                    Lane::Regular => format!("tessera-resize-{index}"),
                    Lane::Express => "tessera-resize-express".to_owned(),
                };
                std::thread::Builder::new()
                    .name(name)
                    .spawn(move || worker_loop(&shared, limits, lane))
                    .expect("spawning a resize worker thread")
            })
            .collect();
        Self {
            shared,
            handles: Mutex::new(handles),
        }
    }

    pub fn workers(&self) -> usize {
        self.shared.size.workers
    }

    /// Jobs that may wait in the queue.
    pub fn queue_max(&self) -> usize {
        self.shared.size.queue_max
    }

    /// What the cost model predicts `shape` takes on one worker.
    pub fn predict(&self, shape: &Shape) -> Duration {
        self.shared.cost.predict(shape)
    }

    /// Queues `job` or refuses it at once; never blocks.
    pub fn submit(&self, job: Job, now: Instant) -> Result<(), Rejected> {
        let shared = &self.shared;
        let cost = shared.cost.predict(&job.shape);
        let budget = job.deadline.saturating_duration_since(now);
        if cost > budget {
            return Err(Rejected::TooCostly {
                predicted: cost,
                deadline: budget,
            });
        }
        let cost_ns = u64::try_from(cost.as_nanos()).unwrap_or(u64::MAX).max(1);
        let mut state = shared.lock();
        let pushed_out = shared.make_room(&mut state, job.flow)?;
        let flow_finish_v = state.flows.get(&job.flow).map_or(0, |f| f.finish_v);
        let start_v = state.now_v.max(flow_finish_v);
        let wait = Duration::from_nanos(state.wait_ns(start_v) / shared.size.workers as u64);
        if now + wait + cost > job.deadline {
            let retry_after_s = retry_after_s(wait);
            if let Some(pushed) = pushed_out {
                // Nothing was gained: the pushed-out job goes back where it was.
                shared.requeue(&mut state, pushed);
            }
            return Err(Rejected::DeadlineUnreachable {
                wait_estimate: wait,
                retry_after_s,
            });
        }
        let flow = state.flows.entry(job.flow).or_default();
        flow.finish_v = start_v.saturating_add(cost_ns);
        flow.queued_ns += cost_ns;
        flow.jobs.push_back(Queued {
            job,
            submitted: now,
            start_v,
            cost_ns,
        });
        state.queued += 1;
        shared.gauges.queue_depth.set(state.queued as i64);
        drop(state);
        if let Some(pushed) = pushed_out {
            let retry_after_s = retry_after_s(wait);
            let _ = pushed
                .job
                .reply
                .send(JobOutcome::PushedOut { retry_after_s });
        }
        shared.available.notify_one();
        shared.express.notify_one();
        Ok(())
    }

    /// Whether a job of `flow` would be refused for a full queue or shutdown right now;
    /// lets a handler shed load before it reads a body.
    pub fn check_admission(&self, flow: Option<TenantId>) -> Result<(), Rejected> {
        let shared = &self.shared;
        let state = shared.lock();
        shared.refusal(&state, flow).map_or(Ok(()), Err)
    }

    /// Jobs waiting for a worker right now.
    pub fn queue_len(&self) -> usize {
        self.shared.lock().queued
    }

    /// Refuses new jobs; workers finish what is queued and then exit.
    pub fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.available.notify_all();
        self.shared.express.notify_all();
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
        // The state is queues and counters; a panic elsewhere cannot leave it half-updated.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn queue_full(&self, state: &State) -> Rejected {
        let wait_ns = state.flows.values().map(|f| f.queued_ns).sum::<u64>();
        Rejected::QueueFull {
            retry_after_s: retry_after_s(Duration::from_nanos(wait_ns / self.size.workers as u64)),
        }
    }

    /// The refusal a job of `flow` would get from the queue's bounds alone, if any.
    fn refusal(&self, state: &State, flow: Option<TenantId>) -> Option<Rejected> {
        if state.closed {
            return Some(Rejected::ShuttingDown);
        }
        let own = state.flows.get(&flow).map_or(0, |f| f.jobs.len());
        if own >= self.size.tenant_queue_max {
            return Some(self.queue_full(state));
        }
        if state.queued >= self.size.queue_max {
            let heaviest = state.heaviest().map(|(id, f)| (id, f.jobs.len()));
            if heaviest.is_none_or(|(id, jobs)| id == flow || jobs <= own + 1) {
                return Some(self.queue_full(state));
            }
        }
        None
    }

    /// Checks the queue's bounds for a job of `flow`; when the queue is full and a heavier
    /// flow exists, takes that flow's newest job out to make room and returns it.
    fn make_room(
        &self,
        state: &mut State,
        flow: Option<TenantId>,
    ) -> Result<Option<Queued>, Rejected> {
        if let Some(refused) = self.refusal(state, flow) {
            return Err(refused);
        }
        if state.queued < self.size.queue_max {
            return Ok(None);
        }
        let heaviest = state.heaviest().map(|(id, _)| id);
        Ok(heaviest.and_then(|id| state.pop_newest(id)))
    }

    /// Puts a pushed-out job back at the end of its flow.
    fn requeue(&self, state: &mut State, queued: Queued) {
        let flow = state.flows.entry(queued.job.flow).or_default();
        flow.finish_v = queued.start_v.saturating_add(queued.cost_ns);
        flow.queued_ns += queued.cost_ns;
        flow.jobs.push_back(queued);
        state.queued += 1;
    }

    /// Blocks until `lane` may take a job; `None` once the pool is closed and drained.
    fn next(&self, lane: Lane) -> Option<Queued> {
        let express_ns = u64::try_from(self.size.express_cost_max.as_nanos()).unwrap_or(u64::MAX);
        let mut state = self.lock();
        loop {
            let taken = match lane {
                Lane::Regular => state.pop_next(|_, _| true),
                // Only while every worker is busy; only a flow with nothing running; only
                // a short job.
                Lane::Express if state.busy >= self.size.workers => {
                    let running = &state.running;
                    let idle = |flow| !running.contains_key(&flow);
                    let eligible = |flow, q: &Queued| idle(flow) && q.cost_ns <= express_ns;
                    let eligible: Vec<_> = state
                        .flows
                        .iter()
                        .filter_map(|(id, f)| f.jobs.front().map(|q| (*id, eligible(*id, q))))
                        .filter(|(_, ok)| *ok)
                        .map(|(id, _)| id)
                        .collect();
                    state.pop_next(|flow, _| eligible.contains(&flow))
                }
                Lane::Express => None,
            };
            if let Some(queued) = taken {
                if lane == Lane::Regular {
                    state.busy += 1;
                    if state.busy >= self.size.workers && state.queued > 0 {
                        // The express lane opens only now: nothing else would wake it.
                        self.express.notify_one();
                    }
                }
                *state.running.entry(queued.job.flow).or_insert(0) += 1;
                self.gauges.queue_depth.set(state.queued as i64);
                return Some(queued);
            }
            if state.closed && (lane == Lane::Express || state.queued == 0) {
                return None;
            }
            let signal = match lane {
                Lane::Regular => &self.available,
                Lane::Express => &self.express,
            };
            state = signal.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// A job of `flow` taken by `lane` has ended.
    fn finished(&self, lane: Lane, flow: Option<TenantId>) {
        let mut state = self.lock();
        if lane == Lane::Regular {
            state.busy -= 1;
        }
        if let Some(running) = state.running.get_mut(&flow) {
            *running -= 1;
            if *running == 0 {
                state.running.remove(&flow);
            }
        }
        drop(state);
        self.express.notify_one();
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

fn worker_loop(shared: &Shared, limits: Limits, lane: Lane) {
    // The express thread runs between the event loop and the workers: its short jobs
    // take the larger share of a core from the workers they run beside.
    lower_priority(match lane {
        Lane::Regular => shared.size.worker_niceness,
        Lane::Express => shared.size.worker_niceness / 2,
    });
    let mut pipeline = Pipeline::new(limits.clone());
    let mut info_buffers = InfoBuffers::default();
    while let Some(queued) = shared.next(lane) {
        let flow = queued.job.flow;
        if queued.job.work == Work::Info {
            inspect(shared, &mut info_buffers, &limits, queued);
            shared.finished(lane, flow);
            continue;
        }
        run(shared, &mut pipeline, &limits, queued);
        shared.finished(lane, flow);
    }
}

/// Runs one job on this thread's pipeline and answers it.
fn run(shared: &Shared, pipeline: &mut Pipeline, limits: &Limits, queued: Queued) {
    let Queued { job, submitted, .. } = queued;
    {
        let started = Instant::now();
        if job.reply.is_closed() {
            return; // the requester gave up (timeout or disconnect)
        }
        if started > job.deadline {
            let _ = job.reply.send(JobOutcome::Expired);
            return;
        }
        shared.gauges.busy_workers.inc();
        let mark = job.watermark.as_deref();
        let etag =
            crate::http::etag::compute(&job.input.bytes, &job.options, mark.map(|m| &m.digest));
        let outcome = if job
            .if_none_match
            .as_deref()
            .is_some_and(|header| crate::http::etag::matches(header, &etag))
        {
            JobOutcome::NotModified { etag }
        } else {
            // Checked at the pipeline's check points: a few per stage, one per band of rows.
            // The deadline is moved forward by what cannot be interrupted (an AVIF
            // encode): a job that can no longer finish stops now, not after the encode.
            let tail = shared.cost.uninterruptible(&job.shape);
            let stop = || job.reply.is_closed() || Instant::now() + tail > job.deadline;
            match catch_unwind(AssertUnwindSafe(|| {
                pipeline.process_marked(
                    &job.input.bytes,
                    &job.options,
                    mark.map(|m| &m.image),
                    &stop,
                )
            })) {
                Ok(Ok(output)) => {
                    shared.cost.completed(&job.shape, &output.timings);
                    JobOutcome::Done {
                        result: Ok(output),
                        etag,
                        queue_wait: started - submitted,
                    }
                }
                Ok(Err(ResizeError::Cancelled)) => {
                    shared.cost.unfinished(&job.shape, started.elapsed());
                    JobOutcome::Expired
                }
                Ok(Err(error)) => {
                    shared.cost.unfinished(&job.shape, started.elapsed());
                    JobOutcome::Done {
                        result: Err(error),
                        etag,
                        queue_wait: started - submitted,
                    }
                }
                Err(_) => {
                    tracing::error!(
                        input_bytes = job.input.bytes.len(),
                        "resize pipeline panicked; worker continues with a fresh pipeline"
                    );
                    *pipeline = Pipeline::new(limits.clone());
                    JobOutcome::Panicked
                }
            }
        };
        let ended = Instant::now();
        if ended > job.deadline {
            shared
                .gauges
                .past_deadline
                .observe((ended - job.deadline).as_secs_f64());
        }
        shared.gauges.busy_workers.dec();
        let _ = job.reply.send(outcome);
    }
}

/// Runs one info job and answers it. Not taught to the cost model: its decode is a
/// fraction of a conversion's (JPEG at 1/8), and would make conversions look cheaper.
fn inspect(shared: &Shared, buffers: &mut InfoBuffers, limits: &Limits, queued: Queued) {
    let Queued { job, submitted, .. } = queued;
    let started = Instant::now();
    if job.reply.is_closed() {
        return;
    }
    if started > job.deadline {
        let _ = job.reply.send(JobOutcome::Expired);
        return;
    }
    shared.gauges.busy_workers.inc();
    let stop = || job.reply.is_closed() || Instant::now() > job.deadline;
    let outcome = match catch_unwind(AssertUnwindSafe(|| {
        tessera_resize::info(&job.input.bytes, limits, buffers, &stop)
    })) {
        Ok(Err(ResizeError::Cancelled)) => JobOutcome::Expired,
        Ok(result) => JobOutcome::Info {
            result,
            queue_wait: started - submitted,
        },
        Err(_) => {
            tracing::error!(
                input_bytes = job.input.bytes.len(),
                "info panicked; worker continues with fresh buffers"
            );
            *buffers = InfoBuffers::default();
            JobOutcome::Panicked
        }
    };
    shared.gauges.busy_workers.dec();
    let _ = job.reply.send(outcome);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_resize::{InputFormat, OutputFormat};

    fn queued(flow: u64, cost_ns: u64) -> (Option<TenantId>, u64) {
        (Some(TenantId(flow)), cost_ns)
    }

    /// Queues a job of `flow` as `submit` tags it; the job's input is `id` bytes long.
    fn push(state: &mut State, flow: Option<TenantId>, cost_ns: u64, id: usize) {
        let finish = state.flows.get(&flow).map_or(0, |f| f.finish_v);
        let start_v = state.now_v.max(finish);
        let entry = state.flows.entry(flow).or_default();
        entry.finish_v = start_v + cost_ns;
        entry.queued_ns += cost_ns;
        let (reply, _) = oneshot::channel();
        entry.jobs.push_back(Queued {
            job: Job {
                input: Buffered::uncharged(bytes::Bytes::from(vec![0; id])),
                options: Options::default(),
                watermark: None,
                if_none_match: None,
                deadline: Instant::now(),
                flow,
                shape: Shape {
                    input_format: InputFormat::Jpeg,
                    input_bytes: 0,
                    output_format: OutputFormat::Jpeg,
                    output_pixels: 0,
                    encodes_max: 1,
                    filter_ops: 0,
                },
                work: Work::Resize,
                reply,
            },
            submitted: Instant::now(),
            start_v,
            cost_ns,
        });
        state.queued += 1;
    }

    fn pop(state: &mut State) -> Option<usize> {
        state.pop_next(|_, _| true).map(|q| q.job.input.bytes.len())
    }

    /// Drives the queue's bookkeeping alone (no threads): tags, order and push-out.
    fn order(jobs: &[(Option<TenantId>, u64)]) -> Vec<usize> {
        let mut state = State::default();
        for (i, &(flow, cost_ns)) in jobs.iter().enumerate() {
            push(&mut state, flow, cost_ns, i);
        }
        std::iter::from_fn(|| pop(&mut state)).collect()
    }

    #[test]
    fn a_flow_that_empties_and_refills_keeps_its_place() {
        // Tenant 1 has three jobs queued, tenant 2 one at a time (closed loop).
        let mut state = State::default();
        for id in 0..3 {
            push(&mut state, Some(TenantId(1)), 100, id);
        }
        push(&mut state, Some(TenantId(2)), 100, 10);
        assert_eq!(pop(&mut state), Some(0));
        assert_eq!(pop(&mut state), Some(10));
        // Tenant 2's next job comes after its last one's finish, not at the front again.
        push(&mut state, Some(TenantId(2)), 100, 11);
        assert_eq!(pop(&mut state), Some(1));
        assert_eq!(pop(&mut state), Some(11));
        assert_eq!(pop(&mut state), Some(2));
        assert_eq!(pop(&mut state), None);
        assert!(
            state.flows.len() <= 2,
            "idle flows are forgotten once passed"
        );
    }

    #[test]
    fn a_flood_does_not_delay_a_light_flow_by_more_than_a_job() {
        // Tenant 1 queues eight jobs, then tenant 2 queues one: it runs second, not ninth.
        let mut jobs: Vec<_> = (0..8).map(|_| queued(1, 100)).collect();
        jobs.push(queued(2, 100));
        let order = order(&jobs);
        assert_eq!(order[..2], [0, 8], "{order:?}");
    }

    #[test]
    fn flows_share_by_cost_not_by_count() {
        // Tenant 1's jobs cost 4x tenant 2's: tenant 2 runs about four jobs per one of 1.
        let mut jobs: Vec<_> = (0..4).map(|_| queued(1, 400)).collect();
        jobs.extend((0..8).map(|_| queued(2, 100)));
        let order = order(&jobs);
        let first_five: Vec<_> = order[..5].iter().map(|&i| i < 4).collect();
        assert_eq!(
            first_five.iter().filter(|&&heavy| heavy).count(),
            1,
            "{order:?}"
        );
    }
}
