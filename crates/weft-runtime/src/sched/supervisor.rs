//! Supervising one process: starting an incarnation (restored from a
//! snapshot or fresh), booking every call (deadline policy, outputs, logs,
//! metrics, the recording, checkpoints), deciding what a fault means, and
//! leaving the final state for a handover. The rt and be drivers call
//! these in their own loops.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use weft_abi::Capability;
use weft_types::{ProcessName, ProcessState, Tag};

use super::checkpointer::Checkpointer;
use super::gate::{OutputGate, apply_miss_policy};
use super::releases::{Releases, Skip};
use super::restarts::{Decision, Restarts};
use super::{Checkpointing, Stop, Switch};
use crate::metrics::{Counters, MetricsWriter};
use crate::process::{Process, ProcessEnv};
use crate::program::Program;
use crate::record::Event;
use crate::router::Router;
use crate::rt::monotonic_ns;
use crate::snapshot::Snapshot;
use crate::types::{CallReport, Fault};

/// How often memory use is sampled (in calls): it needs an export lookup.
const MEMORY_SAMPLE_EVERY: u64 = 64;

/// Per-call timing the driver measured.
pub(crate) struct Timing {
    /// Wake-up lateness, for periodic calls.
    pub jitter: Option<Duration>,
    pub exec: Duration,
    pub missed_deadline: bool,
    /// Run while this incarnation is still catching up: late by
    /// construction, so not a deadline miss and not jitter.
    pub catching_up: bool,
}

/// Everything a driver needs to run one process.
pub(crate) struct Supervisor {
    pub program: Arc<Program>,
    pub env: ProcessEnv,
    pub stop: Stop,
    /// The release grid of a periodic process.
    pub releases: Option<Releases>,
    gate: OutputGate,
    restarts: Restarts,
    checkpointer: Checkpointer,
    pub(crate) metrics: MetricsWriter,
    /// State to start from instead of a fresh instance (taken on first start).
    restore: Option<Snapshot>,
    /// Where the driver leaves the process's snapshot when it stops.
    pub final_snapshot: Arc<Mutex<Option<Snapshot>>>,
    /// Incarnations started so far (restored or fresh).
    incarnations: u32,
    calls: u64,
    /// The incarnation running was restored from a snapshot: the tags it
    /// catches up on ran before.
    restored: bool,
    /// The snapshot the incarnation being started was restored from, for
    /// the recording (kept only while recording).
    restored_from: Option<Vec<u8>>,
}

/// How to build a [`Supervisor`].
pub(crate) struct Parts {
    pub program: Arc<Program>,
    pub env: ProcessEnv,
    pub router: Arc<Router>,
    pub stop: Stop,
    /// `CLOCK_MONOTONIC` time of tag 0.
    pub start_ns: u64,
    pub restore: Option<Snapshot>,
    pub checkpointing: Option<Checkpointing>,
    /// The process's output switch, if it runs under a controller.
    pub switch: Option<Arc<Switch>>,
    pub metrics: MetricsWriter,
}

impl Supervisor {
    pub fn new(parts: Parts) -> Supervisor {
        let spec = &parts.program.spec;
        let releases = spec
            .period
            .map(|period| Releases::new(period, spec.offset, parts.start_ns));
        let gate = OutputGate::new(
            parts.env.id,
            parts.router,
            parts.env.log_sink.clone(),
            parts.switch,
        );
        Supervisor {
            restarts: Restarts::new(spec.restart.clone()),
            releases,
            gate,
            checkpointer: Checkpointer::new(parts.checkpointing, monotonic_ns()),
            metrics: parts.metrics,
            restore: parts.restore,
            final_snapshot: Arc::default(),
            incarnations: 0,
            calls: 0,
            restored: false,
            restored_from: None,
            program: parts.program,
            env: parts.env,
            stop: parts.stop,
        }
    }

    pub fn name(&self) -> &ProcessName {
        &self.program.spec.name
    }

    pub fn record(&self, tag: Tag, event: impl FnOnce() -> Event) {
        if let Some(recorder) = &self.env.recorder {
            recorder.record(tag, event());
        }
    }

