//! The requests the controller answers: on `controller/rpc` (JSON), and a
//! deploy bundle on `controller/deploy` (binary).
//!
//! A request that changes the spec (deploy, remove, drain, undrain,
//! migrate) is checked first and refused with a reason, changing nothing.
//! Accepted, it is persisted, applied to the state, and reconciled before
//! the answer goes out, so the answer tells where things stand.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use tracing::{info, warn};
use weft_fabric::codec::DeployBundle;
use weft_fabric::proto::{ControlRequest, ControlResponse, EventEntry};
use weft_manifest::module::digest_of_any;
use weft_manifest::{AppManifest, ModuleRef};
use weft_types::{AppName, EventKind, ModuleDigest, NodeName, ProcessName, ProcessRef};

use crate::events::Query;
use crate::model::{App, MoveIntent, Unit};
use crate::placement;
use crate::plan;
use crate::reconcile::reconcile;
use crate::shared::{SharedRef, blocking, now_ms, now_unix_ns};
use crate::store::StoredApp;
use crate::views;

/// Delay between accepting a new app and its tag 0, so every node can
/// start its processes on the same grid.
const EPOCH_LEAD: std::time::Duration = std::time::Duration::from_millis(200);

fn not_found(what: String) -> ControlResponse {
    ControlResponse::NotFound { what }
}

pub(crate) async fn handle(shared: &SharedRef, request: ControlRequest) -> ControlResponse {
    let result = match request {
        ControlRequest::Remove { app } => remove(shared, app).await,
        ControlRequest::Ps => Ok(ControlResponse::Ps {
            processes: views::ps(&shared.state()),
        }),
        ControlRequest::Nodes => Ok(ControlResponse::Nodes {
            nodes: views::nodes(&shared.state()),
        }),
        ControlRequest::Drain { node } => drain(shared, node).await,
        ControlRequest::Undrain { node } => undrain(shared, node).await,
        ControlRequest::Migrate { app, process, to } => migrate(shared, app, process, to).await,
        ControlRequest::CheckpointInfo { app, process } => {
            checkpoint_info(shared, ProcessRef::new(app, process)).await
        }
        ControlRequest::Events {
            after,
            app,
            process,
            limit,
            wait_ms,
        } => {
            let query = Query {
                after,
                app,
                process,
                limit,
            };
            Ok(events(shared, query, wait_ms).await)
        }
    };
    result.unwrap_or_else(refused)
}

fn refused(e: anyhow::Error) -> ControlResponse {
    warn!("request refused: {e:#}");
    ControlResponse::Error {
        message: format!("{e:#}"),
    }
}

/// A deploy: the bundle's manifest, its modules checked against their
/// digests and stored with it.
pub(crate) async fn deploy(shared: &SharedRef, bytes: Vec<u8>) -> ControlResponse {
    deploy_bundle(shared, bytes).await.unwrap_or_else(refused)
}

async fn deploy_bundle(shared: &SharedRef, bytes: Vec<u8>) -> Result<ControlResponse> {
    let bundle =
        DeployBundle::decode(&bytes).map_err(|e| anyhow!("malformed deploy bundle: {e}"))?;
    let manifest = AppManifest::parse(&bundle.manifest, "the deployed manifest")?;
    check_modules(shared, &manifest, &bundle.modules).await?;
    let name = manifest.name.clone();
    let _writing = shared.writes.lock().await;
    let existing = shared
        .state()
        .spec
        .apps
        .get(&name)
        .map(|a| a.record.clone());
    let record = match existing {
        Some(record) if record.manifest == bundle.manifest => {
            info!(app = %name, generation = record.generation, "deploy of an unchanged manifest: nothing to do");
            return Ok(deployed(shared, &name, record.generation));
        }
        Some(record) => StoredApp {
            manifest: bundle.manifest,
            generation: record.generation + 1,
            epoch_unix_ns: record.epoch_unix_ns,
        },
        None => StoredApp {
            manifest: bundle.manifest,
            generation: 1,
            epoch_unix_ns: now_unix_ns() + EPOCH_LEAD.as_nanos() as u64,
        },
    };
    {
        let (store, name, record) = (shared.store.clone(), name.clone(), record.clone());
        blocking(move || store.put_app(&name, &record, &bundle.modules)).await?;
    }
    let generation = record.generation;
    let processes = manifest.processes.len();
    let message = match generation {
        1 => {
            info!(app = %name, processes, "new app");
            format!("{name} deployed: {processes} processes")
        }
        _ => {
            info!(app = %name, generation, "rolling update");
            format!("{name} updated to generation {generation}: {processes} processes")
        }
    };
    let event = EventEntry::new(EventKind::Deployed, message).app(&name);
    shared.events.record([event.count(processes as u64)]);
    let app = App {
        record,
        manifest: Arc::new(manifest),
    };
    shared.state().spec.apps.insert(name.clone(), app);
    reconcile(shared).await;
    Ok(deployed(shared, &name, generation))
}

