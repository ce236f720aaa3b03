//! This node's share of each app, and how it follows the controller's
//! desired state.
//!
//! One mechanism covers every change (a process moved here or away, a
//! rolling update, a new peer location): stop this node's share at a call
//! boundary, keeping each process's final snapshot, and start the new
//! share, resuming every process that stays from its snapshot and every
//! process that arrives from its latest checkpoint at the controller.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use weft_fabric::Keys;
use weft_fabric::proto::{
    AppAssignment, Blob, ControlRequest, ControlResponse, Handover, ProcessStatus,
};
use weft_fabric::rpc;
use weft_manifest::AppManifest;
use weft_runtime::{Node, RunningApp, Snapshot, StartOptions};

use crate::wiring::{Outbox, subscribe_port};

/// This node's share of one app.
pub(crate) struct LocalApp {
    pub assignment: AppAssignment,
    running: RunningApp,
    _subscribers: Vec<zenoh::pubsub::Subscriber<()>>,
    /// Checkpoint tag each process was restored from, if any.
    restored_from: HashMap<String, u64>,
}

/// Everything `sync` needs besides the apps themselves.
pub(crate) struct Context {
    pub node: Arc<Node>,
    pub name: String,
    pub session: zenoh::Session,
    pub keys: Keys,
    pub outbox: Outbox,
    pub module_dir: PathBuf,
    pub checkpoint_every: Duration,
}

fn local_processes(assignment: &AppAssignment, node: &str) -> BTreeSet<String> {
    assignment
        .placement
        .iter()
        .filter(|(_, n)| *n == node)
        .map(|(p, _)| p.clone())
        .collect()
}