    /// Restores the given snapshot, or instantiates and initialises a fresh
    /// incarnation, and places it on the release grid. Returns the process
    /// and the tag it starts at.
    pub async fn start(&mut self) -> Result<(Process, Tag), Fault> {
        let restored = self.restored().await;
        self.restored = restored.is_some();
        let mut process = match restored {
            Some(p) => p,
            None => self.fresh().await?,
        };
        self.incarnations += 1;
        let now = monotonic_ns();
        let first_tag = match self.releases.as_mut() {
            Some(releases) => releases.start(process.last_tag(), self.incarnations == 1, now),
            None => process.last_tag().unwrap_or(Tag::ZERO),
        };
        let counters = self.metrics.counters();
        if self.metrics.state() != ProcessState::Starting {
            Counters::add(&counters.restarts, 1);
        }
        Counters::set(&counters.memory_bytes, process.memory_bytes());
        counters
            .standby
            .store(self.gate.is_replica(), std::sync::atomic::Ordering::Relaxed);
        // A restored process carries its hash chain on.
        self.metrics
            .chain(process.last_tag().map(|t| t.0), process.chain());
        self.metrics.set_state(ProcessState::Running, None);
        self.restarts.started(now);
        let snapshot = self.restored_from.take();
        self.record(first_tag, || Event::Start { snapshot });
        Ok((process, first_tag))
    }

    /// The incarnation restored from the snapshot given to start from, if
    /// there is one and it restores.
    async fn restored(&mut self) -> Option<Process> {
        let snapshot = self.restore.take()?;
        match Process::restore(self.program.clone(), self.env.clone(), &snapshot).await {
            Ok(p) => {
                if self.env.recorder.is_some() {
                    self.restored_from = Some(snapshot.encode());
                }
                Some(p)
            }
            Err(e) => {
                tracing::warn!(process = %self.name(), "cannot restore checkpoint, starting fresh: {e:#}");
                None
            }
        }
    }

    async fn fresh(&mut self) -> Result<Process, Fault> {
        let mut process = Process::instantiate(self.program.clone(), self.env.clone()).await?;
        match process.init().await {
            Ok(init) => {
                self.gate.logs(&process, Tag::ZERO, init.logs, false);
                self.gate.publish(&mut process, Tag::ZERO, init.outputs);
                self.gate.actuate(Tag::ZERO, init.writes, false);
                Ok(process)
            }
            Err(fault) => {
                let logs = process.take_logs();
                self.gate.logs(&process, Tag::ZERO, logs, false);
                Err(fault)
            }
        }
    }

    /// Books a finished call: applies the deadline policy, publishes,
    /// records, checkpoints.
    pub fn complete(
        &mut self,
        process: &mut Process,
        tag: Tag,
        result: Result<CallReport, Fault>,
        timing: Timing,
    ) -> Result<(), Fault> {
        let rerun = timing.catching_up && self.restored;
        let mut report = match result {
            Ok(report) => report,
            Err(fault) => {
                let logs = process.take_logs();
                self.gate.logs(process, tag, logs, rerun);
                self.record(tag, || Event::Fault { kind: fault.kind });
                return Err(fault.at(tag));
            }
        };
        self.calls += 1;
        if timing.missed_deadline {
            self.record(tag, || Event::DeadlineMiss);
        }
        self.gate
            .logs(process, tag, std::mem::take(&mut report.logs), rerun);
        let outputs = apply_miss_policy(
            process,
            std::mem::take(&mut report.outputs),
            timing.missed_deadline,
        );
        let (sent, refused) = self.gate.publish(process, tag, outputs);
        let fenced = self
            .gate
            .actuate(tag, std::mem::take(&mut report.writes), rerun);
        Counters::add(&self.metrics.counters().fenced_writes, fenced);
        let now = monotonic_ns();
        self.book(process, tag, &report, (sent, refused), &timing, now);
        self.restarts.ran(now);
        self.checkpointer
            .maybe(process, tag, self.gate.is_held(), now);
        Ok(())
    }

