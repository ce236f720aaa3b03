//! What the controller's tasks share: the store, the fabric session, the
//! state behind its one lock, and the locks that order changes.
//!
//! The state lock is a plain mutex held only to read or replace values,
//! never across an await or a write to the store, so `weft ps` never waits
//! for an fsync. Changes to the spec are serialised by `writes`, and
//! reconciliations by `reconciling`, which also holds what is persisted of
//! the decisions.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use tokio::sync::Notify;
use weft_fabric::Keys;

use crate::dashboard::PortTaps;
use crate::events::EventLog;
use crate::metrics::ControllerMetrics;
use crate::model::{Current, State};
use crate::reconcile::SyncTracker;
use crate::store::Store;

pub(crate) struct Shared {
    pub store: Arc<Store>,
    pub keys: Keys,
    pub session: zenoh::Session,
    pub state: Mutex<State>,
    /// Asks the reconciliation loop to run now.
    pub kick: Notify,
    pub started: Instant,
    pub grace: Duration,
    pub writes: tokio::sync::Mutex<()>,
    pub reconciling: tokio::sync::Mutex<Current>,
    pub sync: Arc<SyncTracker>,
    pub metrics: Arc<ControllerMetrics>,
    pub events: EventLog,
    /// The output ports the dashboard watches.
    pub taps: PortTaps,
}

impl Shared {
    pub fn in_grace(&self) -> bool {
        self.started.elapsed() < self.grace
    }

    /// Locks the state (a poisoned lock means a task panicked while holding
    /// it; the state is still whole, since every change is a replacement).
    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs blocking store work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("a store task panicked")?
}

/// Wall-clock milliseconds since the Unix epoch (intents are persisted
/// with it, so they age across a controller restart).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

pub(crate) type SharedRef = Arc<Shared>;
