//! The two schedulers that drive processes, and the supervision they share.
//!
//! * rt: one dedicated OS thread per process, `SCHED_FIFO` when permitted,
//!   pinned, released with `clock_nanosleep` at `start + offset + k·period`,
//!   synchronous wasmtime calls under a fuel budget.
//! * be: one tokio task per process, async wasmtime calls that yield at every
//!   epoch so a busy process cannot hold a worker, interrupted at its deadline.
//!
//! Both hand every call's outcome to [`Supervisor`], which publishes outputs,
//! applies the deadline-miss policy, updates metrics and decides, on a
//! fault, whether and when the process starts again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weft_manifest::{MissPolicy, RestartPolicy};

use crate::metrics::{ProcessMetrics, ProcessState};
use crate::ports::Output;
use crate::ports::Router;
use crate::process::{CallReport, Fault, HashChain, Process, ProcessEnv, Program, run_sync};
use crate::record::Event;
use crate::rt::{self, monotonic_ns};
use crate::snapshot::Snapshot;
use crate::tag::Tag;

/// A process that ran this long without a fault has its crash-loop count reset.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// Longest restart backoff.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The longest gap a restored process catches up on instead of skipping.
const MAX_CATCH_UP: Duration = Duration::from_secs(2);
/// How often memory use is sampled (in calls): it needs an export lookup.
const MEMORY_SAMPLE_EVERY: u64 = 64;
/// How far back a standby keeps the outputs it holds: what it re-sends
/// when it goes live, to cover what its primary computed but never
/// delivered before it died.
const HOLD_FOR: Duration = Duration::from_secs(2);

/// The switch of a hot standby and the outputs it holds back. A standby
/// runs exactly like its primary (same inputs, same state, so the same
/// outputs) but publishes nothing until it is promoted; then it re-sends
/// what it held (receivers drop the copies they already had from the
/// primary) and publishes live from its next tag on.
#[derive(Default)]
pub struct Standby {
    live: AtomicBool,
    held: Mutex<std::collections::VecDeque<(Tag, u64, Output)>>,
}

impl Standby {
    pub fn promote(&self) {
        self.live.store(true, Ordering::SeqCst);
    }

    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::SeqCst)
    }
}

/// Tells every driver of an app to stop.
#[derive(Clone)]
pub struct Stop {
    flag: Arc<AtomicBool>,
    tx: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for Stop {
    fn default() -> Self {
        Stop {
            flag: Arc::new(AtomicBool::new(false)),
            tx: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }
}

impl Stop {
    pub fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.tx.send_replace(true);
    }

    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|stopped| *stopped).await;
    }
}

/// Receives periodic checkpoints: (process, tag, snapshot). Called on the
/// process's own (possibly rt) thread: encode and send elsewhere.
pub type CheckpointSink = Arc<dyn Fn(&str, Tag, Snapshot) + Send + Sync>;

/// How often a process is checkpointed, and where the checkpoints go.
#[derive(Clone)]
pub struct Checkpointing {
    pub every: Duration,
    pub sink: CheckpointSink,
}

/// Everything a driver needs to run one process.
pub(crate) struct Supervisor {
    pub program: Arc<Program>,
    pub env: ProcessEnv,
    pub router: Router,
    pub metrics: Arc<Mutex<ProcessMetrics>>,
    pub stop: Stop,
    /// `CLOCK_MONOTONIC` time of tag 0.
    pub start_ns: u64,
    consecutive_faults: u32,
    /// Incarnations started so far (restored or fresh).
    incarnations: u32,
    started_at_ns: u64,
    calls: u64,
    /// State to start from instead of a fresh instance (taken on first start).
    pub restore: Option<Snapshot>,
    pub checkpointing: Option<Checkpointing>,
    last_checkpoint_ns: u64,
    /// Where the driver leaves the process's snapshot when it stops.
    pub final_snapshot: Arc<Mutex<Option<Snapshot>>>,
    /// The snapshot the incarnation being started was restored from, for
    /// the recording (only kept while recording).
    restored_from: Option<Vec<u8>>,
    /// Set for a hot standby.
    pub standby: Option<Arc<Standby>>,
    /// Routes nowhere: what a standby publishes through while held.
    nowhere: Router,
}

