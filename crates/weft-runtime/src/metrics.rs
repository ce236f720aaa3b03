//! Per-process metrics and the report built from them.
//!
//! A scheduler owns the [`ProcessMetrics`] of each process it drives and
//! updates them after every call; readers (the live table, the final
//! report, later the cluster status) take a [`ProcessReport`] copy.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use weft_manifest::Class;

use crate::process::Fault;

/// Lifecycle of a process as the node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessState {
    Starting,
    Running,
    /// Waiting out its restart backoff after a fault.
    Backoff,
    /// Faulted with restart policy `never`.
    Failed,
    /// Crash-looped: faulted more than `max_restarts` times in a row.
    Parked,
    Stopped,
}

/// Median, 99th percentile and maximum, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub samples: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Percentiles {
            p50_us: us(h.value_at_quantile(0.5)),
            p99_us: us(h.value_at_quantile(0.99)),
            max_us: us(h.max()),
            samples: h.len(),
        }
    }
}

pub(crate) fn histogram() -> Histogram<u64> {
    // 1 ns .. 60 s at 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Live counters of one process: the report fields plus the histograms
/// its percentiles come from.
pub struct ProcessMetrics {
    counters: ProcessReport,
    /// Raw forms of `output_hash` and `last_output_hex`, updated on every
    /// call without allocating; hex-encoded only when a report is taken.
    pub(crate) chain: [u8; 32],
    pub(crate) last_output: Vec<u8>,
    /// The chain at the latest whole-second tags (raw `chain_marks`).
    pub(crate) marks: std::collections::VecDeque<(u64, [u8; 32])>,
    pub jitter: Histogram<u64>,
    pub exec: Histogram<u64>,
}

impl std::ops::Deref for ProcessMetrics {
    type Target = ProcessReport;
    fn deref(&self) -> &ProcessReport {
        &self.counters
    }
}

impl std::ops::DerefMut for ProcessMetrics {
    fn deref_mut(&mut self) -> &mut ProcessReport {
        &mut self.counters
    }
}

/// How many whole-second chain marks a report keeps.
pub const MARKS_KEPT: usize = 64;

impl ProcessMetrics {
    /// Notes the chain at `tag` if it is a whole second.
    pub(crate) fn mark(&mut self, tag: u64) {
        if !tag.is_multiple_of(1_000_000_000) {
            return;
        }
        if self.marks.back().is_some_and(|(t, _)| *t == tag) {
            self.marks.pop_back();
        }
        if self.marks.len() == MARKS_KEPT {
            self.marks.pop_front();
        }
        self.marks.push_back((tag, self.chain));
    }

    pub fn new(name: &str, class: Class) -> ProcessMetrics {
        let counters = ProcessReport {
            name: name.to_string(),
            class,
            state: ProcessState::Starting,
            reason: None,
            ticks: 0,
            messages_handled: 0,
            messages_in: 0,
            messages_out: 0,
            messages_dropped: 0,
            messages_refused: 0,
            messages_duplicate: 0,
            tardy: 0,
            deadline_misses: 0,
            faults: 0,
            restarts: 0,
            fuel_used: 0,
            memory_bytes: 0,
            output_hash: hex::encode([0u8; 32]),
            last_tag_ns: None,
            first_tag_ns: None,
            resume_lateness_ns: None,
            last_output_hex: None,
            chain_marks: Vec::new(),
            standby: false,
            last_fault: None,
            jitter: Percentiles::default(),
            exec: Percentiles::default(),
        };
        ProcessMetrics {
            counters,
            chain: [0; 32],
            last_output: Vec::new(),
            marks: std::collections::VecDeque::new(),
            jitter: histogram(),
            exec: histogram(),
        }
    }

    pub(crate) fn record(h: &mut Histogram<u64>, d: Duration) {
        let _ = h.record((d.as_nanos() as u64).clamp(1, 60_000_000_000));
    }

    pub fn report(&self) -> ProcessReport {
        ProcessReport {
            jitter: Percentiles::of(&self.jitter),
            exec: Percentiles::of(&self.exec),
            output_hash: hex::encode(self.chain),
            last_output_hex: (!self.last_output.is_empty()).then(|| hex::encode(&self.last_output)),
            chain_marks: self
                .marks
                .iter()
                .map(|(tag_ns, chain)| ChainMark {
                    tag_ns: *tag_ns,
                    output_hash: hex::encode(chain),
                })
                .collect(),
            ..self.counters.clone()
        }
    }
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
    pub name: String,
    pub class: Class,
    pub state: ProcessState,
    pub reason: Option<String>,
    pub ticks: u64,
    pub messages_handled: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub messages_dropped: u64,
    pub messages_refused: u64,
    /// Copies of already delivered messages (from a restored sender), dropped.
    pub messages_duplicate: u64,
    pub tardy: u64,
    pub deadline_misses: u64,
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