fn deployed(shared: &SharedRef, name: &AppName, generation: u64) -> ControlResponse {
    let state = shared.state();
    ControlResponse::Deployed {
        app: name.clone(),
        generation,
        pending: views::pending(&state, name),
        warnings: state.warnings.get(name).cloned().unwrap_or_default(),
    }
}

/// Every module the manifest names is a digest, uploaded with it (and
/// those bytes have that digest) or stored before.
async fn check_modules(
    shared: &SharedRef,
    manifest: &AppManifest,
    uploaded: &BTreeMap<ModuleDigest, Vec<u8>>,
) -> Result<()> {
    for (digest, bytes) in uploaded {
        let actual =
            digest_of_any(bytes).map_err(|e| anyhow!("module uploaded as {digest}: {e}"))?;
        if actual != *digest {
            bail!(
                "module uploaded as {digest} has SHA-256 {actual} ({} bytes): corrupted or mislabelled",
                bytes.len()
            );
        }
    }
    for (entry, module) in manifest.module_refs() {
        let ModuleRef::Digest(digest) = module else {
            bail!(
                "{entry}: \"{module}\" is not a \"sha256:<hex>\" reference to an uploaded module \
                 (deploy through `weft deploy`, which uploads modules and rewrites their paths)"
            );
        };
        if uploaded.contains_key(&digest) {
            continue;
        }
        let store = shared.store.clone();
        if !blocking(move || store.has_module(&digest)).await? {
            bail!(
                "{entry}: module {digest} was neither uploaded with the deploy nor stored before"
            );
        }
    }
    Ok(())
}

async fn remove(shared: &SharedRef, app: AppName) -> Result<ControlResponse> {
    let _writing = shared.writes.lock().await;
    if !shared.state().spec.apps.contains_key(&app) {
        return Ok(not_found(format!("app \"{app}\"")));
    }
    let (store, name) = (shared.store.clone(), app.clone());
    blocking(move || store.remove_app(&name)).await?;
    shared.state().spec.apps.remove(&app);
    info!(app = %app, "app removed");
    let event = EventEntry::new(EventKind::Removed, format!("{app} removed")).app(&app);
    shared.events.record([event]);
    reconcile(shared).await;
    Ok(ControlResponse::Removed { app })
}

async fn drain(shared: &SharedRef, node: NodeName) -> Result<ControlResponse> {
    let _writing = shared.writes.lock().await;
    let moved = {
        let state = shared.state();
        let moved = views::primaries_on(&state.current, &node);
        if !state.observed.nodes.contains_key(&node) && moved.is_empty() {
            return Ok(not_found(format!("node \"{node}\"")));
        }
        moved
    };
    let (store, name) = (shared.store.clone(), node.clone());
    blocking(move || store.drain(&name)).await?;
    shared.state().spec.drained.insert(node.clone());
    info!(node = %node, processes = moved.len(), "draining node");
    let message = format!("node {node} drained: {} processes move off it", moved.len());
    let event = EventEntry::new(EventKind::NodeDrained, message).node(&node);
    shared.events.record([event.count(moved.len() as u64)]);
    reconcile(shared).await;
    Ok(ControlResponse::Drained { node, moved })
}

async fn undrain(shared: &SharedRef, node: NodeName) -> Result<ControlResponse> {
    let _writing = shared.writes.lock().await;
    {
        let state = shared.state();
        if !state.observed.nodes.contains_key(&node) && !state.spec.drained.contains(&node) {
            return Ok(not_found(format!("node \"{node}\"")));
        }
    }
    let (store, name) = (shared.store.clone(), node.clone());
    blocking(move || store.undrain(&name)).await?;
    shared.state().spec.drained.remove(&node);
    info!(node = %node, "node takes processes again");
    let message = format!("node {node} takes processes again");
    let event = EventEntry::new(EventKind::NodeUndrained, message).node(&node);
    shared.events.record([event]);
    reconcile(shared).await;
    Ok(ControlResponse::Undrained { node })
}