/// Per-call timing the driver measured.
pub(crate) struct Timing {
    pub jitter: Duration,
    pub exec: Duration,
    pub missed_deadline: bool,
    /// Run while this incarnation is still catching up (it has not yet
    /// reached a release in the future): late by construction, so not a
    /// deadline miss and not jitter.
    pub catching_up: bool,
}

impl Supervisor {
    pub fn new(
        program: Arc<Program>,
        env: ProcessEnv,
        router: Router,
        metrics: Arc<Mutex<ProcessMetrics>>,
        stop: Stop,
        start_ns: u64,
    ) -> Self {
        Supervisor {
            program,
            env,
            router,
            metrics,
            stop,
            start_ns,
            consecutive_faults: 0,
            incarnations: 0,
            started_at_ns: 0,
            calls: 0,
            restore: None,
            checkpointing: None,
            last_checkpoint_ns: monotonic_ns(),
            final_snapshot: Arc::default(),
            restored_from: None,
            standby: None,
            nowhere: Router::default(),
        }
    }

    /// Publishes a call's outputs, or holds them back while a standby.
    fn publish(&self, process: &mut Process, tag: Tag, outputs: Vec<Output>) -> (u64, u64) {
        let Some(standby) = &self.standby else {
            return process.publish(&self.router, tag, outputs);
        };
        let mut held = standby.held.lock().unwrap();
        if standby.is_live() {
            for (tag, seq, output) in held.drain(..) {
                self.router.publish(self.name(), tag, seq, &output);
            }
            drop(held);
            return process.publish(&self.router, tag, outputs);
        }
        let first_seq = process.seq + 1;
        held.extend(
            outputs
                .iter()
                .enumerate()
                .map(|(i, o)| (tag, first_seq + i as u64, o.clone())),
        );
        let horizon = tag.0.saturating_sub(HOLD_FOR.as_nanos() as u64);
        while held.front().is_some_and(|(t, _, _)| t.0 < horizon) {
            held.pop_front();
        }
        drop(held);
        process.publish(&self.nowhere, tag, outputs);
        (0, 0)
    }

    fn is_held(&self) -> bool {
        self.standby.as_ref().is_some_and(|s| !s.is_live())
    }

    fn record(&self, tag: Tag, event: impl FnOnce() -> Event) {
        if let Some(recorder) = &self.env.recorder {
            recorder.record(tag, event());
        }
    }

    /// Records that an incarnation begins at `tag` (its first release).
    fn record_start(&mut self, tag: Tag) {
        let snapshot = self.restored_from.take();
        self.record(tag, || Event::Start { snapshot });
    }

    fn name(&self) -> &str {
        &self.program.spec.name
    }

    /// Restores the given snapshot, or instantiates and initialises a fresh incarnation.
    async fn start(&mut self) -> Result<Process, Fault> {
        let restored = match self.restore.take() {
            Some(snapshot) => {
                match Process::restore(self.program.clone(), self.env.clone(), &snapshot).await {
                    Ok(p) => {
                        if self.env.recorder.is_some() {
                            self.restored_from = Some(snapshot.encode());
                        }
                        Some(p)
                    }
                    Err(e) => {
                        tracing::warn!(
                            process = self.name(),
                            "cannot restore checkpoint, starting fresh: {e:#}"
                        );
                        None
                    }
                }
            }
            None => None,
        };
        let mut process = match restored {
            Some(p) => p,
            None => {
                let mut process =
                    Process::instantiate(self.program.clone(), self.env.clone()).await?;
                let init = process.init().await?;
                self.publish(&mut process, Tag::ZERO, init.outputs);
                process
            }
        };
        let mut m = self.metrics.lock().unwrap();
        if m.faults > 0 {
            m.restarts += 1;
        }
        m.state = ProcessState::Running;
        m.reason = None;
        m.standby = self.is_held();
        m.memory_bytes = process.memory_bytes();
        // A restored process carries its hash chain on.
        m.chain = process.chain().0;
        m.last_tag_ns = process.last_tag().map(|t| t.0);
        self.started_at_ns = monotonic_ns();
        self.incarnations += 1;
        Ok(process)
    }

