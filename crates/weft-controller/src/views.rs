//! What the controller shows and sends, derived from its state: the
//! entries of `weft ps` and `weft nodes`, and the desired state of each
//! node (its `Sync`).

use std::collections::{BTreeMap, BTreeSet};

use weft_fabric::proto::{
    AppAssignment, NodeEntry, ProcessStatus, PsEntry, StandbyEntry, StatusMark,
};
use weft_manifest::ProcessSpec;
use weft_types::{
    AppName, NodeName, NodeState, ProcessName, ProcessRef, ProcessState, ReplicaState, Role,
    StandbyMode, Tag,
};

use crate::model::{App, Current, State, Unit};
use crate::placement::checkpoint_peer;

/// Every process of every app.
pub fn ps(state: &State) -> Vec<PsEntry> {
    state
        .spec
        .apps
        .keys()
        .flat_map(|app| ps_entries(state, app))
        .collect()
}

/// The processes of `app` that no node takes.
pub fn pending(state: &State, app: &AppName) -> Vec<PsEntry> {
    ps_entries(state, app)
        .into_iter()
        .filter(|e| e.status.state == ProcessState::Pending)
        .collect()
}

pub fn ps_entries(state: &State, app: &AppName) -> Vec<PsEntry> {
    let Some(a) = state.spec.apps.get(app) else {
        return Vec::new();
    };
    a.manifest
        .processes
        .iter()
        .map(|spec| ps_entry(state, app, a, spec))
        .collect()
}

fn ps_entry(state: &State, app: &AppName, a: &App, spec: &ProcessSpec) -> PsEntry {
    let unit = Unit::primary(&spec.name);
    let node = state.current.node(app, &unit).cloned();
    let unreported = |s: ProcessState| {
        ProcessStatus::unreported(app.clone(), spec.name.clone(), a.record.generation, s)
    };
    let status = match &node {
        None => {
            let mut status = unreported(ProcessState::Pending);
            status.reason = state.pending.get(app).and_then(|p| p.get(&unit)).cloned();
            status
        }
        Some(node) => state
            .observed
            .reported(node, a, &spec.name, false)
            .cloned()
            .unwrap_or_else(|| unreported(ProcessState::Starting)),
    };
    let who = ProcessRef::new(app.clone(), spec.name.clone());
    PsEntry {
        lost_checkpoint: node
            .as_ref()
            .and_then(|n| state.observed.lost_checkpoint(&who, n, &status)),
        status,
        node,
        period_ns: spec.period.map(|p| p.as_nanos() as u64),
        standby: standby_entry(state, app, a, spec),
    }
}

fn standby_entry(
    state: &State,
    app: &AppName,
    a: &App,
    spec: &ProcessSpec,
) -> Option<StandbyEntry> {
    if spec.standby != Some(StandbyMode::Hot) {
        return None;
    }
    let unit = Unit::standby(&spec.name);
    let Some(node) = state.current.node(app, &unit) else {
        return Some(StandbyEntry {
            node: None,
            state: ReplicaState::Pending,
            reason: state.pending.get(app).and_then(|p| p.get(&unit)).cloned(),
            last_tag_ns: None,
            chain_mark: None,
        });
    };
    let reported = state.observed.reported(node, a, &spec.name, true);
    Some(StandbyEntry {
        node: Some(node.clone()),
        state: if reported.is_some() {
            ReplicaState::InStep
        } else {
            ReplicaState::Starting
        },
        reason: None,
        last_tag_ns: reported.and_then(|p| p.last_tag_ns),
        chain_mark: reported.and_then(|p| p.chain_mark.clone()),
    })
}

/// Every node seen.
pub fn nodes(state: &State) -> Vec<NodeEntry> {
    state
        .observed
        .nodes
        .iter()
        .map(|(name, seen)| {
            let status = seen.status.as_ref();
            NodeEntry {
                name: name.clone(),
                pid: status.map_or(0, |s| s.pid),
                state: if !seen.alive {
                    NodeState::Dead
                } else if state.spec.drained.contains(name) {
                    NodeState::Draining
                } else {
                    NodeState::Alive
                },
                labels: status.map(|s| s.labels.clone()).unwrap_or_default(),
                devices: status.map(|s| s.devices.clone()).unwrap_or_default(),
                device_reports: status.map(|s| s.device_reports.clone()).unwrap_or_default(),
                rt_class: status.map(|s| s.rt_class),
                dirty_tracking: status.and_then(|s| s.dirty_tracking),
                free_slots: status.map_or(0, |s| s.free_slots),
                processes: units_on(&state.current, name).len(),
            }
        })
        .collect()
}

