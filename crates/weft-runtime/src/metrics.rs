//! Per-process metrics, and the report built from them.
//!
//! The driver of a process is the only writer ([`MetricsWriter`]). Readers
//! (node status, the live table, final reports) hold a [`MetricsHandle`] and
//! never take a lock the driver could wait on: counters are atomics, and
//! everything else (state, hash chain, last output, chain marks,
//! percentiles, histograms) is a snapshot the driver swaps in whole at every change of
//! state and at most every [`PUBLISH_EVERY`] otherwise. So an rt thread
//! never waits for a status reader, and a report's chain may trail its
//! counters by up to that much; a stopped process's report is exact.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;
use weft_manifest::Class;
use weft_types::{ProcessName, ProcessState};

use crate::durations::Durations;
use crate::types::{Fault, FaultCounts, FaultKind, HashChain};

/// How often a running process's snapshot is swapped in at most.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(100);
/// How many whole-second chain marks a report keeps.
pub const MARKS_KEPT: usize = 64;

/// Median, 99th percentile, maximum, minimum, mean and latest, in
/// microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub min_us: f64,
    pub mean_us: f64,
    /// The latest sample.
    pub last_us: f64,
    pub samples: u64,
}

impl Percentiles {
    pub(crate) fn of(d: &Durations) -> Percentiles {
        let us = |ns: u64| ns as f64 / 1000.0;
        Percentiles {
            p50_us: us(d.quantile_ns(0.5)),
            p99_us: us(d.quantile_ns(0.99)),
            max_us: us(d.max_ns()),
            min_us: us(d.min_ns()),
            mean_us: us(d.mean_ns()),
            last_us: us(d.last_ns()),
            samples: d.samples(),
        }
    }
}

/// Upper bounds of the exported timing histograms, in nanoseconds: steps
/// of 1, 2.5 and 5 from 1 µs to 1 s, which spans a 1 kHz loop's jitter
/// and a slow be call alike.
pub const HISTOGRAM_BOUNDS_NS: [u64; 19] = [
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
];

/// Durations counted by [`HISTOGRAM_BOUNDS_NS`], the form a Prometheus
/// histogram takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Samples at or below each bound and above the one before it; the
    /// last is of samples above every bound.
    pub counts: [u64; HISTOGRAM_BOUNDS_NS.len() + 1],
    pub sum_ns: u64,
}

impl Histogram {
    fn of(d: &Durations) -> Histogram {
        let mut h = Histogram {
            sum_ns: d.sum_ns(),
            ..Histogram::default()
        };
        d.counts_by_bound(&HISTOGRAM_BOUNDS_NS, &mut h.counts);
        h
    }
}

/// A process's wake-up jitter and call times as histograms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timing {
    pub jitter: Histogram,
    pub exec: Histogram,
}

/// Whether processes publish [`Timing`] histograms for a scraper. Off
/// until a node serves `/metrics`, so a node nobody scrapes does not pay
/// their ~350 bytes per process and per publication.
static HISTOGRAMS_WANTED: AtomicBool = AtomicBool::new(false);

/// Makes every process of this OS process publish its [`Timing`]
/// histograms from its next publication on.
pub fn publish_histograms() {
    HISTOGRAMS_WANTED.store(true, Ordering::Relaxed);
}

/// An optional u64 in an atomic (`u64::MAX` is none).
#[derive(Debug)]
struct AtomicOption(AtomicU64);

impl Default for AtomicOption {
    fn default() -> Self {
        AtomicOption(AtomicU64::new(u64::MAX))
    }
}

