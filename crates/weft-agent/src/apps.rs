//! This node's share of each app, and how it follows the controller's
//! desired state.
//!
//! A change that leaves this node's share as it is (a peer moved between
//! other nodes, a hot standby here promoted) is applied in place: port keys
//! name the sending process, not its node, so no wiring changes.
//!
//! Every other change (a process moved here or away, a rolling update) goes
//! through one mechanism: stop this node's share at a call boundary,
//! keeping each process's final snapshot, and start the new share, resuming
//! every process that stays from its snapshot and every process that
//! arrives from its latest checkpoint at the controller. A hot standby
//! starts from a checkpoint its primary took after this node subscribed to
//! the standby's inputs, so it sees every input its primary sees.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use weft_fabric::Keys;
use weft_fabric::proto::{
    AppAssignment, Blob, ChainMark, ControlRequest, ControlResponse, Handover, ProcessStatus,
};
use weft_fabric::rpc;
use weft_manifest::AppManifest;
use weft_runtime::{Node, RunningApp, Snapshot, StartOptions};

use crate::wiring::{Outbox, PortInlet, subscribe_port};

/// This node's share of one app.
pub(crate) struct LocalApp {
    pub assignment: AppAssignment,
    running: RunningApp,
    _subscribers: Vec<zenoh::pubsub::Subscriber<()>>,
    /// Checkpoint tag each process was restored from, if any.
    restored_from: HashMap<String, u64>,
    /// Replicas assigned here that could not start (no checkpoint of their
    /// process yet): the next sync tries again.
    missing_replicas: BTreeSet<String>,
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

/// How long a starting standby waits for a fresh checkpoint of its primary.
const STANDBY_CHECKPOINT_WAIT: Duration = Duration::from_millis(1500);
/// How far past the subscription a standby's starting checkpoint must be,
/// so that messages in flight when the node subscribed are in it.
const STANDBY_SYNC_MARGIN: Duration = Duration::from_millis(200);

/// The processes `assignment` runs live on `node`.
fn local_processes(assignment: &AppAssignment, node: &str) -> BTreeSet<String> {
    assignment
        .placement
        .iter()
        .filter(|(_, n)| *n == node)
        .map(|(p, _)| p.clone())
        .collect()
}

/// The processes `assignment` runs a replica of on `node` (a hot standby,
/// or the target of a move): in step, outputs held back.
fn local_standbys(assignment: &AppAssignment, node: &str) -> BTreeSet<String> {
    assignment
        .standby
        .iter()
        .filter(|(_, nodes)| nodes.contains(node))
        .map(|(p, _)| p.clone())
        .collect()
}

/// The standbys to promote if `new` can be applied to the running `old`
/// share in place: same app version and the same processes here, none
/// demoted. `None` when the share must restart.
fn in_place(old: &AppAssignment, new: &AppAssignment, node: &str) -> Option<BTreeSet<String>> {
    let same_version = old.generation == new.generation
        && old.manifest == new.manifest
        && old.epoch_unix_ns == new.epoch_unix_ns;
    let (old_live, new_live) = (local_processes(old, node), local_processes(new, node));
    let old_all: BTreeSet<String> = old_live
        .union(&local_standbys(old, node))
        .cloned()
        .collect();
    let new_all: BTreeSet<String> = new_live
        .union(&local_standbys(new, node))
        .cloned()
        .collect();
    (same_version && old_all == new_all && old_live.is_subset(&new_live))
        .then(|| new_live.difference(&old_live).cloned().collect())
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
        .filter(|a| {
            !local_processes(a, &ctx.name).is_empty() || !local_standbys(a, &ctx.name).is_empty()
        })
        .map(|a| (a.app.clone(), a))
        .collect();
    let names: Vec<String> = apps.keys().cloned().collect();
    for name in names {
        let unchanged = desired
            .get(&name)
            .is_some_and(|d| *d == apps[&name].assignment)
            && apps[&name].missing_replicas.is_empty();
        if unchanged {
            desired.remove(&name);
            continue;
        }
        let complete = apps[&name].missing_replicas.is_empty();
        if let Some(promote) = desired
            .get(&name)
            .filter(|_| complete)
            .and_then(|d| in_place(&apps[&name].assignment, d, &ctx.name))
        {
            let app = apps.get_mut(&name).expect("listed");
            for process in &promote {
                app.running.promote(process);
                tracing::warn!(app = %name, process = %process, "standby promoted: its outputs are live");
            }
            app.assignment = desired.remove(&name).expect("checked");
            continue;
        }
        // The new share subscribes before the old one stops, so no message
        // falls between them (copies of what the old share took are dropped).
        let next = match desired.remove(&name) {
            Some(assignment) => Some(prepare(ctx, assignment).await),
            None => None,
        };
        let old = apps.remove(&name).expect("listed");
        let was_live = local_processes(&old.assignment, &ctx.name);
        let (_, mut snapshots) = old.running.stop_with_snapshots().await;
        tracing::info!(app = %name, "stopped this node's share ({} processes)", snapshots.len());
        let staying: BTreeSet<String> = match &next {
            Some(Ok(next)) => next.local(),
            _ => BTreeSet::new(),
        };
        // Live processes leaving hand their state over; a standby leaving
        // just stops.
        snapshots.retain(|p, _| staying.contains(p) || was_live.contains(p));
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
        if let Some(prepared) = next {
            match async { start(ctx, prepared?, snapshots).await }.await {
                Ok(app) => {
                    apps.insert(name, app);
                }
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
    }
    for (name, assignment) in desired {
        match async { start(ctx, prepare(ctx, assignment).await?, HashMap::new()).await }.await {
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

/// A share about to start: its modules fetched, its manifest parsed and
/// its remote inputs subscribed (buffering until it runs).
struct Prepared {
    assignment: AppAssignment,
    manifest: AppManifest,
    live: BTreeSet<String>,
    standbys: BTreeSet<String>,
    inlet: PortInlet,
    subscribers: Vec<zenoh::pubsub::Subscriber<()>>,
    /// The app's tag when the subscriptions were in place.
    subscribed_at: u64,
}

impl Prepared {
    fn local(&self) -> BTreeSet<String> {
        self.live.union(&self.standbys).cloned().collect()
    }
}

async fn prepare(ctx: &Context, assignment: AppAssignment) -> Result<Prepared> {
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
    let live = local_processes(&assignment, &ctx.name);
    let standbys = local_standbys(&assignment, &ctx.name);
    let local: BTreeSet<String> = live.union(&standbys).cloned().collect();
    let inlet = PortInlet::default();
    let mut subscribers = Vec::new();
    for c in &manifest.connections {
        if local.contains(&c.to.process) && !live.contains(&c.from.process) {
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
    Ok(Prepared {
        subscribed_at: tag_now(assignment.epoch_unix_ns),
        assignment,
        manifest,
        live,
        standbys,
        inlet,
        subscribers,
    })
}

async fn start(
    ctx: &Context,
    prepared: Prepared,
    mut snapshots: HashMap<String, Snapshot>,
) -> Result<LocalApp> {
    let local = prepared.local();
    let Prepared {
        assignment,
        manifest,
        standbys,
        inlet,
        subscribers,
        subscribed_at,
        ..
    } = prepared;
    let app_name = assignment.app.clone();
    let mut restored_from = HashMap::new();
    let mut missing_replicas = BTreeSet::new();
    for process in &local {
        if snapshots.contains_key(process) {
            continue;
        }
        let snapshot = if standbys.contains(process) {
            let fresh = subscribed_at + STANDBY_SYNC_MARGIN.as_nanos() as u64;
            fetch_fresh_checkpoint(ctx, &app_name, process, fresh).await
        } else {
            fetch_checkpoint(ctx, &app_name, process).await
        };
        match snapshot {
            Some(snapshot) => {
                restored_from.insert(process.clone(), snapshot.last_tag.map_or(0, |t| t.0));
                snapshots.insert(process.clone(), snapshot);
            }
            // A replica started fresh would compute something else than its
            // process, and could later take over with the wrong state.
            None if standbys.contains(process) => {
                tracing::warn!(app = %app_name, process = %process, "no checkpoint of the process yet; its replica waits for one");
                missing_replicas.insert(process.clone());
            }
            None => {}
        }
    }
    let local: BTreeSet<String> = local.difference(&missing_replicas).cloned().collect();
    let standbys: BTreeSet<String> = standbys.difference(&missing_replicas).cloned().collect();
    let options = StartOptions {
        only: Some(local.clone()),
        restore: snapshots,
        remote: Some(ctx.outbox.remote_sink(&app_name)),
        start_ns: Some(start_ns(assignment.epoch_unix_ns)),
        checkpointing: Some(ctx.outbox.checkpointing(&app_name, ctx.checkpoint_every)),
        log_sink: Some(ctx.outbox.log_sink(&app_name)),
        record: None,
        standby: standbys,
    };
    let running = ctx
        .node
        .start_with(&manifest, &tokio::runtime::Handle::current(), options)
        .with_context(|| format!("app {app_name:?}"))?;
    inlet.connect(running.inlet());
    tracing::info!(app = %app_name, generation = assignment.generation, processes = ?local, "started this node's share");
    Ok(LocalApp {
        assignment,
        running,
        _subscribers: subscribers,
        restored_from,
        missing_replicas,
    })
}

/// The app's current tag, from its wall-clock epoch (0 before it).
fn tag_now(epoch_unix_ns: u64) -> u64 {
    let unix_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    unix_now.saturating_sub(epoch_unix_ns)
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

/// A checkpoint of a process at `min_tag` or later, waiting for its node
/// to send one; after [`STANDBY_CHECKPOINT_WAIT`], the latest there is.
async fn fetch_fresh_checkpoint(
    ctx: &Context,
    app: &str,
    process: &str,
    min_tag: u64,
) -> Option<Snapshot> {
    let deadline = tokio::time::Instant::now() + STANDBY_CHECKPOINT_WAIT;
    let mut poll = tokio::time::interval(Duration::from_millis(100));
    loop {
        poll.tick().await;
        let snapshot = fetch_checkpoint(ctx, app, process).await;
        let fresh = snapshot
            .as_ref()
            .is_some_and(|s| s.last_tag.is_some_and(|t| t.0 >= min_tag));
        if fresh {
            return snapshot;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                app,
                process,
                "no checkpoint after the subscription yet; the standby starts from an older one and may miss inputs"
            );
            return snapshot;
        }
    }
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
                tardy: p.tardy,
                output_hash: p.output_hash,
                last_tag_ns: p.last_tag_ns,
                first_tag_ns: p.first_tag_ns,
                resume_lateness_ns: p.resume_lateness_ns,
                standby: p.standby,
                chain_mark: p.chain_marks.last().map(|m| ChainMark {
                    tag_ns: m.tag_ns,
                    output_hash: m.output_hash.clone(),
                }),
                last_output_hex: p.last_output_hex,
            })
            .collect()
    }

    pub(crate) async fn stop(self) {
        self.running.stop().await;
    }
}