    /// Sends a checkpoint when one is due.
    fn maybe_checkpoint(&mut self, process: &mut Process, tag: Tag) {
        let Some(checkpointing) = self.checkpointing.as_ref().filter(|_| !self.is_held()) else {
            return;
        };
        let now = monotonic_ns();
        if now - self.last_checkpoint_ns < checkpointing.every.as_nanos() as u64 {
            return;
        }
        self.last_checkpoint_ns = now;
        match process.snapshot() {
            Ok(snapshot) => (checkpointing.sink)(self.name(), tag, snapshot),
            Err(e) => {
                tracing::warn!(process = self.name(), "cannot checkpoint: {e:#}");
                self.checkpointing = None;
            }
        }
    }

    /// The first release index after (re)starting `process`.
    ///
    /// A restored process catches up: it runs every release since its
    /// snapshot, back to back, so no tag is skipped (receivers drop copies
    /// of outputs they already had). So does the first incarnation, from
    /// the app's first release: a process that started late (compiling,
    /// a slow node) still runs every tag, which is what makes a run
    /// reproducible. Only a gap longer than [`MAX_CATCH_UP`] is skipped. A
    /// fresh incarnation after a fault starts at the next release.
    fn first_release(&self, process: &Process, period: u64, offset: u64) -> u64 {
        let now = self.next_release(period, offset);
        let from = match process.last_tag() {
            Some(t) => t.0.saturating_sub(offset) / period + 1,
            None if self.incarnations == 1 => 0,
            None => return now,
        };
        let behind = now.saturating_sub(from).saturating_mul(period);
        if behind <= MAX_CATCH_UP.as_nanos() as u64 {
            from
        } else {
            now
        }
    }

    /// Books a finished call: applies the deadline policy, publishes, records.
    fn complete(
        &mut self,
        process: &mut Process,
        tag: Tag,
        result: Result<CallReport, Fault>,
        timing: Timing,
    ) -> Result<(), Fault> {
        let report = result.inspect_err(|fault| {
            self.record(tag, || Event::Fault {
                kind: fault.kind.clone(),
            })
        })?;
        self.calls += 1;
        if timing.missed_deadline {
            self.record(tag, || Event::DeadlineMiss);
        }
        let outputs = apply_miss_policy(process, report.outputs, timing.missed_deadline);
        let (sent, dropped) = self.publish(process, tag, outputs);
        self.env.inbox.completed(tag);
        let memory = (self.calls % MEMORY_SAMPLE_EVERY == 1).then(|| process.memory_bytes());
        let mut m = self.metrics.lock().unwrap();
        if self.program.spec.period.is_some() {
            m.ticks += 1;
        }
        m.messages_handled += report.messages_in;
        m.messages_in += report.messages_in;
        m.messages_out += sent;
        m.messages_dropped += dropped;
        m.messages_refused = process.refused_messages();
        m.tardy = self.env.inbox.tardy.load(Ordering::Relaxed);
        m.messages_duplicate = self.env.inbox.duplicates.load(Ordering::Relaxed);
        m.fuel_used += report.fuel_used;
        m.deadline_misses += timing.missed_deadline as u64;
        m.chain = process.chain().0;
        m.last_tag_ns = Some(tag.0);
        m.standby = self.is_held();
        m.mark(tag.0);
        m.first_tag_ns.get_or_insert(tag.0);
        if let Some(last) = process.last_outputs.last() {
            m.last_output.clear();
            m.last_output.extend_from_slice(&last.payload);
        }
        if let Some(bytes) = memory {
            m.memory_bytes = bytes;
        }
        if m.resume_lateness_ns.is_none() {
            m.resume_lateness_ns = Some(timing.jitter.as_nanos() as u64);
        }
        if !timing.catching_up {
            ProcessMetrics::record(&mut m.jitter, timing.jitter);
        }
        ProcessMetrics::record(&mut m.exec, timing.exec);
        drop(m);
        if self.consecutive_faults > 0
            && monotonic_ns() - self.started_at_ns > HEALTHY_AFTER.as_nanos() as u64
        {
            self.consecutive_faults = 0;
        }
        self.maybe_checkpoint(process, tag);
        Ok(())
    }