/// The primaries placed on `node`.
pub fn primaries_on(current: &Current, node: &NodeName) -> Vec<ProcessRef> {
    units_on(current, node)
        .into_iter()
        .filter(|(_, unit)| unit.role == Role::Primary)
        .map(|(app, unit)| ProcessRef::new(app, unit.process))
        .collect()
}

fn units_on(current: &Current, node: &NodeName) -> Vec<(AppName, Unit)> {
    current
        .placed
        .iter()
        .flat_map(|(app, placed)| {
            placed
                .iter()
                .filter(|(_, n)| *n == node)
                .map(|(unit, _)| (app.clone(), unit.clone()))
        })
        .collect()
}

/// The complete desired state of every alive node: for each app that has a
/// unit on it, the assignment it is told.
/// Each alive node's `Sync`: the status it answers, whether the node asked
/// for one regardless of change, and its desired state.
pub fn syncs(state: &State) -> Vec<(NodeName, Option<StatusMark>, bool, Vec<AppAssignment>)> {
    let alive: Vec<&NodeName> = state
        .observed
        .nodes
        .iter()
        .filter(|(_, seen)| seen.alive)
        .map(|(node, _)| node)
        .collect();
    let empty = crate::model::Placed::new();
    let peers: BTreeMap<&AppName, BTreeMap<ProcessName, NodeName>> = state
        .spec
        .apps
        .iter()
        .map(|(app, a)| {
            let placed = state.current.placed.get(app).unwrap_or(&empty);
            (app, checkpoint_peers(app, a, placed, &alive))
        })
        .collect();
    let mut checkpointed: BTreeMap<&AppName, BTreeMap<ProcessName, Tag>> = BTreeMap::new();
    for who in state.observed.checkpoints.keys() {
        if let Some(tag) = state.observed.checkpoint_tag(who) {
            checkpointed
                .entry(&who.app)
                .or_default()
                .insert(who.process.clone(), tag);
        }
    }
    alive
        .iter()
        .map(|node| {
            let seen = &state.observed.nodes[*node];
            let apps = state
                .spec
                .apps
                .iter()
                .filter_map(|(app, a)| {
                    let placed = state.current.placed.get(app).unwrap_or(&empty);
                    let peers = &peers[app];
                    let here = placed.values().chain(peers.values()).any(|n| n == *node);
                    here.then(|| {
                        let mut assignment = assignment(&state.current, app, a, placed, node);
                        assignment.checkpoint_peers = peers.clone();
                        assignment.checkpointed =
                            checkpointed.get(app).cloned().unwrap_or_default();
                        assignment
                    })
                })
                .collect();
            let node = (*node).clone();
            let status = seen.status.as_ref();
            let wants = status.is_none_or(|s| s.wants_sync);
            (node.clone(), status.map(|s| s.mark()), wants, apps)
        })
        .collect()
}

/// The checkpoint peer of every process of `app` that checkpoints (see
/// `placement::checkpoint_peer`).
fn checkpoint_peers(
    app: &AppName,
    a: &App,
    placed: &crate::model::Placed,
    alive: &[&NodeName],
) -> BTreeMap<ProcessName, NodeName> {
    a.manifest
        .processes
        .iter()
        .filter(|spec| spec.snapshottable())
        .filter_map(|spec| {
            let who = ProcessRef::new(app.clone(), spec.name.clone());
            let primary = placed.get(&Unit::primary(&spec.name));
            let standby = placed.get(&Unit::standby(&spec.name));
            let peer = checkpoint_peer(&who, primary, standby, alive.iter().copied())?;
            Some((spec.name.clone(), peer.clone()))
        })
        .collect()
}

/// What `node` is told about `app`: its primaries (a process being handed
/// over still shows its old node to everyone but that node) and replicas.
fn assignment(
    current: &Current,
    app: &AppName,
    a: &App,
    placed: &crate::model::Placed,
    node: &NodeName,
) -> AppAssignment {
    let mut placement = BTreeMap::new();
    let mut standby: BTreeMap<_, BTreeSet<NodeName>> = BTreeMap::new();
    for (unit, on) in placed {
        match unit.role {
            Role::Primary => {
                let who = ProcessRef::new(app.clone(), unit.process.clone());
                let shown = match current.handovers.get(&who) {
                    Some(h) if h.from != *node => h.from.clone(),
                    _ => on.clone(),
                };
                placement.insert(unit.process.clone(), shown);
            }
            Role::Standby | Role::Moving => {
                standby
                    .entry(unit.process.clone())
                    .or_default()
                    .insert(on.clone());
            }
        }
    }
    AppAssignment {
        app: app.clone(),
        generation: a.record.generation,
        manifest: a.record.manifest.clone(),
        placement,
        standby,
        checkpoint_peers: BTreeMap::new(),
        checkpointed: BTreeMap::new(),
        epoch_unix_ns: a.record.epoch_unix_ns,
    }
}