impl AtomicOption {
    fn get(&self) -> Option<u64> {
        Some(self.0.load(Ordering::Relaxed)).filter(|v| *v != u64::MAX)
    }
    fn set(&self, value: Option<u64>) {
        self.0.store(value.unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

/// The counters of one process; only its driver writes them.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub ticks: AtomicU64,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub messages_dropped: AtomicU64,
    pub messages_refused: AtomicU64,
    pub messages_duplicate: AtomicU64,
    pub tardy: AtomicU64,
    pub deadline_misses: AtomicU64,
    pub skipped_releases: AtomicU64,
    /// Writes to fenced devices held back (standby, re-run tags).
    pub fenced_writes: AtomicU64,
    pub faults: AtomicU64,
    faults_by_kind: FaultCounts,
    pub restarts: AtomicU64,
    pub fuel_used: AtomicU64,
    pub memory_bytes: AtomicU64,
    last_tag_ns: AtomicOption,
    first_tag_ns: AtomicOption,
    resume_lateness_ns: AtomicOption,
    pub standby: AtomicBool,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
    pub fn set(counter: &AtomicU64, n: u64) {
        counter.store(n, Ordering::Relaxed);
    }
    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// What is swapped in whole.
#[derive(Debug, Clone)]
struct Published {
    state: ProcessState,
    reason: Option<String>,
    last_fault: Option<Fault>,
    chain: HashChain,
    last_output: Vec<u8>,
    marks: Vec<(u64, HashChain)>,
    jitter: Percentiles,
    exec: Percentiles,
    timing: Option<Box<Timing>>,
}

struct Shared {
    name: ProcessName,
    class: Class,
    counters: Counters,
    published: ArcSwap<Published>,
}

/// Reads a process's metrics from any thread.
#[derive(Clone)]
pub struct MetricsHandle(Arc<Shared>);

/// Updates a process's metrics: owned by its driver.
pub(crate) struct MetricsWriter {
    shared: Arc<Shared>,
    state: ProcessState,
    reason: Option<String>,
    last_fault: Option<Fault>,
    chain: HashChain,
    last_output: Vec<u8>,
    marks: VecDeque<(u64, HashChain)>,
    jitter: Durations,
    exec: Durations,
    published_at_ns: u64,
}

impl MetricsWriter {
    pub fn new(name: ProcessName, class: Class) -> (MetricsWriter, MetricsHandle) {
        let writer = MetricsWriter {
            shared: Arc::new(Shared {
                name,
                class,
                counters: Counters::default(),
                published: ArcSwap::from_pointee(Published {
                    state: ProcessState::Starting,
                    reason: None,
                    last_fault: None,
                    chain: HashChain::default(),
                    last_output: Vec::new(),
                    marks: Vec::new(),
                    jitter: Percentiles::default(),
                    exec: Percentiles::default(),
                    timing: None,
                }),
            }),
            state: ProcessState::Starting,
            reason: None,
            last_fault: None,
            chain: HashChain::default(),
            last_output: Vec::new(),
            marks: VecDeque::new(),
            jitter: Durations::new(),
            exec: Durations::new(),
            published_at_ns: 0,
        };
        let handle = MetricsHandle(writer.shared.clone());
        (writer, handle)
    }

    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    pub fn state(&self) -> ProcessState {
        self.state
    }

    /// The hash chain and last tag as last booked.
    pub fn last_chain(&self) -> (Option<u64>, HashChain) {
        (self.shared.counters.last_tag_ns.get(), self.chain)
    }

    /// A change of state, published at once.
    pub fn set_state(&mut self, state: ProcessState, reason: Option<String>) {
        self.state = state;
        self.reason = reason;
        self.publish();
    }

    pub fn fault(&mut self, fault: Fault) {
        Counters::add(&self.counters().faults, 1);
        self.counters().faults_by_kind.add(fault.kind);
        self.last_fault = Some(fault);
    }

    /// The chain after a call at `tag`, noted as a mark if `tag` is a whole
    /// second.
    pub fn chain(&mut self, tag: Option<u64>, chain: HashChain) {
        self.chain = chain;
        let counters = &self.shared.counters;
        counters.last_tag_ns.set(tag);
        let Some(tag) = tag else {
            return;
        };
        if counters.first_tag_ns.get().is_none() {
            counters.first_tag_ns.set(Some(tag));
        }
        if !tag.is_multiple_of(1_000_000_000) {
            return;
        }
        if self.marks.back().is_some_and(|(t, _)| *t == tag) {
            self.marks.pop_back();
        }
        if self.marks.len() == MARKS_KEPT {
            self.marks.pop_front();
        }
        self.marks.push_back((tag, chain));
    }

    pub fn last_output(&mut self, payload: &[u8]) {
        self.last_output.clear();
        self.last_output.extend_from_slice(payload);
    }

    /// How late the first call ran (set once).
    pub fn resume_lateness(&self, lateness: Duration) {
        let counters = &self.shared.counters;
        if counters.resume_lateness_ns.get().is_none() {
            counters
                .resume_lateness_ns
                .set(Some(lateness.as_nanos() as u64));
        }
    }

    pub fn timing(&mut self, jitter: Option<Duration>, exec: Duration) {
        if let Some(jitter) = jitter {
            self.jitter.record(jitter);
        }
        self.exec.record(exec);
    }

    /// Publishes if the last publication is older than [`PUBLISH_EVERY`].
    pub fn maybe_publish(&mut self, now_ns: u64) {
        if now_ns.saturating_sub(self.published_at_ns) >= PUBLISH_EVERY.as_nanos() as u64 {
            self.published_at_ns = now_ns;
            self.publish();
        }
    }

    pub fn publish(&self) {
        self.shared.published.store(Arc::new(Published {
            state: self.state,
            reason: self.reason.clone(),
            last_fault: self.last_fault.clone(),
            chain: self.chain,
            last_output: self.last_output.clone(),
            marks: self.marks.iter().copied().collect(),
            jitter: Percentiles::of(&self.jitter),
            exec: Percentiles::of(&self.exec),
            timing: HISTOGRAMS_WANTED.load(Ordering::Relaxed).then(|| {
                Box::new(Timing {
                    jitter: Histogram::of(&self.jitter),
                    exec: Histogram::of(&self.exec),
                })
            }),
        }));
    }
}

impl MetricsHandle {
    pub fn name(&self) -> &ProcessName {
        &self.0.name
    }

    /// A point-in-time copy.
    pub fn report(&self) -> ProcessReport {
        self.report_with(MARKS_KEPT)
    }

    /// A point-in-time copy with only the newest chain mark: what a node's
    /// status carries of every process several times a second (encoding
    /// all 64 marks of thousands of processes was a tenth of a busy node's
    /// CPU).
    pub fn brief(&self) -> ProcessReport {
        self.report_with(1)
    }

    /// What a metrics scrape reads: counters and histograms, none of the
    /// strings a report formats.
    pub fn sample(&self) -> ProcessSample {
        let c = &self.0.counters;
        let p = self.0.published.load();
        ProcessSample {
            class: self.0.class,
            state: p.state,
            standby: c.standby.load(Ordering::Relaxed),
            ticks: Counters::get(&c.ticks),
            messages_in: Counters::get(&c.messages_in),
            messages_out: Counters::get(&c.messages_out),
            messages_dropped: Counters::get(&c.messages_dropped),
            messages_refused: Counters::get(&c.messages_refused),
            tardy: Counters::get(&c.tardy),
            deadline_misses: Counters::get(&c.deadline_misses),
            skipped_releases: Counters::get(&c.skipped_releases),
            fenced_writes: Counters::get(&c.fenced_writes),
            faults: c.faults_by_kind.get(),
            restarts: Counters::get(&c.restarts),
            fuel_used: Counters::get(&c.fuel_used),
            memory_bytes: Counters::get(&c.memory_bytes),
            timing: p.timing.as_deref().copied(),
        }
    }

    fn report_with(&self, marks: usize) -> ProcessReport {
        let c = &self.0.counters;
        let p = self.0.published.load();
        ProcessReport {
            name: self.0.name.clone(),
            class: self.0.class,
            state: p.state,
            reason: p.reason.clone(),
            ticks: Counters::get(&c.ticks),
            messages_handled: Counters::get(&c.messages_in),
            messages_in: Counters::get(&c.messages_in),
            messages_out: Counters::get(&c.messages_out),
            messages_dropped: Counters::get(&c.messages_dropped),
            messages_refused: Counters::get(&c.messages_refused),
            messages_duplicate: Counters::get(&c.messages_duplicate),
            tardy: Counters::get(&c.tardy),
            deadline_misses: Counters::get(&c.deadline_misses),
            skipped_releases: Counters::get(&c.skipped_releases),
            fenced_writes: Counters::get(&c.fenced_writes),
            faults: Counters::get(&c.faults),
            restarts: Counters::get(&c.restarts),
            fuel_used: Counters::get(&c.fuel_used),
            memory_bytes: Counters::get(&c.memory_bytes),
            output_hash: p.chain.hex(),
            last_tag_ns: c.last_tag_ns.get(),
            first_tag_ns: c.first_tag_ns.get(),
            resume_lateness_ns: c.resume_lateness_ns.get(),
            last_output_hex: (!p.last_output.is_empty()).then(|| hex::encode(&p.last_output)),
            chain_marks: p.marks[p.marks.len().saturating_sub(marks)..]
                .iter()
                .map(|(tag_ns, chain)| ChainMark {
                    tag_ns: *tag_ns,
                    output_hash: chain.hex(),
                })
                .collect(),
            standby: c.standby.load(Ordering::Relaxed),
            last_fault: p.last_fault.clone(),
            jitter: p.jitter,
            exec: p.exec,
        }
    }
}

/// A process's counters and histograms at one instant, for a scrape.
#[derive(Debug, Clone)]
pub struct ProcessSample {
    pub class: Class,
    pub state: ProcessState,
    pub standby: bool,
    pub ticks: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub messages_dropped: u64,
    pub messages_refused: u64,
    pub tardy: u64,
    pub deadline_misses: u64,
    pub skipped_releases: u64,
    pub fenced_writes: u64,
    /// Faults by kind, every kind listed.
    pub faults: [(FaultKind, u64); FaultKind::ALL.len()],
    pub restarts: u64,
    pub fuel_used: u64,
    pub memory_bytes: u64,
    /// None until [`publish_histograms`] is on and the process has published since.
    pub timing: Option<Timing>,
}

/// A process's output chain at one tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainMark {
    pub tag_ns: u64,
    pub output_hash: String,
}

/// A point-in-time copy of a process's metrics (the `--json` schema).
#[derive(Debug, Clone, Serialize)]
pub struct ProcessReport {
    pub name: ProcessName,
    pub class: Class,
    pub state: ProcessState,
    pub reason: Option<String>,
    pub ticks: u64,
    /// Messages the process handled (`messages_in` by its other name, kept
    /// in the `--json` schema).
    pub messages_handled: u64,
    /// Messages the process handled.
    pub messages_in: u64,
    pub messages_out: u64,
    pub messages_dropped: u64,
    pub messages_refused: u64,
    /// Copies of already delivered messages (from a restored sender), dropped.
    pub messages_duplicate: u64,
    pub tardy: u64,
    pub deadline_misses: u64,
    /// Releases skipped after a stall (see `docs/design.md`).
    pub skipped_releases: u64,
    /// Writes to fenced (real) devices held back because the process was
    /// a standby or re-ran tags (see `docs/devices.md`).
    pub fenced_writes: u64,
    pub faults: u64,
    pub restarts: u64,
    pub fuel_used: u64,
    pub memory_bytes: u64,
    pub output_hash: String,
    pub last_tag_ns: Option<u64>,
    /// The first tag this incarnation completed.
    pub first_tag_ns: Option<u64>,
    /// How late this incarnation's first tick ran after its release time
    /// (for a restored process: how long its outputs paused).
    pub resume_lateness_ns: Option<u64>,
    pub last_output_hex: Option<String>,
    /// The output chain at the latest tags that were whole seconds (up to
    /// [`MARKS_KEPT`], oldest first). Runs of the same app compare chains
    /// here, at the same tag, wherever and however they ran.
    pub chain_marks: Vec<ChainMark>,
    /// A hot standby: computing, its outputs held back.
    pub standby: bool,
    pub last_fault: Option<Fault>,
    /// Wake-up lateness against the release time.
    pub jitter: Percentiles,
    /// Execution time of one tick or message.
    pub exec: Percentiles,
}