    /// Records a fault and says when to restart (`None`: never again).
    fn on_fault(&mut self, fault: Fault) -> Option<u64> {
        tracing::warn!(process = self.name(), kind = ?fault.kind, "process faulted: {}", fault.message);
        let mut m = self.metrics.lock().unwrap();
        m.faults += 1;
        m.last_fault = Some(fault.clone());
        match &self.program.spec.restart {
            RestartPolicy::Never => {
                m.state = ProcessState::Failed;
                m.reason = Some(fault.message);
                None
            }
            RestartPolicy::OnFailure {
                max_restarts,
                backoff,
            } => {
                self.consecutive_faults += 1;
                if self.consecutive_faults > *max_restarts {
                    m.state = ProcessState::Parked;
                    m.reason = Some(format!(
                        "crash loop: {} faults in a row (max_restarts = {max_restarts}); last: {}",
                        self.consecutive_faults, fault.message
                    ));
                    tracing::error!(
                        process = self.name(),
                        "parked: {}",
                        m.reason.as_deref().unwrap_or_default()
                    );
                    return None;
                }
                m.state = ProcessState::Backoff;
                m.reason = Some(fault.message);
                let delay = backoff
                    .saturating_mul(1 << (self.consecutive_faults - 1).min(16))
                    .min(MAX_BACKOFF);
                Some(monotonic_ns() + delay.as_nanos() as u64)
            }
        }
    }

    /// Marks the process stopped and keeps its final state for a handover.
    fn finish(&self, process: Option<Process>) {
        {
            let m = self.metrics.lock().unwrap();
            let chain = HashChain(m.chain);
            self.record(Tag(m.last_tag_ns.unwrap_or(0)), || Event::Stop { chain });
        }
        if let Some(mut process) = process
            && !process.spec().grants(&weft_abi::Capability::Wasi)
        {
            match process.snapshot() {
                Ok(snapshot) => *self.final_snapshot.lock().unwrap() = Some(snapshot),
                Err(e) => tracing::warn!(process = self.name(), "no final snapshot: {e:#}"),
            }
        }
        let mut m = self.metrics.lock().unwrap();
        if matches!(
            m.state,
            ProcessState::Running | ProcessState::Starting | ProcessState::Backoff
        ) {
            m.state = ProcessState::Stopped;
        }
    }

    /// The first release index whose release time is not in the past.
    fn next_release(&self, period: u64, offset: u64) -> u64 {
        let now = monotonic_ns();
        let first = self.start_ns + offset;
        if now <= first {
            0
        } else {
            (now - first).div_ceil(period)
        }
    }
}

/// The outputs a call publishes: its own, or, when it missed its deadline,
/// what the process's miss policy says (the last outputs again, or none).
pub(crate) fn apply_miss_policy(
    process: &Process,
    outputs: Vec<Output>,
    missed: bool,
) -> Vec<Output> {
    if !missed {
        return outputs;
    }
    match process.spec().on_deadline_miss {
        MissPolicy::Hold => process.last_outputs.clone(),
        MissPolicy::Skip => Vec::new(),
    }
}

/// Drives an rt process on the calling (dedicated) thread until stopped,
/// failed or parked.
pub(crate) fn run_rt(mut sup: Supervisor) {
    let period = sup
        .program
        .spec
        .period
        .expect("rt processes have a period")
        .as_nanos() as u64;
    let offset = sup.program.spec.offset.as_nanos() as u64;
    let deadline = sup
        .program
        .spec
        .effective_deadline()
        .map_or(period, |d| d.as_nanos() as u64);
    rt::make_current_thread_rt(rt::RT_PRIORITY, rt::rt_cpu());
    let mut process: Option<Process> = None;
    let mut k = 0;
    let mut caught_up = false;
    while !sup.stop.is_set() {
        let Some(p) = process.as_mut() else {
            match run_sync(sup.start()) {
                Ok(p) => {
                    k = k.max(sup.first_release(&p, period, offset));
                    sup.record_start(Tag(offset + k * period));
                    process = Some(p);
                    caught_up = false;
                }
                Err(fault) => match sup.on_fault(fault) {
                    Some(at)
                        if rt::sleep_until_or_stop(
                            at,
                            &sup.stop.flag,
                            Duration::from_millis(20),
                        ) => {}
                    _ => break,
                },
            }
            continue;
        };
        let tag = offset + k * period;
        let release = sup.start_ns + tag;
        caught_up |= release > monotonic_ns();
        rt::sleep_until_ns(release);
        if sup.stop.is_set() {
            break;
        }
        let woke = monotonic_ns();
        let result = run_sync(p.tick(Tag(tag)));
        let done = monotonic_ns();
        k += 1;
        let catching_up = !caught_up;
        let timing = Timing {
            jitter: Duration::from_nanos(woke.saturating_sub(release)),
            exec: Duration::from_nanos(done - woke),
            missed_deadline: !catching_up && done > release + deadline,
            catching_up,
        };
        if let Err(fault) = sup.complete(p, Tag(tag), result, timing) {
            process = None;
            match sup.on_fault(fault) {
                Some(at)
                    if rt::sleep_until_or_stop(at, &sup.stop.flag, Duration::from_millis(20)) => {}
                _ => break,
            }
        } else if catching_up {
            // Catching up runs releases back to back; let the other rt
            // threads of the same priority on this CPU have their turn.
            std::thread::yield_now();
        }
    }
    sup.finish(process);
}