/// Brings `apps` to the desired state. Returns the errors of apps that
/// could not be started (the others are applied regardless) and the final
/// snapshots of the processes that left this node.
pub(crate) async fn sync(
    ctx: &Context,
    apps: &mut BTreeMap<String, LocalApp>,
    desired: Vec<AppAssignment>,
) -> (Vec<String>, Vec<Handover>) {
    let mut errors = Vec::new();
    let mut handover = Vec::new();
    let mut desired: BTreeMap<String, AppAssignment> = desired
        .into_iter()
        .filter(|a| !local_processes(a, &ctx.name).is_empty())
        .map(|a| (a.app.clone(), a))
        .collect();
    let names: Vec<String> = apps.keys().cloned().collect();
    for name in names {
        let unchanged = desired
            .get(&name)
            .is_some_and(|d| *d == apps[&name].assignment);
        if unchanged {
            desired.remove(&name);
            continue;
        }
        let old = apps.remove(&name).expect("listed");
        let (_, mut snapshots) = old.running.stop_with_snapshots().await;
        tracing::info!(app = %name, "stopped this node's share ({} processes)", snapshots.len());
        let staying = desired
            .get(&name)
            .map(|a| local_processes(a, &ctx.name))
            .unwrap_or_default();
        let leaving: Vec<String> = snapshots
            .keys()
            .filter(|p| !staying.contains(*p))
            .cloned()
            .collect();
        for process in leaving {
            let snapshot = snapshots.remove(&process).expect("listed");
            tracing::info!(app = %name, process = %process, "handing over");
            handover.push(Handover {
                app: name.clone(),
                tag: snapshot.last_tag.map_or(0, |t| t.0),
                process,
                snapshot: Blob(snapshot.encode()),
            });
        }
        if let Some(assignment) = desired.remove(&name) {
            match start(ctx, assignment, snapshots).await {
                Ok(app) => {
                    apps.insert(name, app);
                }
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
    }
    for (name, assignment) in desired {
        match start(ctx, assignment, HashMap::new()).await {
            Ok(app) => {
                apps.insert(name, app);
            }
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    for e in &errors {
        tracing::error!("{e}");
    }
    (errors, handover)
}

async fn start(
    ctx: &Context,
    assignment: AppAssignment,
    mut snapshots: HashMap<String, Snapshot>,
) -> Result<LocalApp> {
    let app_name = assignment.app.clone();
    fetch_modules(ctx, &assignment.manifest)
        .await
        .with_context(|| format!("app {app_name:?}"))?;
    let manifest = AppManifest::parse(
        &assignment.manifest,
        Path::new(&format!("{app_name}.toml")),
        &ctx.module_dir,
    )
    .with_context(|| format!("app {app_name:?}: invalid manifest from the controller"))?;
    let local = local_processes(&assignment, &ctx.name);
    let mut restored_from = HashMap::new();
    for process in &local {
        if snapshots.contains_key(process) {
            continue;
        }
        if let Some(snapshot) = fetch_checkpoint(ctx, &app_name, process).await {
            restored_from.insert(process.clone(), snapshot.last_tag.map_or(0, |t| t.0));
            snapshots.insert(process.clone(), snapshot);
        }
    }
    let options = StartOptions {
        only: Some(local.clone()),
        restore: snapshots,
        remote: Some(ctx.outbox.remote_sink(&app_name)),
        start_ns: Some(start_ns(assignment.epoch_unix_ns)),
        checkpointing: Some(ctx.outbox.checkpointing(&app_name, ctx.checkpoint_every)),
        log_sink: Some(ctx.outbox.log_sink(&app_name)),
        record: None,
    };
    let running = ctx
        .node
        .start_with(&manifest, &tokio::runtime::Handle::current(), options)
        .with_context(|| format!("app {app_name:?}"))?;
    let mut subscribers = Vec::new();
    let inlet = running.inlet();
    for c in &manifest.connections {
        if local.contains(&c.to.process) && !local.contains(&c.from.process) {
            let s = subscribe_port(
                &ctx.session,
                &ctx.keys,
                &app_name,
                &c.from.process,
                &c.from.port,
                inlet.clone(),
            )
            .await?;
            subscribers.push(s);
        }
    }
    tracing::info!(app = %app_name, generation = assignment.generation, processes = ?local, "started this node's share");
    Ok(LocalApp {
        assignment,
        running,
        _subscribers: subscribers,
        restored_from,
    })
}

/// `CLOCK_MONOTONIC` time of the app's tag 0, from its wall-clock epoch.
fn start_ns(epoch_unix_ns: u64) -> u64 {
    let unix_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let mono_now = weft_runtime::rt::monotonic_ns();
    if epoch_unix_ns >= unix_now {
        mono_now + (epoch_unix_ns - unix_now)
    } else {
        mono_now.saturating_sub(unix_now - epoch_unix_ns)
    }
}

/// Module files named in a manifest (`module` and `link` values).
fn module_files(manifest: &str) -> Result<Vec<String>> {
    let table: toml::Table = toml::from_str(manifest).context("manifest is not TOML")?;
    let mut files = Vec::new();
    for process in table
        .get("process")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
    {
        if let Some(m) = process.get("module").and_then(|m| m.as_str()) {
            files.push(m.to_string());
        }
        for link in process
            .get("link")
            .and_then(|l| l.as_table())
            .into_iter()
            .flat_map(|t| t.values())
        {
            if let Some(m) = link.as_str() {
                files.push(m.to_string());
            }
        }
    }
    Ok(files)
}

async fn fetch_modules(ctx: &Context, manifest: &str) -> Result<()> {
    std::fs::create_dir_all(&ctx.module_dir)
        .with_context(|| format!("cannot create {}", ctx.module_dir.display()))?;
    for file in module_files(manifest)? {
        let path = ctx.module_dir.join(&file);
        if path.is_file() {
            continue;
        }
        let digest = file.trim_end_matches(".wasm").to_string();
        if !weft_fabric::keys::valid_segment(&digest) {
            anyhow::bail!("module name {file:?} from the controller is not a digest");
        }
        let response: ControlResponse = rpc::call(
            &ctx.session,
            &ctx.keys.controller_rpc(),
            &ControlRequest::GetModule {
                digest: digest.clone(),
            },
            rpc::DEFAULT_TIMEOUT,
        )
        .await?;
        let ControlResponse::Module { bytes } = response else {
            anyhow::bail!("controller has no module {digest}: {response:?}");
        };
        let tmp = ctx
            .module_dir
            .join(format!(".{file}.{}", std::process::id()));
        std::fs::write(&tmp, &bytes.0)?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(())
}

/// The latest checkpoint of a process at the controller, if any (and valid).
async fn fetch_checkpoint(ctx: &Context, app: &str, process: &str) -> Option<Snapshot> {
    let request = ControlRequest::GetCheckpoint {
        app: app.into(),
        process: process.into(),
    };
    match rpc::call(
        &ctx.session,
        &ctx.keys.controller_rpc(),
        &request,
        rpc::DEFAULT_TIMEOUT,
    )
    .await
    {
        Ok(ControlResponse::Checkpoint {
            tag: Some(_),
            bytes,
        }) => match Snapshot::decode(&bytes.0) {
            Ok(snapshot) => Some(snapshot),
            Err(e) => {
                tracing::warn!(app, process, "refusing checkpoint: {e}");
                None
            }
        },
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(app, process, "cannot fetch checkpoint: {e:#}");
            None
        }
    }
}

impl LocalApp {
    pub(crate) fn status(&self) -> Vec<ProcessStatus> {
        self.running
            .report()
            .processes
            .into_iter()
            .map(|p| ProcessStatus {
                app: self.assignment.app.clone(),
                restored_from_tag: self.restored_from.get(&p.name).copied(),
                name: p.name,
                generation: self.assignment.generation,
                state: serde_json::to_value(&p.state)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                reason: p.reason,
                ticks: p.ticks,
                messages_in: p.messages_in,
                messages_out: p.messages_out,
                faults: p.faults,
                restarts: p.restarts,
                deadline_misses: p.deadline_misses,
                output_hash: p.output_hash,
                last_tag_ns: p.last_tag_ns,
                first_tag_ns: p.first_tag_ns,
                resume_lateness_ns: p.resume_lateness_ns,
            })
            .collect()
    }

    pub(crate) async fn stop(self) {
        self.running.stop().await;
    }
}