/// Moves one process live: refused, with the reason, for an unknown or
/// unsuitable node or a process that cannot be snapshotted; the process
/// keeps running where it was.
async fn migrate(
    shared: &SharedRef,
    app: AppName,
    process: ProcessName,
    to: NodeName,
) -> Result<ControlResponse> {
    let _writing = shared.writes.lock().await;
    let who = ProcessRef::new(app.clone(), process.clone());
    let from = {
        let mut state = shared.state();
        let from = match check_migration(&state, &who, &to)? {
            Ok(from) => from,
            Err(missing) => return Ok(missing),
        };
        state.current.moves.insert(
            who.clone(),
            MoveIntent {
                to: to.clone(),
                since_ms: now_ms(),
            },
        );
        from
    };
    info!(process = %who, from = %from, to = %to, "migrating");
    let message = format!("{who} moves live from {from} to {to}");
    let event = EventEntry::new(EventKind::MigrationBegun, message);
    shared
        .events
        .record([event.process(&who).node(&to).from(&from)]);
    reconcile(shared).await;
    Ok(ControlResponse::Migrating {
        app,
        process,
        from,
        to,
    })
}

/// Where `who` runs now, if it can move to `to`; `Ok(Err(..))` names what
/// does not exist.
fn check_migration(
    state: &crate::model::State,
    who: &ProcessRef,
    to: &NodeName,
) -> Result<Result<NodeName, ControlResponse>> {
    let Some(a) = state.spec.apps.get(&who.app) else {
        return Ok(Err(not_found(format!("app \"{}\"", who.app))));
    };
    let Some(spec) = a.spec(who.process.as_str()) else {
        return Ok(Err(not_found(format!("process \"{who}\""))));
    };
    let primary = Unit::primary(&who.process);
    let Some(from) = state.current.node(&who.app, &primary).cloned() else {
        bail!("{who} is pending (not running anywhere), so there is nothing to migrate");
    };
    if !spec.snapshottable() {
        bail!("{who} uses WASI and cannot be snapshotted, so it cannot migrate");
    }
    if from == *to {
        bail!("{who} already runs on {to}");
    }
    if !state.observed.nodes.get(to).is_some_and(|n| n.alive) {
        let alive: Vec<&str> = state
            .observed
            .nodes
            .iter()
            .filter(|(_, n)| n.alive)
            .map(|(n, _)| n.as_str())
            .collect();
        return Ok(Err(not_found(format!(
            "node \"{to}\" (alive nodes: {})",
            alive.join(", ")
        ))));
    }
    let Some(status) = state.observed.status(to) else {
        bail!("node {to} has not reported its status yet; try again in a moment");
    };
    if state.current.moves.contains_key(who) {
        bail!("{who} is already moving; wait until it has arrived");
    }
    let placed = state
        .current
        .placed
        .get(&who.app)
        .cloned()
        .unwrap_or_default();
    if placed.get(&Unit::standby(&who.process)) == Some(to) {
        // The standby there is in step already: the plan swaps the two.
        return Ok(Ok(from));
    }
    let candidates = plan::candidates(&who.app, a, &state.current.moves);
    let mine = placed.values().filter(|n| *n == to).count() as u32;
    let others = (status.processes.len() as u32).saturating_sub(mine);
    let view = plan::reported_view(to, status, others);
    placement::check_node(&candidates, &primary, &view, &state.spec.drained, &placed)
        .map_err(|why| anyhow!("node {to} cannot run {who}: {why}"))?;
    Ok(Ok(from))
}

/// The longest a reader may ask to wait for an event: under the fabric's
/// request timeout, so a follower is answered before it gives up.
const LONGEST_WAIT: Duration = Duration::from_secs(5);

/// The events a reader asked for; if there are none yet and it is willing
/// to wait, the ones that come within its wait.
async fn events(shared: &SharedRef, query: Query, wait_ms: Option<u64>) -> ControlResponse {
    let mut answer = shared.events.read(&query);
    if answer.events.is_empty()
        && let Some(wait) = wait_ms
    {
        let wait = Duration::from_millis(wait).min(LONGEST_WAIT);
        shared.events.wait_after(answer.last, wait).await;
        answer = shared.events.read(&query);
    }
    ControlResponse::Events {
        events: answer.events,
        last: answer.last,
        oldest: answer.oldest,
    }
}

/// The newest checkpoint the alive nodes hold of `who`, from their
/// statuses (the controller has no checkpoint bytes).
async fn checkpoint_info(shared: &SharedRef, who: ProcessRef) -> Result<ControlResponse> {
    let state = shared.state();
    let holders = state.observed.holders(&who);
    let tag = holders.first().map(|(_, tag)| *tag);
    let bytes = holders
        .first()
        .and_then(|(n, _)| state.observed.status(n))
        .and_then(|s| {
            s.checkpoints
                .iter()
                .find(|c| c.app == who.app && c.process == who.process)
        })
        .map_or(0, |c| c.bytes);
    Ok(ControlResponse::CheckpointInfo {
        tag,
        bytes,
        holders: holders.into_iter().map(|(n, t)| (n.clone(), t)).collect(),
    })
}