    /// Updates the metrics after a call.
    fn book(
        &mut self,
        process: &mut Process,
        tag: Tag,
        report: &CallReport,
        (sent, refused): (u64, u64),
        timing: &Timing,
        now: u64,
    ) {
        let c = self.metrics.counters();
        let inbox = &self.env.inbox.counters;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        if self.releases.is_some() {
            Counters::add(&c.ticks, 1);
        }
        Counters::add(&c.messages_in, report.messages_in);
        Counters::add(&c.messages_out, sent);
        Counters::add(&c.messages_dropped, refused);
        Counters::add(&c.fuel_used, report.fuel_used);
        Counters::add(&c.deadline_misses, timing.missed_deadline as u64);
        Counters::set(&c.messages_refused, process.refused_messages());
        Counters::set(&c.tardy, load(&inbox.tardy));
        Counters::set(&c.messages_duplicate, load(&inbox.duplicates));
        c.standby
            .store(self.gate.is_replica(), std::sync::atomic::Ordering::Relaxed);
        if self.calls % MEMORY_SAMPLE_EVERY == 1 {
            Counters::set(&c.memory_bytes, process.memory_bytes());
        }
        self.metrics.chain(Some(tag.0), process.chain());
        if let Some(last) = process.last_outputs().last() {
            self.metrics.last_output(&last.payload);
        }
        self.metrics
            .resume_lateness(timing.jitter.unwrap_or_default());
        let jitter = timing.jitter.filter(|_| !timing.catching_up);
        self.metrics.timing(jitter, timing.exec);
        self.metrics.maybe_publish(now);
    }

    /// Releases skipped after a stall: counted, recorded and said once. A
    /// process run under a controller holds its outputs until the
    /// controller confirms it still runs here.
    pub fn skipped(&self, skip: Skip) {
        Counters::add(&self.metrics.counters().skipped_releases, skip.count);
        let held = self.gate.hold_after_stall();
        tracing::warn!(
            process = %self.name(),
            skipped = skip.count,
            from = %skip.from,
            resume = %skip.resume,
            held,
            "fell behind by more than the catch-up bound (was the node stopped?): skipping to the present"
        );
        self.record(skip.from, || Event::Skip {
            resume: skip.resume,
        });
    }

    /// Books a fault and says when to restart (`None`: never again).
    pub fn on_fault(&mut self, fault: Fault) -> Option<u64> {
        tracing::warn!(process = %self.name(), kind = ?fault.kind, "process faulted: {}", fault.message);
        self.metrics.fault(fault.clone());
        match self.restarts.fault(monotonic_ns()) {
            Decision::Fail => {
                self.metrics
                    .set_state(ProcessState::Failed, Some(fault.message));
                None
            }
            Decision::Park {
                faults,
                max_restarts,
            } => {
                let reason = format!(
                    "crash loop: {faults} faults in a row (max_restarts = {max_restarts}); last: {}",
                    fault.message
                );
                tracing::error!(process = %self.name(), "parked: {reason}");
                self.metrics.set_state(ProcessState::Parked, Some(reason));
                None
            }
            Decision::RetryAt(at) => {
                self.metrics
                    .set_state(ProcessState::Backoff, Some(fault.message));
                Some(at)
            }
        }
    }

    /// Marks the process stopped and keeps its final state for a handover.
    pub fn finish(&mut self, process: Option<Process>) {
        let (last, chain) = self.metrics.last_chain();
        self.record(Tag(last.unwrap_or(0)), || Event::Stop { chain });
        if let Some(mut process) = process
            && !process.spec().grants(&Capability::Wasi)
        {
            match process.snapshot() {
                Ok(snapshot) => *self.final_snapshot.lock().unwrap() = Some(snapshot),
                Err(e) => tracing::warn!(process = %self.name(), "no final snapshot: {e:#}"),
            }
        }
        if matches!(
            self.metrics.state(),
            ProcessState::Running | ProcessState::Starting | ProcessState::Backoff
        ) {
            self.metrics.set_state(ProcessState::Stopped, None);
        } else {
            self.metrics.publish();
        }
    }
}
