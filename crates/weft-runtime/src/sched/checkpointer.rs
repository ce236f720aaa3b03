//! Periodic checkpoints of a running process, handed to the node's sink.
//!
//! A checkpoint is taken at a call boundary on the process's own thread:
//! the incarnation's base first, then only the pages written since the
//! previous checkpoint (`snapshot::checkpoint`); the sink applies, encodes
//! and sends them elsewhere. The base is copied a slice at a time after
//! each call, each slice small enough to take about a tenth of the
//! process's period, so even a large memory never stretches a tick window.
//! A held standby takes none: its primary's are the process's. A process
//! that cannot be snapshotted stops being checkpointed after saying why
//! once.

use weft_types::Tag;

use super::Checkpointing;
use crate::process::Process;

/// How fast a base is copied into memory not touched before, in bytes per
/// nanosecond, erring low: 64 MiB took 36 ms here (`docs/design.md`), and
/// slices of a base between 1 kHz ticks took 0.2-0.5 ms per 200 KB.
const COPY_BYTES_PER_NS: u64 = 1;
/// The smallest slice of a base copied after one call.
const MIN_SLICE: usize = 64 << 10;

pub(crate) struct Checkpointer {
    config: Option<Checkpointing>,
    /// Monotonic time of the last checkpoint.
    last_ns: u64,
}

/// Bytes of a base copied after each call: a tenth of the period's worth
/// (all at once for a process with no period).
fn slice(process: &Process) -> usize {
    match process.spec().period {
        Some(period) => {
            let bytes = period.as_nanos() as u64 / 10 * COPY_BYTES_PER_NS;
            (bytes as usize).max(MIN_SLICE)
        }
        None => usize::MAX,
    }
}

impl Checkpointer {
    pub fn new(config: Option<Checkpointing>, now_ns: u64) -> Checkpointer {
        Checkpointer {
            config,
            last_ns: now_ns,
        }
    }

    /// Copies the next slice of a base being taken, and takes and sends a
    /// checkpoint when one is due.
    pub fn maybe(&mut self, process: &mut Process, tag: Tag, held: bool, now_ns: u64) {
        if self.config.is_none() || held {
            return;
        }
        if process.copying_base() {
            if process.copy_base(slice(process)) {
                self.send(process, tag);
            }
            return;
        }
        let every = self
            .config
            .as_ref()
            .map_or(0, |c| c.every.as_nanos() as u64);
        if now_ns.saturating_sub(self.last_ns) < every {
            return;
        }
        self.last_ns = now_ns;
        if !process.chained() {
            process.start_base();
            if !process.copy_base(slice(process)) {
                return;
            }
        }
        self.send(process, tag);
    }

    fn send(&mut self, process: &mut Process, tag: Tag) {
        let Some(config) = &self.config else {
            return;
        };
        match process.checkpoint() {
            Ok(snapshot) => (config.sink)(process.name(), tag, snapshot),
            Err(e) => {
                tracing::warn!(process = %process.name(), "cannot checkpoint: {e:#}");
                self.config = None;
            }
        }
    }
}
