//! Periodic checkpoints of a running process, handed to the node's sink.
//!
//! A checkpoint is taken at a call boundary on the process's own thread:
//! a base, or only the pages written since the previous one
//! (`snapshot::checkpoint`); the sink applies, encodes and sends it
//! elsewhere. A held
//! standby takes none: its primary's are the process's. A process that
//! cannot be snapshotted stops being checkpointed after saying why once.

use weft_types::Tag;

use super::Checkpointing;
use crate::process::Process;

pub(crate) struct Checkpointer {
    config: Option<Checkpointing>,
    /// Monotonic time of the last checkpoint.
    last_ns: u64,
}

impl Checkpointer {
    pub fn new(config: Option<Checkpointing>, now_ns: u64) -> Checkpointer {
        Checkpointer {
            config,
            last_ns: now_ns,
        }
    }

    /// Takes and sends a checkpoint when one is due.
    pub fn maybe(&mut self, process: &mut Process, tag: Tag, held: bool, now_ns: u64) {
        let Some(config) = self.config.as_ref().filter(|_| !held) else {
            return;
        };
        if now_ns.saturating_sub(self.last_ns) < config.every.as_nanos() as u64 {
            return;
        }
        self.last_ns = now_ns;
        match process.checkpoint() {
            Ok(snapshot) => (config.sink)(process.name(), tag, snapshot),
            Err(e) => {
                tracing::warn!(process = %process.name(), "cannot checkpoint: {e:#}");
                self.config = None;
            }
        }
    }
}
