//! The I/O around the plan: take the state, plan, keep the result, persist
//! what changed (outside the state lock), then send every alive node its
//! complete desired state. Level-triggered: every run starts from what is,
//! so a lost message or a failed write is made good by the next run.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{debug, error, info, warn};
use weft_fabric::proto::{NodeRequest, NodeResponse};
use weft_types::NodeName;

use crate::plan::{self, Event};
use crate::shared::{SharedRef, blocking, now_ms};
use crate::views;

/// Time a node has to answer a `Sync`.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(2);

/// Which nodes have a `Sync` in flight, and which failed last time.
#[derive(Default)]
pub(crate) struct SyncTracker {
    in_flight: Mutex<BTreeSet<NodeName>>,
    failing: Mutex<BTreeSet<NodeName>>,
}

/// One reconciliation. Nodes are told only what has been persisted, so a
/// controller that restarts never undoes what nodes were told.
pub(crate) async fn reconcile(shared: &SharedRef) {
    let mut persisted = shared.reconciling.lock().await;
    let (current, syncs) = {
        let mut state = shared.state();
        state.observed.presume_unseen = shared.in_grace();
        let plan = plan::plan(&state.spec, &state.observed, &state.current, now_ms());
        plan.events.iter().for_each(log);
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
    for (node, seen, apps) in syncs {
        send_sync(shared, node, NodeRequest::Sync { apps, seen });
    }
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
        Event::MoveFinished { who, from, to } => info!(
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
        let failure = match result {
            Ok(NodeResponse::Ok {}) => None,
            Ok(NodeResponse::Error { message }) => Some(message),
            Err(e) => Some(format!("{e:#}")),
        };
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
