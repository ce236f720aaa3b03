//! The two schedulers that drive processes, and the supervision they share.
//!
//! * rt: one dedicated OS thread per process, `SCHED_FIFO` when permitted,
//!   pinned, released with `clock_nanosleep` at `start + offset + k·period`,
//!   synchronous wasmtime calls under a fuel budget.
//! * be: one tokio task per process, async wasmtime calls that yield at every
//!   epoch so a busy process cannot hold a worker, interrupted at its deadline.
//!
//! Both are loops in `drivers` around the same parts:
//!
//! * `releases`: the release grid, where an incarnation starts on it
//!   (catch-up) and what happens after a stall (skip-ahead). Replays walk
//!   the same grid.
//! * `restarts`: the restart policy as a small state machine.
//! * `gate`: where outputs and log lines go: published, or held while the
//!   process's `switch` says so (a hot standby, or a process that skipped
//!   ahead and waits for the controller).
//! * `checkpointer`: periodic snapshots to the node's checkpoint sink.
//! * `supervisor`: starting an incarnation and booking each call (deadline
//!   policy, publishing, metrics, recording), built from the parts above.

mod checkpointer;
mod drivers;
mod gate;
pub(crate) mod releases;
mod restarts;
pub(crate) mod supervisor;
mod switch;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use weft_types::{ProcessName, Tag};

use crate::snapshot::Snapshot;

pub(crate) use drivers::{run_be, run_rt};
pub(crate) use gate::apply_miss_policy;
pub(crate) use supervisor::Supervisor;
pub(crate) use switch::Switch;

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

    pub(crate) fn flag(&self) -> &AtomicBool {
        &self.flag
    }

    pub(crate) async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|stopped| *stopped).await;
    }
}

/// Receives periodic checkpoints: (process, tag, snapshot), each a base or
/// the increment after the previous one (apply them in order: see
/// [`Snapshot::apply`]). Called on the process's own (possibly rt) thread:
/// apply, encode and send elsewhere.
pub type CheckpointSink = Arc<dyn Fn(&ProcessName, Tag, Snapshot) + Send + Sync>;

/// How often a process is checkpointed, and where the checkpoints go.
#[derive(Clone)]
pub struct Checkpointing {
    pub every: Duration,
    pub sink: CheckpointSink,
}
