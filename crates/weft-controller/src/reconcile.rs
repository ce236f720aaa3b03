//! The I/O around the plan: take the state, plan, keep the result, persist
//! what changed (outside the state lock), then send every alive node its
//! complete desired state when it changed, when the node asks for one, or
//! after [`SYNC_REFRESH`] regardless. Level-triggered: every run starts
//! from what is, so a lost message or a failed write is made good by the
//! next run; a node whose state stays the same is not told it again every
//! half second (with thousands of processes that was most of the
//! controller's traffic).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};
use weft_fabric::proto::{AppAssignment, NodeRequest, NodeResponse, StatusMark};
use weft_types::NodeName;

use crate::events;
use crate::plan::{self, Event};
use crate::shared::{SharedRef, blocking, now_ms};
use crate::views;

/// Time a node has to answer a `Sync`.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(2);
/// A node is sent its unchanged desired state at least this often.
pub const SYNC_REFRESH: Duration = Duration::from_secs(10);

/// Which nodes have a `Sync` in flight, which failed last time, and what
/// each was last told successfully.
#[derive(Default)]
pub(crate) struct SyncTracker {
    in_flight: Mutex<BTreeSet<NodeName>>,
    failing: Mutex<BTreeSet<NodeName>>,
    told: Mutex<HashMap<NodeName, Told>>,
}

/// A `Sync` a node answered: to which incarnation, what, and when.
struct Told {
    pid: Option<u32>,
    apps: Vec<AppAssignment>,
    at: Instant,
}

impl SyncTracker {
    /// Whether `node` must be sent `apps` now.
    fn due(
        &self,
        node: &NodeName,
        seen: Option<StatusMark>,
        wants: bool,
        apps: &[AppAssignment],
    ) -> bool {
        let told = self.told.lock().unwrap();
        let Some(told) = told.get(node) else {
            return true;
        };
        wants
            || told.pid != seen.map(|m| m.pid)
            || told.apps != apps
            || told.at.elapsed() >= SYNC_REFRESH
    }
}

/// One reconciliation. Nodes are told only what has been persisted, so a
/// controller that restarts never undoes what nodes were told.
pub(crate) async fn reconcile(shared: &SharedRef) {
    let mut persisted = shared.reconciling.lock().await;
    let began = Instant::now();
    let (current, syncs) = {
        let mut state = shared.state();
        state.observed.presume_unseen = shared.in_grace();
        let plan = plan::plan(&state.spec, &state.observed, &state.current, now_ms());
        for event in &plan.events {
            log(event);
            shared.metrics.event(event.kind());
        }
        shared.events.record(events::from_plan(&plan.events));
        state.current = plan.current;
        state.pending = plan.pending;
        state.warnings = plan.warnings;
        (state.current.clone(), views::syncs(&state))
    };
    if current != *persisted {
        let (store, old, new) = (shared.store.clone(), persisted.clone(), current.clone());
        if let Err(e) = blocking(move || store.save_current(&old, &new)).await {
            error!("cannot persist placements; nodes are told nothing until it works: {e:#}");
            return;
        }
        *persisted = current;
    }
    drop(persisted);
    for (node, seen, wants, apps) in syncs {
        if shared.sync.due(&node, seen, wants, &apps) {
            send_sync(shared, node, NodeRequest::Sync { apps, seen });
        }
    }
    let took = began.elapsed().as_secs_f64();
    shared.metrics.reconcile_seconds.observe(took);
}