/// Drives a be process on the tokio runtime until stopped, failed or parked.
pub(crate) async fn run_be(mut sup: Supervisor) {
    let mut process: Option<Process> = None;
    let mut k = 0;
    // Set when a stop cancelled a call midway: that state is not a boundary.
    let mut cancelled = false;
    let mut caught_up = false;
    let stop = sup.stop.clone();
    loop {
        if stop.is_set() {
            break;
        }
        let Some(p) = process.as_mut() else {
            match sup.start().await {
                Ok(p) => {
                    let first = match sup.program.spec.period {
                        Some(period) => {
                            let (period, offset) = (
                                period.as_nanos() as u64,
                                sup.program.spec.offset.as_nanos() as u64,
                            );
                            k = k.max(sup.first_release(&p, period, offset));
                            Tag(offset + k * period)
                        }
                        None => p.last_tag().unwrap_or(Tag::ZERO),
                    };
                    sup.record_start(first);
                    process = Some(p);
                    caught_up = false;
                }
                Err(fault) => match sup.on_fault(fault) {
                    Some(at) => {
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_nanos(at.saturating_sub(monotonic_ns()))) => {}
                            _ = stop.wait() => break,
                        }
                    }
                    None => break,
                },
            }
            continue;
        };
        let outcome = match sup.program.spec.period {
            Some(period) => {
                let tag = sup.program.spec.offset.as_nanos() as u64 + k * period.as_nanos() as u64;
                k += 1;
                let release = sup.start_ns + tag;
                caught_up |= release > monotonic_ns();
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_nanos(release.saturating_sub(monotonic_ns()))) => {}
                    _ = stop.wait() => break,
                }
                let woke = monotonic_ns();
                // A stop cancels a call in progress at its next epoch yield.
                let result = tokio::select! {
                    result = p.tick(Tag(tag)) => result,
                    _ = stop.wait() => { cancelled = true; break }
                };
                let timing = Timing {
                    jitter: Duration::from_nanos(woke.saturating_sub(release)),
                    exec: Duration::from_nanos(monotonic_ns() - woke),
                    missed_deadline: false,
                    catching_up: !caught_up,
                };
                sup.complete(p, Tag(tag), result, timing)
            }
            None => {
                let inbox = sup.env.inbox.clone();
                let Some(message) = inbox.pop_next() else {
                    tokio::select! {
                        _ = inbox.arrived.notified() => {}
                        _ = stop.wait() => break,
                    }
                    continue;
                };
                let woke = monotonic_ns();
                let result = tokio::select! {
                    result = p.message(&message) => result,
                    _ = stop.wait() => { cancelled = true; break }
                };
                sup.record(message.key.tag, || Event::Handled {
                    source: message.key.source.clone(),
                    seq: message.key.seq,
                });
                let timing = Timing {
                    jitter: Duration::ZERO,
                    exec: Duration::from_nanos(monotonic_ns() - woke),
                    missed_deadline: false,
                    catching_up: false,
                };
                sup.complete(p, message.key.tag, result, timing)
            }
        };
        if let Err(fault) = outcome {
            process = None;
            match sup.on_fault(fault) {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_nanos(at.saturating_sub(monotonic_ns()))) => {}
                        _ = stop.wait() => break,
                    }
                }
                None => break,
            }
        }
    }
    sup.finish(if cancelled { None } else { process });
}