fn log(event: &Event) {
    match event {
        Event::Placed { app, unit, node } => info!(app = %app, %unit, node = %node, "placed"),
        Event::Moved {
            app,
            unit,
            from,
            to,
        } => {
            info!(app = %app, %unit, from = %from, to = %to, "moved")
        }
        Event::Lost {
            app,
            unit,
            from,
            reason,
        } => {
            warn!(app = %app, %unit, from = %from, reason, "lost its node; pending")
        }
        Event::Pending { app, unit, reason } => info!(app = %app, %unit, reason, "pending"),
        Event::TookOver { who, from, to } => {
            warn!(process = %who, from = %from, to = %to, "node is gone; its replica takes over")
        }
        Event::SwappedWithStandby { who, from, to } => {
            info!(process = %who, from = %from, to = %to, "switching to the hot standby")
        }
        Event::MoveStarted { who, from, to } => {
            info!(process = %who, from = %from, to = %to, "moving live off the drained node")
        }
        Event::MoveFinished { who, from, to, .. } => info!(
            process = %who, from = %from, to = %to,
            "moved live: the replica on the target takes over"
        ),
        Event::MoveAbandoned { who, to, why } => {
            warn!(process = %who, to = %to, "move abandoned: {why}")
        }
        Event::HandoverStarted { who, from } => {
            debug!(process = %who, from = %from, "handing over")
        }
        Event::HandedOver { who, from } => info!(process = %who, from = %from, "handed over"),
        Event::HandoverGivenUp { who, from, why } => warn!(
            process = %who, from = %from,
            "handover given up ({why}); it resumes from its latest checkpoint"
        ),
        Event::DelayWarning { app, warning } => warn!(app = %app, "{warning}"),
    }
}

/// Sends `node` its desired state, unless a previous one is in flight.
fn send_sync(shared: &SharedRef, node: NodeName, request: NodeRequest) {
    if !shared.sync.in_flight.lock().unwrap().insert(node.clone()) {
        debug!(node = %node, "previous sync still in flight; skipped");
        return;
    }
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let key = shared.keys.node_rpc(&node);
        let result = weft_fabric::rpc::call::<_, NodeResponse>(
            &shared.session,
            &key,
            &request,
            SYNC_TIMEOUT,
        )
        .await;
        shared.sync.in_flight.lock().unwrap().remove(&node);
        let NodeRequest::Sync { apps, seen } = request;
        match &result {
            Ok(NodeResponse::Ok {}) => {
                let told = Told {
                    pid: seen.map(|m| m.pid),
                    apps,
                    at: Instant::now(),
                };
                shared.sync.told.lock().unwrap().insert(node.clone(), told);
            }
            _ => {
                shared.sync.told.lock().unwrap().remove(&node);
            }
        }
        let failure = match result {
            Ok(NodeResponse::Ok {}) => None,
            Ok(NodeResponse::Error { message }) => Some(message),
            Err(e) => Some(format!("{e:#}")),
        };
        shared
            .metrics
            .sync(if failure.is_none() { "ok" } else { "error" });
        let mut failing = shared.sync.failing.lock().unwrap();
        match failure {
            Some(message) if failing.insert(node.clone()) => {
                warn!(node = %node, "sync failed: {message}")
            }
            Some(message) => debug!(node = %node, "sync failed again: {message}"),
            None if failing.remove(&node) => info!(node = %node, "sync succeeds again"),
            None => {}
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node is told again when what it should run changed, when it
    /// restarted, when it asks, or after the refresh; otherwise not.
    #[test]
    fn a_sync_is_due_on_change_request_restart_or_refresh() {
        let node: NodeName = "a".parse().unwrap();
        let mark = |pid| Some(StatusMark { pid, seq: 7 });
        let apps: Vec<AppAssignment> = Vec::new();
        let tracker = SyncTracker::default();
        assert!(tracker.due(&node, mark(1), false, &apps), "never told");
        tracker.told.lock().unwrap().insert(
            node.clone(),
            Told {
                pid: Some(1),
                apps: apps.clone(),
                at: Instant::now(),
            },
        );
        assert!(
            !tracker.due(&node, mark(1), false, &apps),
            "nothing changed"
        );
        assert!(tracker.due(&node, mark(1), true, &apps), "the node asks");
        assert!(
            tracker.due(&node, mark(2), false, &apps),
            "the node restarted"
        );
        let old = Instant::now().checked_sub(SYNC_REFRESH).unwrap();
        tracker.told.lock().unwrap().get_mut(&node).unwrap().at = old;
        assert!(tracker.due(&node, mark(1), false, &apps), "refresh");
    }
}
