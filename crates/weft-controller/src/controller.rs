//! The controller service: joins the fabric, tracks nodes (liveliness and
//! status), keeps checkpoints, answers [`ControlRequest`]s and reconciles.
//!
//! Reconciliation runs every `sync_interval` and right after any change
//! (a node joins or dies, a deploy, a remove, a drain): it places every app
//! (healthy placements stay; processes on dead or drained nodes move),
//! persists changed assignments, then sends every alive node a
//! [`NodeRequest::Sync`] with the full desired state of that node (an empty
//! list to a node that should run nothing).
//!
//! On restart the controller reloads apps and assignments from redb. For
//! `startup_grace` it presumes that nodes named in assignments but not yet
//! seen are alive, so their processes are not moved while nodes reconnect.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use sha2::Digest;
use tokio::sync::{Mutex, Notify};
use tracing::{debug, error, info, warn};
use weft_fabric::codec;
use weft_fabric::keys::valid_segment;
use weft_fabric::proto::{
    AppAssignment, Blob, CheckpointMessage, ControlRequest, ControlResponse, NodeEntry,
    NodeRequest, NodeResponse, NodeStatus, ProcessStatus, PsEntry, StandbyEntry,
};
use weft_fabric::{FabricConfig, Keys};
use weft_manifest::{AppManifest, ConnectionSpec, ProcessSpec};
use zenoh::sample::SampleKind;

use crate::placement::{self, NodeView};
use crate::replica;
use crate::store::{Store, StoredApp};

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Holds `controller.redb` (and a scratch `staging/` directory).
    pub data_dir: PathBuf,
    pub fabric: FabricConfig,
    /// Period of the reconciliation loop.
    pub sync_interval: Duration,
    /// After a start, how long nodes named in stored assignments are
    /// presumed alive before their processes are moved elsewhere.
    pub startup_grace: Duration,
}

impl ControllerConfig {
    pub fn new(data_dir: impl Into<PathBuf>, fabric: FabricConfig) -> ControllerConfig {
        ControllerConfig {
            data_dir: data_dir.into(),
            fabric,
            sync_interval: Duration::from_millis(500),
            startup_grace: Duration::from_secs(5),
        }
    }
    pub fn sync_interval(mut self, interval: Duration) -> Self {
        self.sync_interval = interval;
        self
    }
    pub fn startup_grace(mut self, grace: Duration) -> Self {
        self.startup_grace = grace;
        self
    }
}

/// Time a node has to answer a `Sync`.
const SYNC_TIMEOUT: Duration = Duration::from_secs(2);
/// Delay between accepting a new app and its tag 0, so every node can
/// start its processes on the same grid.
const EPOCH_LEAD: Duration = Duration::from_millis(200);

/// Runs the controller until a fatal error.
pub async fn run(config: ControllerConfig) -> Result<()> {
    run_until(config, std::future::pending()).await
}

/// Runs the controller until `shutdown` completes (then returns `Ok`) or a
/// fatal error. Dropping the returned future stops everything it started.
pub async fn run_until(config: ControllerConfig, shutdown: impl Future<Output = ()>) -> Result<()> {
    let store = Arc::new(Store::open(&config.data_dir)?);
    let staging = config.data_dir.join("staging");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("cannot clear the staging directory {}", staging.display()))?;
    }
    let state = recover(&store, &staging)?;
    let keys = Keys::new(&config.fabric.cluster);
    let session = config.fabric.open().await?;

    let _token = session
        .liveliness()
        .declare_token(keys.controller_alive())
        .await
        .map_err(|e| anyhow!("{e}"))
        .context("cannot declare the controller's liveliness token")?;
    let alive_sub = session
        .liveliness()
        .declare_subscriber(keys.all_nodes_alive())
        .history(true)
        .await
        .map_err(|e| anyhow!("{e}"))
        .context("cannot watch node liveliness")?;
    let status_sub = session
        .declare_subscriber(keys.all_node_status())
        .await
        .map_err(|e| anyhow!("{e}"))
        .context("cannot subscribe to node status")?;
    let checkpoint_sub = session
        .declare_subscriber(keys.all_checkpoints())
        .await
        .map_err(|e| anyhow!("{e}"))
        .context("cannot subscribe to checkpoints")?;

    let shared = Arc::new(Shared {
        store,
        keys: keys.clone(),
        session: session.clone(),
        state: Mutex::new(state),
        kick: Notify::new(),
        started: Instant::now(),
        grace: config.startup_grace,
        staging,
        staging_counter: AtomicU64::new(0),
        sync: Arc::new(SyncTracker::default()),
    });
    let apps = shared.state.lock().await.apps.len();
    info!(cluster = %config.fabric.cluster, data = %config.data_dir.display(), apps, "controller started");

    let rpc = {
        let shared = shared.clone();
        weft_fabric::rpc::serve(
            session.clone(),
            keys.controller_rpc(),
            move |request: ControlRequest| {
                let shared = shared.clone();
                async move { shared.handle(request).await }
            },
        )
    };

    let liveliness = {
        let shared = shared.clone();
        async move {
            while let Ok(sample) = alive_sub.recv_async().await {
                let key = sample.key_expr().as_str();
                let Some(node) = shared.keys.node_of(key) else {
                    warn!(key, "liveliness token outside the node key space; ignored");
                    continue;
                };
                shared
                    .node_liveliness(node, sample.kind() == SampleKind::Put)
                    .await;
            }
        }
    };

    let status = {
        let shared = shared.clone();
        async move {
            while let Ok(sample) = status_sub.recv_async().await {
                let key = sample.key_expr().as_str().to_string();
                let Some(node) = shared.keys.node_of(&key) else {
                    warn!(key, "status outside the node key space; dropped");
                    continue;
                };
                match codec::decode::<NodeStatus>(&sample.payload().to_bytes()) {
                    Err(e) => warn!(node, "dropping malformed node status: {e}"),
                    Ok(status) if status.name != node => {
                        warn!(node, named = %status.name, "dropping node status published under another node's key")
                    }
                    Ok(status) => shared.node_status(node, status).await,
                }
            }
        }
    };

    let checkpoints = {
        let shared = shared.clone();
        async move {
            while let Ok(sample) = checkpoint_sub.recv_async().await {
                let key = sample.key_expr().as_str().to_string();
                let Some((app, process)) = shared.keys.checkpoint_of(&key) else {
                    warn!(key, "checkpoint outside the checkpoint key space; dropped");
                    continue;
                };
                match codec::decode::<CheckpointMessage>(&sample.payload().to_bytes()) {
                    Err(e) => warn!(app, process, "dropping malformed checkpoint: {e}"),
                    Ok(message) => shared.checkpoint(app, process, message).await,
                }
            }
        }
    };

    let reconcile = {
        let shared = shared.clone();
        let interval = config.sync_interval;
        async move {
            loop {
                shared.reconcile().await;
                tokio::select! {
                    _ = shared.kick.notified() => {}
                    _ = tokio::time::sleep(interval) => {}
                }
            }
        }
    };

    let result = tokio::select! {
        r = rpc => r.context("the controller RPC queryable stopped").and(Err(anyhow!("the controller RPC queryable closed"))),
        _ = liveliness => Err(anyhow!("the node liveliness subscription closed")),
        _ = status => Err(anyhow!("the node status subscription closed")),
        _ = checkpoints => Err(anyhow!("the checkpoint subscription closed")),
        _ = reconcile => Err(anyhow!("the reconciliation loop stopped")),
        _ = shutdown => Ok(()),
    };
    drop(shared);
    if let Err(e) = session.close().await {
        debug!("closing the fabric session: {e}");
    }
    result
}

/// In-memory view of the desired and observed state.
#[derive(Default)]
struct State {
    apps: BTreeMap<String, App>,
    nodes: BTreeMap<String, Node>,
    drained: BTreeSet<String>,
    /// A previous assignment write failed: rewrite everything next time.
    dirty: bool,
    /// Processes leaving a node that is still alive: (app, process) -> that
    /// node. Until it answers a Sync (handing over the final snapshot), the
    /// other nodes are still told the process runs there, so its new node
    /// does not start it from an older checkpoint.
    handovers: BTreeMap<(String, String), String>,
    /// Live moves in progress: (app, process) -> target node. The target
    /// runs a replica until it has caught up, then takes over.
    moves: BTreeMap<(String, String), String>,
}

struct App {
    stored: StoredApp,
    processes: Vec<ProcessSpec>,
    connections: Vec<ConnectionSpec>,
    assignment: BTreeMap<String, String>,
    pending: BTreeMap<String, String>,
}

#[derive(Default)]
struct Node {
    alive: bool,
    status: Option<NodeStatus>,
}

/// Which nodes have a `Sync` in flight, and which failed last time.
#[derive(Default)]
struct SyncTracker {
    in_flight: StdMutex<BTreeSet<String>>,
    failing: StdMutex<BTreeSet<String>>,
}

struct Shared {
    store: Arc<Store>,
    keys: Keys,
    session: zenoh::Session,
    state: Mutex<State>,
    kick: Notify,
    started: Instant,
    grace: Duration,
    staging: PathBuf,
    staging_counter: AtomicU64,
    sync: Arc<SyncTracker>,
}

/// Runs blocking store work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("a store task panicked")?
}

fn recover(store: &Arc<Store>, staging: &Path) -> Result<State> {
    let mut state = State {
        drained: store.drained()?,
        ..State::default()
    };
    let mut assignments = store.assignments()?;
    for (name, stored) in store.apps()? {
        let dir = staging.join(format!("recover-{name}"));
        match parse_manifest(&stored.manifest, &BTreeMap::new(), store, &dir) {
            Ok(manifest) => {
                let assignment = assignments.remove(&name).unwrap_or_default();
                info!(app = %name, generation = stored.generation, placed = assignment.len(), "recovered app");
                state.apps.insert(
                    name,
                    App {
                        stored,
                        processes: manifest.processes,
                        connections: manifest.connections,
                        assignment,
                        pending: BTreeMap::new(),
                    },
                );
            }
            Err(e) => error!(app = %name, "cannot recover app (kept on disk, not run): {e:#}"),
        }
    }
    Ok(state)
}

fn is_digest(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Lowercase hex SHA-256: the digest modules are stored and fetched by.
pub fn module_digest(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Every module path a manifest names, with the entry naming it. A manifest
/// that is not even TOML yields nothing (the parser reports it).
fn module_refs(text: &str) -> Vec<(String, String)> {
    let Ok(table) = toml::from_str::<toml::Table>(text) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let processes = table
        .get("process")
        .and_then(|p| p.as_array())
        .cloned()
        .unwrap_or_default();
    for (i, process) in processes.iter().enumerate() {
        let entry = match process.get("name").and_then(|n| n.as_str()) {
            Some(name) => format!("process \"{name}\""),
            None => format!("process #{}", i + 1),
        };
        if let Some(module) = process.get("module").and_then(|m| m.as_str()) {
            out.push((format!("{entry}: module"), module.to_string()));
        }
        if let Some(links) = process.get("link").and_then(|l| l.as_table()) {
            for (name, path) in links {
                if let Some(path) = path.as_str() {
                    out.push((format!("{entry}: link.{name}"), path.to_string()));
                }
            }
        }
    }
    out
}

/// Parses and validates a manifest whose module paths are `<digest>.wasm`:
/// the modules (uploaded with the request, else from the store) are written
/// into `dir` so the parser can check them, and `dir` is removed afterwards.
fn parse_manifest(
    text: &str,
    uploaded: &BTreeMap<String, Vec<u8>>,
    store: &Store,
    dir: &Path,
) -> Result<AppManifest> {
    let name = toml::from_str::<toml::Table>(text)
        .ok()
        .and_then(|t| t.get("name").and_then(|n| n.as_str()).map(str::to_string))
        .unwrap_or_else(|| "manifest".into());
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create staging directory {}", dir.display()))?;
    let result = (|| {
        for (entry, path) in module_refs(text) {
            let digest = path.strip_suffix(".wasm").filter(|d| is_digest(d)).ok_or_else(|| {
                anyhow!(
                    "{name}.toml: {entry}: \"{path}\" is not a \"<sha256>.wasm\" reference to an uploaded module \
                     (deploy through the CLI, which uploads modules and rewrites their paths)"
                )
            })?;
            let bytes = match uploaded.get(digest) {
                Some(bytes) => bytes.clone(),
                None => store.module(digest)?.ok_or_else(|| {
                    anyhow!("{name}.toml: {entry}: module {digest} was neither uploaded with the deploy nor stored before")
                })?,
            };
            let file = dir.join(&path);
            std::fs::write(&file, bytes)
                .with_context(|| format!("cannot stage module {}", file.display()))?;
        }
        let origin = PathBuf::from(format!("{name}.toml"));
        let manifest = AppManifest::parse(text, &origin, dir)?;
        if !valid_segment(&manifest.name) {
            bail!(
                "{name}.toml: app name \"{}\" may only use letters, digits, '-', '_' and '.'",
                manifest.name
            );
        }
        for p in &manifest.processes {
            if !valid_segment(&p.name) {
                bail!(
                    "{name}.toml: process \"{}\": the name may only use letters, digits, '-', '_' and '.'",
                    p.name
                );
            }
        }
        Ok(manifest)
    })();
    let _ = std::fs::remove_dir_all(dir);
    result
}

fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn error_response(e: anyhow::Error) -> ControlResponse {
    ControlResponse::Error {
        message: format!("{e:#}"),
    }
}

impl Shared {
    async fn node_liveliness(&self, node: String, alive: bool) {
        let mut state = self.state.lock().await;
        let entry = state.nodes.entry(node.clone()).or_default();
        if entry.alive == alive {
            return;
        }
        entry.alive = alive;
        if alive {
            info!(node, "node joined");
        } else {
            warn!(node, "node is gone");
            state.handovers.retain(|_, from| *from != node);
        }
        drop(state);
        self.kick.notify_one();
    }

    async fn node_status(&self, node: String, status: NodeStatus) {
        let mut state = self.state.lock().await;
        let entry = state.nodes.entry(node).or_default();
        let first = entry.status.is_none();
        entry.status = Some(status);
        if (first && entry.alive) || !state.moves.is_empty() {
            drop(state);
            self.kick.notify_one();
        }
    }

    async fn checkpoint(&self, app: String, process: String, message: CheckpointMessage) {
        {
            let state = self.state.lock().await;
            let known = state
                .apps
                .get(&app)
                .is_some_and(|a| a.processes.iter().any(|p| p.name == process));
            if !known {
                warn!(app, process, "dropping checkpoint of an unknown process");
                return;
            }
        }
        let store = self.store.clone();
        let tag = message.tag;
        let (a, p) = (app.clone(), process.clone());
        match blocking(move || store.put_checkpoint(&a, &p, tag, &message.snapshot.0)).await {
            Ok(true) => debug!(app, process, tag, "checkpoint stored"),
            Ok(false) => debug!(app, process, tag, "older checkpoint ignored"),
            Err(e) => error!(app, process, "{e:#}"),
        }
    }

    fn in_grace(&self) -> bool {
        self.started.elapsed() < self.grace
    }

    /// Places every app, updates the in-memory state and persists changed
    /// assignments.
    async fn place_and_persist(&self, state: &mut State) -> Result<()> {
        let before: Vec<((String, String), String)> = state
            .apps
            .iter()
            .flat_map(|(app, a)| {
                a.assignment
                    .iter()
                    .map(move |(p, n)| ((app.clone(), p.clone()), n.clone()))
            })
            .collect();
        let changed = place_all(state, self.in_grace());
        for (key, old) in before {
            let moved = state
                .apps
                .get(&key.0)
                .and_then(|a| a.assignment.get(&key.1))
                .is_some_and(|new| *new != old);
            let old_alive = state.nodes.get(&old).is_some_and(|n| n.alive);
            // A standby does not hand over: its new node starts it afresh.
            if moved && old_alive && replica::of(&key.1).is_none() {
                debug!(app = %key.0, process = %key.1, from = %old, "handing over");
                state.handovers.entry(key).or_insert(old);
            }
        }
        let to_write: Vec<(String, BTreeMap<String, String>)> = if state.dirty {
            state
                .apps
                .iter()
                .map(|(n, a)| (n.clone(), a.assignment.clone()))
                .collect()
        } else {
            changed
        };
        if to_write.is_empty() {
            return Ok(());
        }
        let store = self.store.clone();
        match blocking(move || store.set_many_assignments(&to_write)).await {
            Ok(()) => {
                state.dirty = false;
                Ok(())
            }
            Err(e) => {
                state.dirty = true;
                Err(e)
            }
        }
    }

    /// A node answered a Sync that took `leaving` away from it: store the
    /// final snapshots it handed over and let the new nodes start them.
    async fn handed_over(
        &self,
        node: &str,
        leaving: Vec<(String, String)>,
        handover: Vec<weft_fabric::proto::Handover>,
    ) {
        for h in handover {
            let message = CheckpointMessage {
                tag: h.tag,
                snapshot: h.snapshot,
            };
            self.checkpoint(h.app, h.process, message).await;
        }
        if leaving.is_empty() {
            return;
        }
        let mut state = self.state.lock().await;
        for key in leaving {
            if state.handovers.get(&key).is_some_and(|from| from == node) {
                info!(app = %key.0, process = %key.1, from = node, "handed over");
                state.handovers.remove(&key);
            }
        }
        drop(state);
        self.kick.notify_one();
    }

    async fn reconcile(self: &Arc<Self>) {
        let mut state = self.state.lock().await;
        finish_moves(&mut state);
        if let Err(e) = self.place_and_persist(&mut state).await {
            error!("cannot persist assignments (will retry): {e:#}");
        }
        let mut requests = Vec::new();
        for (name, node) in &state.nodes {
            if !node.alive {
                continue;
            }
            let apps = state
                .apps
                .iter()
                .filter(|(_, app)| app.assignment.values().any(|n| n == name))
                .map(|(app_name, app)| {
                    let (primaries, standbys) = replica::split(&app.assignment);
                    AppAssignment {
                        app: app_name.clone(),
                        generation: app.stored.generation,
                        manifest: app.stored.manifest.clone(),
                        placement: placement_for(&state.handovers, app_name, &primaries, name),
                        standby: standbys,
                        epoch_unix_ns: app.stored.epoch_unix_ns,
                    }
                })
                .collect();
            let leaving: Vec<(String, String)> = state
                .handovers
                .iter()
                .filter(|(_, from)| *from == name)
                .map(|(k, _)| k.clone())
                .collect();
            requests.push((name.clone(), NodeRequest::Sync { apps }, leaving));
        }
        drop(state);

        for (node, request, leaving) in requests {
            if !self.sync.in_flight.lock().unwrap().insert(node.clone()) {
                debug!(node, "previous sync still in flight; skipped");
                continue;
            }
            let session = self.session.clone();
            let key = self.keys.node_rpc(&node);
            let tracker = self.sync.clone();
            let shared = self.clone();
            tokio::spawn(async move {
                let result = weft_fabric::rpc::call::<_, NodeResponse>(
                    &session,
                    &key,
                    &request,
                    SYNC_TIMEOUT,
                )
                .await;
                tracker.in_flight.lock().unwrap().remove(&node);
                let failure = match result {
                    Ok(NodeResponse::Ok { handover }) => {
                        shared.handed_over(&node, leaving, handover).await;
                        None
                    }
                    Ok(NodeResponse::Error { message }) => Some(message),
                    Err(e) => Some(format!("{e:#}")),
                };
                let mut failing = tracker.failing.lock().unwrap();
                match failure {
                    Some(message) => {
                        if failing.insert(node.clone()) {
                            warn!(node, "sync failed: {message}");
                        } else {
                            debug!(node, "sync failed again: {message}");
                        }
                    }
                    None => {
                        if failing.remove(&node) {
                            info!(node, "sync succeeds again");
                        }
                    }
                }
            });
        }
    }

    async fn handle(&self, request: ControlRequest) -> ControlResponse {
        let op = match &request {
            ControlRequest::Deploy { .. } => "deploy",
            ControlRequest::Remove { .. } => "remove",
            ControlRequest::Ps => "ps",
            ControlRequest::Nodes => "nodes",
            ControlRequest::Drain { .. } => "drain",
            ControlRequest::Migrate { .. } => "migrate",
            ControlRequest::GetModule { .. } => "get_module",
            ControlRequest::GetCheckpoint { .. } => "get_checkpoint",
        };
        let result = match request {
            ControlRequest::Deploy { manifest, modules } => self.deploy(manifest, modules).await,
            ControlRequest::Remove { app } => self.remove(app).await,
            ControlRequest::Ps => Ok(ControlResponse::Ps {
                processes: self.ps().await,
            }),
            ControlRequest::Nodes => Ok(ControlResponse::Nodes {
                nodes: self.nodes().await,
            }),
            ControlRequest::Drain { node } => self.drain(node).await,
            ControlRequest::Migrate { app, process, to } => self.migrate(app, process, to).await,
            ControlRequest::GetModule { digest } => self.get_module(digest).await,
            ControlRequest::GetCheckpoint { app, process } => {
                self.get_checkpoint(app, process).await
            }
        };
        result.unwrap_or_else(|e| {
            warn!(op, "request failed: {e:#}");
            error_response(e)
        })
    }

    async fn deploy(
        &self,
        manifest: String,
        modules: BTreeMap<String, Blob>,
    ) -> Result<ControlResponse> {
        let mut uploaded = BTreeMap::new();
        for (digest, Blob(bytes)) in modules {
            if !is_digest(&digest) {
                bail!("module key \"{digest}\" is not a lowercase hex SHA-256 digest");
            }
            let actual = module_digest(&bytes);
            if actual != digest {
                bail!(
                    "module uploaded as {digest} has SHA-256 {actual} ({} bytes): corrupted or mislabelled",
                    bytes.len()
                );
            }
            uploaded.insert(digest, bytes);
        }
        let store = self.store.clone();
        let dir = self.staging.join(format!(
            "deploy-{}",
            self.staging_counter.fetch_add(1, Ordering::Relaxed)
        ));
        let (parsed, uploaded, text) = blocking(move || {
            let parsed = parse_manifest(&manifest, &uploaded, &store, &dir)?;
            Ok((parsed, uploaded, manifest))
        })
        .await
        .context("invalid app")?;
        let name = parsed.name.clone();

        let mut state = self.state.lock().await;
        let stored = match state.apps.get(&name) {
            Some(app) if app.stored.manifest == text => {
                let generation = app.stored.generation;
                info!(app = %name, generation, "deploy of an unchanged manifest: nothing to do");
                let pending = pending_entries(&state, &name);
                let warnings = delay_warnings(app);
                return Ok(ControlResponse::Deployed {
                    app: name,
                    generation,
                    pending,
                    warnings,
                });
            }
            Some(app) => StoredApp {
                manifest: text,
                generation: app.stored.generation + 1,
                epoch_unix_ns: app.stored.epoch_unix_ns,
            },
            None => StoredApp {
                manifest: text,
                generation: 1,
                epoch_unix_ns: now_unix_ns() + EPOCH_LEAD.as_nanos() as u64,
            },
        };
        let modules: Vec<(String, Vec<u8>)> = uploaded.into_iter().collect();
        {
            let store = self.store.clone();
            let (name, stored) = (name.clone(), stored.clone());
            blocking(move || store.put_app(&name, &stored, &modules)).await?;
        }
        let generation = stored.generation;
        match state.apps.get_mut(&name) {
            Some(app) => {
                info!(app = %name, generation, "rolling update");
                app.stored = stored;
                app.processes = parsed.processes;
                app.connections = parsed.connections;
            }
            None => {
                info!(app = %name, processes = parsed.processes.len(), "new app");
                state.apps.insert(
                    name.clone(),
                    App {
                        stored,
                        processes: parsed.processes,
                        connections: parsed.connections,
                        assignment: BTreeMap::new(),
                        pending: BTreeMap::new(),
                    },
                );
            }
        }
        self.place_and_persist(&mut state)
            .await
            .context("the app is stored but its placement is not")?;
        let pending = pending_entries(&state, &name);
        let warnings = delay_warnings(&state.apps[&name]);
        drop(state);
        self.kick.notify_one();
        Ok(ControlResponse::Deployed {
            app: name,
            generation,
            pending,
            warnings,
        })
    }

    async fn remove(&self, app: String) -> Result<ControlResponse> {
        let mut state = self.state.lock().await;
        if !state.apps.contains_key(&app) {
            return Ok(ControlResponse::NotFound {
                what: format!("app \"{app}\""),
            });
        }
        let store = self.store.clone();
        let name = app.clone();
        blocking(move || store.remove_app(&name)).await?;
        state.apps.remove(&app);
        drop(state);
        info!(app, "app removed");
        self.kick.notify_one();
        Ok(ControlResponse::Removed { app })
    }

    async fn ps(&self) -> Vec<PsEntry> {
        let state = self.state.lock().await;
        state
            .apps
            .keys()
            .flat_map(|name| ps_entries(&state, name))
            .collect()
    }

    async fn nodes(&self) -> Vec<NodeEntry> {
        let state = self.state.lock().await;
        state
            .nodes
            .iter()
            .map(|(name, node)| {
                let status = node.status.clone();
                let processes = state
                    .apps
                    .values()
                    .flat_map(|a| a.assignment.values())
                    .filter(|n| *n == name)
                    .count();
                NodeEntry {
                    name: name.clone(),
                    pid: status.as_ref().map(|s| s.pid).unwrap_or(0),
                    state: if !node.alive {
                        "dead"
                    } else if state.drained.contains(name) {
                        "draining"
                    } else {
                        "alive"
                    }
                    .into(),
                    labels: status
                        .as_ref()
                        .map(|s| s.labels.clone())
                        .unwrap_or_default(),
                    devices: status
                        .as_ref()
                        .map(|s| s.devices.clone())
                        .unwrap_or_default(),
                    rt_class: status
                        .as_ref()
                        .map(|s| s.rt_class.clone())
                        .unwrap_or_else(|| "unknown".into()),
                    free_slots: status.as_ref().map(|s| s.free_slots).unwrap_or(0),
                    processes,
                }
            })
            .collect()
    }

    async fn drain(&self, node: String) -> Result<ControlResponse> {
        let mut state = self.state.lock().await;
        let hosts = |state: &State| -> BTreeSet<String> {
            state
                .apps
                .iter()
                .flat_map(|(app, a)| {
                    a.assignment
                        .iter()
                        .filter(|(_, n)| **n == node)
                        .map(move |(p, _)| format!("{app}/{p}"))
                })
                .collect()
        };
        let before = hosts(&state);
        if !state.nodes.contains_key(&node) && before.is_empty() {
            return Ok(ControlResponse::NotFound {
                what: format!("node \"{node}\""),
            });
        }
        let store = self.store.clone();
        let name = node.clone();
        blocking(move || store.drain(&name)).await?;
        state.drained.insert(node.clone());
        info!(node, processes = before.len(), "draining node");
        let previous: BTreeMap<String, BTreeMap<String, String>> = state
            .apps
            .iter()
            .map(|(name, a)| (name.clone(), a.assignment.clone()))
            .collect();
        self.place_and_persist(&mut state)
            .await
            .context("the node is drained but the new placement is not stored")?;
        let mut moved = Vec::new();
        for (app, old) in previous {
            for (process, from) in &old {
                if *from != node || replica::of(process).is_some() {
                    continue;
                }
                let standby = old.get(&replica::key(process)).cloned();
                drain_live(&mut state, &app, process, from, standby);
                moved.push(format!("{app}/{process}"));
            }
        }
        state.dirty = true;
        drop(state);
        self.kick.notify_one();
        Ok(ControlResponse::Drained { node, moved })
    }

    /// Moves one process to `to` through the handover path: refused, with
    /// the reason, for an unknown or unsuitable node or a process that
    /// cannot be snapshotted; the process keeps running where it was.
    async fn migrate(&self, app: String, process: String, to: String) -> Result<ControlResponse> {
        let mut state = self.state.lock().await;
        let Some(a) = state.apps.get(&app) else {
            return Ok(ControlResponse::NotFound {
                what: format!("app \"{app}\""),
            });
        };
        let Some(spec) = a.processes.iter().find(|p| p.name == process) else {
            return Ok(ControlResponse::NotFound {
                what: format!("process \"{app}/{process}\""),
            });
        };
        let Some(from) = a.assignment.get(&process).cloned() else {
            bail!(
                "{app}/{process} is pending (not running anywhere), so there is nothing to migrate"
            );
        };
        if spec.grants(&weft_abi::Capability::Wasi) {
            bail!("{app}/{process} uses WASI and cannot be snapshotted, so it cannot migrate");
        }
        if from == to {
            bail!("{app}/{process} already runs on {to}");
        }
        let Some(node) = state.nodes.get(&to).filter(|n| n.alive) else {
            let alive: Vec<&str> = state
                .nodes
                .iter()
                .filter(|(_, n)| n.alive)
                .map(|(n, _)| n.as_str())
                .collect();
            return Ok(ControlResponse::NotFound {
                what: format!("node \"{to}\" (alive nodes: {})", alive.join(", ")),
            });
        };
        let Some(status) = &node.status else {
            bail!("node {to} has not reported its status yet; try again in a moment");
        };
        let view = NodeView {
            name: to.clone(),
            labels: status.labels.clone(),
            devices: status.devices.clone(),
            rt_class: status.rt_class.clone(),
            free_slots: status.free_slots,
            reported: true,
        };
        if a.assignment.get(&replica::key(&process)) == Some(&to) {
            // The standby there is in step already: swap the two.
            let mut assignment = a.assignment.clone();
            assignment.insert(process.clone(), to.clone());
            assignment.insert(replica::key(&process), from.clone());
            let store = self.store.clone();
            let write = vec![(app.clone(), assignment.clone())];
            blocking(move || store.set_many_assignments(&write)).await?;
            state.apps.get_mut(&app).expect("checked").assignment = assignment;
            info!(app, process, from, to, "switching to the hot standby");
            drop(state);
            self.kick.notify_one();
            return Ok(ControlResponse::Migrating {
                app,
                process,
                from,
                to,
            });
        }
        placement::check_node(&a.processes, &process, &view, &state.drained, &a.assignment)
            .map_err(|why| anyhow::anyhow!("node {to} cannot run {app}/{process}: {why}"))?;
        if state.moves.contains_key(&(app.clone(), process.clone())) {
            bail!("{app}/{process} is already moving; wait until it has arrived");
        }
        state
            .moves
            .insert((app.clone(), process.clone()), to.clone());
        info!(app, process, from, to, "migrating");
        drop(state);
        self.kick.notify_one();
        Ok(ControlResponse::Migrating {
            app,
            process,
            from,
            to,
        })
    }

    async fn get_module(&self, digest: String) -> Result<ControlResponse> {
        if !is_digest(&digest) {
            bail!("\"{digest}\" is not a lowercase hex SHA-256 digest");
        }
        let store = self.store.clone();
        let d = digest.clone();
        Ok(match blocking(move || store.module(&d)).await? {
            Some(bytes) => ControlResponse::Module { bytes: Blob(bytes) },
            None => ControlResponse::NotFound {
                what: format!("module {digest}"),
            },
        })
    }

    async fn get_checkpoint(&self, app: String, process: String) -> Result<ControlResponse> {
        let store = self.store.clone();
        Ok(
            match blocking(move || store.checkpoint(&app, &process)).await? {
                Some(c) => ControlResponse::Checkpoint {
                    tag: Some(c.tag),
                    bytes: Blob(c.snapshot),
                },
                None => ControlResponse::Checkpoint {
                    tag: None,
                    bytes: Blob::default(),
                },
            },
        )
    }
}

/// Turns the move placement chose for `process` off the drained node
/// `from` into a live one: its hot standby takes over if it has one on a
/// live node; otherwise it keeps running on `from` while a replica catches
/// up on its new node. A WASI process (no snapshots) and a process no node
/// takes are left to placement: restarted elsewhere, or pending.
fn drain_live(state: &mut State, app: &str, process: &str, from: &str, standby: Option<String>) {
    let standby = standby.filter(|s| s != from && state.nodes.get(s).is_some_and(|n| n.alive));
    let Some(a) = state.apps.get_mut(app) else {
        return;
    };
    let wasi = a
        .processes
        .iter()
        .any(|p| p.name == process && p.grants(&weft_abi::Capability::Wasi));
    let Some(to) = a.assignment.get(process).cloned() else {
        return;
    };
    if wasi || to == from {
        return;
    }
    let key = (app.to_string(), process.to_string());
    state.handovers.remove(&key);
    match standby {
        Some(standby) => {
            a.assignment.remove(&replica::key(process));
            a.assignment.insert(process.to_string(), standby);
        }
        None => {
            info!(app, process, from, to, "moving live off the drained node");
            a.assignment.insert(process.to_string(), from.to_string());
            a.assignment
                .insert(replica::moving_key(process), to.clone());
            state.moves.insert(key, to);
        }
    }
}

/// How close to the app's current tag a moving replica must report being
/// before it takes over (statuses come every 250 ms).
const CAUGHT_UP: Duration = Duration::from_millis(600);

/// Completes every move whose replica has caught up with the present (its
/// node promotes it in place, the old node stops the process) and drops
/// moves whose target is gone.
fn finish_moves(state: &mut State) {
    let moves = std::mem::take(&mut state.moves);
    for ((app, process), to) in moves {
        let Some(a) = state.apps.get(&app) else {
            continue;
        };
        if !state.nodes.get(&to).is_some_and(|n| n.alive) {
            warn!(app, process, to, "move abandoned: its target is gone");
            continue;
        }
        if a.assignment.get(&process) == Some(&to) {
            // Its old node died and the replica took over already.
            continue;
        }
        let now = now_unix_ns().saturating_sub(a.stored.epoch_unix_ns);
        let caught_up = reported(state, &to, &app, &process, a.stored.generation)
            .filter(|p| p.standby && p.state == "running")
            .and_then(|p| p.last_tag_ns)
            .is_some_and(|t| t + CAUGHT_UP.as_nanos() as u64 >= now);
        if !caught_up {
            state.moves.insert((app, process), to);
            continue;
        }
        let a = state.apps.get_mut(&app).expect("checked");
        if let Some((from, to)) = replica::finish_move(&mut a.assignment, &process) {
            info!(
                app,
                process, from, to, "moved live: the replica on the target takes over"
            );
            state.dirty = true;
        }
    }
}

/// The smallest logical delay a connection between two nodes should have:
/// below it, ordinary network latency makes its messages tardy.
const MIN_REMOTE_DELAY: Duration = Duration::from_millis(1);

/// Connections whose ends the current placement puts on different nodes
/// but whose Δ is too small for a network to deliver within.
fn delay_warnings(app: &App) -> Vec<String> {
    app.connections
        .iter()
        .filter(|c| c.delay < MIN_REMOTE_DELAY)
        .filter_map(|c| {
            let from = app.assignment.get(&c.from.process)?;
            let to = app.assignment.get(&c.to.process)?;
            (from != to).then(|| {
                format!(
                    "connection {}.{} -> {}.{} has delay {:?} but runs from {from} to {to}: \
                     messages will be tardy; give it a delay of at least {MIN_REMOTE_DELAY:?} \
                     (more than the link's latency) or place both ends on one node",
                    c.from.process, c.from.port, c.to.process, c.to.port, c.delay
                )
            })
        })
        .collect()
}

/// The placement `node` is told: the app's assignment, except that a
/// process being handed over still shows its old node to everyone but that
/// node.
fn placement_for(
    handovers: &BTreeMap<(String, String), String>,
    app: &str,
    assignment: &BTreeMap<String, String>,
    node: &str,
) -> BTreeMap<String, String> {
    let mut placement = assignment.clone();
    for ((a, process), from) in handovers {
        if a == app && from != node {
            placement.insert(process.clone(), from.clone());
        }
    }
    placement
}

/// Places every app in name order; returns the apps whose assignment
/// changed. `presume` (startup grace): nodes named in assignments but never
/// seen count as alive, without a status.
fn place_all(state: &mut State, presume: bool) -> Vec<(String, BTreeMap<String, String>)> {
    // Slots every app occupies per node, before this pass.
    let mut used: BTreeMap<String, u32> = BTreeMap::new();
    for app in state.apps.values() {
        for node in app.assignment.values() {
            *used.entry(node.clone()).or_default() += 1;
        }
    }
    let mut presumed: BTreeSet<String> = BTreeSet::new();
    if presume {
        for app in state.apps.values() {
            presumed.extend(
                app.assignment
                    .values()
                    .filter(|n| !state.nodes.contains_key(*n))
                    .cloned(),
            );
        }
    }

    let mut changed = Vec::new();
    let names: Vec<String> = state.apps.keys().cloned().collect();
    for name in names {
        let alive = |n: &str| presumed.contains(n) || state.nodes.get(n).is_some_and(|n| n.alive);
        let mut assignment = state.apps[&name].assignment.clone();
        let processes = &state.apps[&name].processes;
        for (process, from, to) in replica::take_over(&mut assignment, processes, alive) {
            warn!(app = %name, process, from, to, "node is gone; its hot standby takes over");
        }
        let app = &state.apps[&name];
        let moves: BTreeMap<String, String> = state
            .moves
            .iter()
            .filter(|((a, _), _)| *a == name)
            .map(|((_, p), to)| (p.clone(), to.clone()))
            .collect();
        let specs = replica::with_replicas(&app.processes, &moves);
        let mut mine: BTreeMap<&str, u32> = BTreeMap::new();
        for node in app.assignment.values() {
            *mine.entry(node.as_str()).or_default() += 1;
        }
        let mut views: Vec<NodeView> = state
            .nodes
            .iter()
            .filter(|(_, n)| n.alive)
            .map(|(node_name, n)| {
                let others = used.get(node_name).copied().unwrap_or(0)
                    - mine.get(node_name.as_str()).copied().unwrap_or(0);
                match &n.status {
                    Some(s) => {
                        let capacity = s.free_slots.saturating_add(s.processes.len() as u32);
                        NodeView {
                            name: node_name.clone(),
                            labels: s.labels.clone(),
                            devices: s.devices.clone(),
                            rt_class: s.rt_class.clone(),
                            free_slots: capacity.saturating_sub(others),
                            reported: true,
                        }
                    }
                    None => unreported(node_name),
                }
            })
            .collect();
        views.extend(presumed.iter().map(|n| unreported(n)));
        let mut outcome = placement::place(&specs, &views, &state.drained, &assignment);
        // A process being moved stays where it runs until its replica has
        // caught up (`finish_moves`), even on a drained node.
        for process in moves.keys() {
            if let Some(from) = assignment.get(process).filter(|n| alive(n)) {
                outcome.assignment.insert(process.clone(), from.clone());
                outcome.pending.remove(process);
            }
        }

        for spec in &specs {
            let process = &spec.name;
            let old = app.assignment.get(process);
            let new = outcome.assignment.get(process);
            match (old, new) {
                (None, Some(node)) => info!(app = %name, process, node, "placed"),
                (Some(from), Some(to)) if from != to => {
                    info!(app = %name, process, from, to, "moved")
                }
                (Some(from), None) => {
                    warn!(app = %name, process, from, reason = %outcome.pending[process], "lost its node; pending")
                }
                (None, None) if app.pending.get(process) != outcome.pending.get(process) => {
                    info!(app = %name, process, reason = %outcome.pending[process], "pending")
                }
                _ => {}
            }
        }
        for node in app.assignment.values() {
            if let Some(u) = used.get_mut(node) {
                *u -= 1;
            }
        }
        for node in outcome.assignment.values() {
            *used.entry(node.clone()).or_default() += 1;
        }
        let app = state.apps.get_mut(&name).expect("app exists");
        let moved = app.assignment != outcome.assignment;
        if moved {
            changed.push((name.clone(), outcome.assignment.clone()));
        }
        app.assignment = outcome.assignment;
        app.pending = outcome.pending;
        if moved {
            for warning in delay_warnings(app) {
                warn!(app = %name, "{warning}");
            }
        }
    }
    changed
}

fn unreported(name: &str) -> NodeView {
    NodeView {
        name: name.to_string(),
        labels: BTreeMap::new(),
        devices: Vec::new(),
        rt_class: "unknown".into(),
        free_slots: 0,
        reported: false,
    }
}

fn ps_entries(state: &State, name: &str) -> Vec<PsEntry> {
    let Some(app) = state.apps.get(name) else {
        return Vec::new();
    };
    let generation = app.stored.generation;
    app.processes
        .iter()
        .map(|spec| {
            let mut entry = PsEntry {
                app: name.to_string(),
                name: spec.name.clone(),
                node: None,
                state: "pending".into(),
                reason: None,
                generation,
                ticks: 0,
                faults: 0,
                restarts: 0,
                deadline_misses: 0,
                tardy: 0,
                output_hash: String::new(),
                restored_from_tag: None,
                first_tag_ns: None,
                period_ns: spec.period.map(|p| p.as_nanos() as u64),
                resume_lateness_ns: None,
                chain_mark: None,
                last_output_hex: None,
                standby: standby_entry(state, name, spec),
            };
            match app.assignment.get(&spec.name) {
                None => entry.reason = app.pending.get(&spec.name).cloned(),
                Some(node) => {
                    entry.node = Some(node.clone());
                    entry.state = "starting".into();
                    let reported =
                        reported(state, node, name, &spec.name, generation).filter(|p| !p.standby);
                    if let Some(p) = reported {
                        entry.state = p.state.clone();
                        entry.reason = p.reason.clone();
                        entry.ticks = p.ticks;
                        entry.faults = p.faults;
                        entry.restarts = p.restarts;
                        entry.deadline_misses = p.deadline_misses;
                        entry.tardy = p.tardy;
                        entry.output_hash = p.output_hash.clone();
                        entry.restored_from_tag = p.restored_from_tag;
                        entry.first_tag_ns = p.first_tag_ns;
                        entry.resume_lateness_ns = p.resume_lateness_ns;
                        entry.chain_mark = p.chain_mark.clone();
                        entry.last_output_hex = p.last_output_hex.clone();
                    }
                }
            }
            entry
        })
        .collect()
}

/// What `node` reports about `process` of `app` at `generation`, if alive.
fn reported<'a>(
    state: &'a State,
    node: &str,
    app: &str,
    process: &str,
    generation: u64,
) -> Option<&'a ProcessStatus> {
    state
        .nodes
        .get(node)
        .filter(|n| n.alive)
        .and_then(|n| n.status.as_ref())
        .and_then(|s| {
            s.processes
                .iter()
                .find(|p| p.app == app && p.name == process)
        })
        .filter(|p| p.generation == generation)
}

fn standby_entry(state: &State, name: &str, spec: &ProcessSpec) -> Option<StandbyEntry> {
    if !replica::wants_standby(spec) {
        return None;
    }
    let app = state.apps.get(name)?;
    let key = replica::key(&spec.name);
    let Some(node) = app.assignment.get(&key) else {
        return Some(StandbyEntry {
            node: None,
            state: "pending".into(),
            reason: app.pending.get(&key).cloned(),
            last_tag_ns: None,
            chain_mark: None,
        });
    };
    let reported =
        reported(state, node, name, &spec.name, app.stored.generation).filter(|p| p.standby);
    Some(StandbyEntry {
        node: Some(node.clone()),
        state: if reported.is_some() {
            "standby"
        } else {
            "starting"
        }
        .into(),
        reason: None,
        last_tag_ns: reported.and_then(|p| p.last_tag_ns),
        chain_mark: reported.and_then(|p| p.chain_mark.clone()),
    })
}

fn pending_entries(state: &State, name: &str) -> Vec<PsEntry> {
    ps_entries(state, name)
        .into_iter()
        .filter(|e| e.state == "pending")
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_fabric::Mode;
    use weft_fabric::rpc::call;

    const WAT: &str = r#"(module (memory 1) (func (export "weft_tick") (param i64)))"#;

    #[test]
    fn a_zero_delay_between_nodes_is_warned_about() {
        let text = "name = \"w\"\n\
            [[process]]\nname = \"a\"\nmodule = \"m.wasm\"\noutputs = [\"o\"]\n\
            [[process]]\nname = \"b\"\nmodule = \"m.wasm\"\ninputs = [\"i\"]\n\
            [[connection]]\nfrom = \"a.o\"\nto = \"b.i\"\n";
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.wasm"), WAT).unwrap();
        let manifest = AppManifest::parse(text, Path::new("w.toml"), dir.path()).unwrap();
        let mut app = App {
            stored: StoredApp {
                manifest: text.into(),
                generation: 1,
                epoch_unix_ns: 0,
            },
            processes: manifest.processes,
            connections: manifest.connections,
            assignment: BTreeMap::from([("a".into(), "n1".into()), ("b".into(), "n1".into())]),
            pending: BTreeMap::new(),
        };
        assert!(delay_warnings(&app).is_empty(), "same node: no network");
        app.assignment.insert("b".into(), "n2".into());
        let warnings = delay_warnings(&app);
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("a.o -> b.i") && warnings[0].contains("n1 to n2"),
            "{warnings:?}"
        );
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn manifest(digest: &str) -> String {
        format!(
            "name = \"tiny\"\n[[process]]\nname = \"t\"\nmodule = \"{digest}.wasm\"\nperiod = \"10ms\"\n"
        )
    }

    async fn client(endpoint: &str) -> zenoh::Session {
        FabricConfig::default()
            .mode(Mode::Client)
            .connect(vec![endpoint.to_string()])
            .open()
            .await
            .unwrap()
    }

    /// Calls until the controller answers (it may still be starting).
    async fn request(
        session: &zenoh::Session,
        keys: &Keys,
        req: &ControlRequest,
    ) -> ControlResponse {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match call(session, &keys.controller_rpc(), req, Duration::from_secs(2)).await {
                Ok(r) => return r,
                Err(e) if Instant::now() < deadline => {
                    debug!("retrying: {e:#}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("controller does not answer: {e:#}"),
            }
        }
    }

    fn start(dir: &Path, port: u16) -> tokio::task::JoinHandle<Result<()>> {
        let fabric = FabricConfig::default().listen(vec![format!("tcp/127.0.0.1:{port}")]);
        let config = ControllerConfig::new(dir, fabric).sync_interval(Duration::from_millis(100));
        tokio::spawn(run(config))
    }

    #[test]
    fn module_refs_and_digests() {
        let refs = module_refs(
            "name='a'\n[[process]]\nname='p'\nmodule='x.wasm'\nlink={ lib = 'y.wasm' }\n",
        );
        assert_eq!(
            refs,
            vec![
                ("process \"p\": module".to_string(), "x.wasm".to_string()),
                ("process \"p\": link.lib".to_string(), "y.wasm".to_string())
            ]
        );
        assert!(module_refs("not toml [").is_empty());
        assert!(is_digest(&module_digest(b"x")));
        assert!(!is_digest("../etc/passwd") && !is_digest(&"A".repeat(64)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deploy_ps_remove_and_bad_input_over_the_fabric() {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let controller = start(dir.path(), port);
        let endpoint = format!("tcp/127.0.0.1:{port}");
        let session = client(&endpoint).await;
        let keys = Keys::new("default");

        // Empty cluster.
        match request(&session, &keys, &ControlRequest::Ps).await {
            ControlResponse::Ps { processes } => assert!(processes.is_empty()),
            other => panic!("unexpected {other:?}"),
        }

        // A malformed request gets an error reply; the controller keeps serving.
        let replies = session
            .get(keys.controller_rpc())
            .payload(b"garbage".to_vec())
            .timeout(Duration::from_secs(5))
            .await
            .unwrap();
        let reply = replies.recv_async().await.expect("a reply");
        let err = reply.result().expect_err("an error reply");
        assert!(String::from_utf8_lossy(&err.payload().to_bytes()).contains("malformed request"));

        // A module whose digest does not match is refused.
        let digest = module_digest(WAT.as_bytes());
        let bad = ControlRequest::Deploy {
            manifest: manifest(&digest),
            modules: [(digest.clone(), Blob(b"other".to_vec()))].into(),
        };
        match request(&session, &keys, &bad).await {
            ControlResponse::Error { message } => {
                assert!(message.contains("corrupted or mislabelled"), "{message}")
            }
            other => panic!("unexpected {other:?}"),
        }
        // A manifest naming a module that was never uploaded is refused.
        let missing = ControlRequest::Deploy {
            manifest: manifest(&digest),
            modules: BTreeMap::new(),
        };
        match request(&session, &keys, &missing).await {
            ControlResponse::Error { message } => {
                assert!(message.contains("neither uploaded"), "{message}")
            }
            other => panic!("unexpected {other:?}"),
        }
        // A plain path is refused.
        let plain = ControlRequest::Deploy {
            manifest: manifest("../x"),
            modules: BTreeMap::new(),
        };
        assert!(matches!(
            request(&session, &keys, &plain).await,
            ControlResponse::Error { .. }
        ));

        // A good deploy: no nodes, so pending.
        let deploy = ControlRequest::Deploy {
            manifest: manifest(&digest),
            modules: [(digest.clone(), Blob(WAT.as_bytes().to_vec()))].into(),
        };
        match request(&session, &keys, &deploy).await {
            ControlResponse::Deployed {
                app,
                generation,
                pending,
                ..
            } => {
                assert_eq!((app.as_str(), generation), ("tiny", 1));
                assert_eq!(pending.len(), 1);
            }
            other => panic!("unexpected {other:?}"),
        }
        // Redeploying the same manifest changes nothing.
        match request(&session, &keys, &deploy).await {
            ControlResponse::Deployed { generation, .. } => assert_eq!(generation, 1),
            other => panic!("unexpected {other:?}"),
        }
        match request(&session, &keys, &ControlRequest::Ps).await {
            ControlResponse::Ps { processes } => {
                assert_eq!(processes.len(), 1);
                let p = &processes[0];
                assert_eq!(
                    (p.app.as_str(), p.name.as_str(), p.state.as_str()),
                    ("tiny", "t", "pending")
                );
                assert!(
                    p.reason.as_deref().unwrap_or("").contains("no nodes"),
                    "{p:?}"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        match request(
            &session,
            &keys,
            &ControlRequest::GetModule {
                digest: digest.clone(),
            },
        )
        .await
        {
            ControlResponse::Module { bytes } => assert_eq!(bytes.0, WAT.as_bytes()),
            other => panic!("unexpected {other:?}"),
        }
        match request(
            &session,
            &keys,
            &ControlRequest::GetCheckpoint {
                app: "tiny".into(),
                process: "t".into(),
            },
        )
        .await
        {
            ControlResponse::Checkpoint { tag, bytes } => {
                assert!(tag.is_none() && bytes.0.is_empty())
            }
            other => panic!("unexpected {other:?}"),
        }
        // A checkpoint published on the fabric is kept.
        let message = CheckpointMessage {
            tag: 7,
            snapshot: Blob(b"snap".to_vec()),
        };
        session
            .put(keys.checkpoint("tiny", "t"), codec::encode(&message))
            .await
            .unwrap();
        session
            .put(keys.checkpoint("tiny", "t"), b"garbage".to_vec())
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match request(
                &session,
                &keys,
                &ControlRequest::GetCheckpoint {
                    app: "tiny".into(),
                    process: "t".into(),
                },
            )
            .await
            {
                ControlResponse::Checkpoint {
                    tag: Some(7),
                    bytes,
                } => {
                    assert_eq!(bytes.0, b"snap");
                    break;
                }
                _ if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                other => panic!("checkpoint not stored: {other:?}"),
            }
        }
        assert!(matches!(
            request(
                &session,
                &keys,
                &ControlRequest::Drain {
                    node: "nope".into()
                }
            )
            .await,
            ControlResponse::NotFound { .. }
        ));
        assert!(
            matches!(request(&session, &keys, &ControlRequest::Nodes).await, ControlResponse::Nodes { nodes } if nodes.is_empty())
        );

        // Restart on the same data directory: the app is still there.
        controller.abort();
        let _ = controller.await;
        let port2 = free_port();
        let controller = start(dir.path(), port2);
        session.close().await.unwrap();
        let session = client(&format!("tcp/127.0.0.1:{port2}")).await;
        match request(&session, &keys, &ControlRequest::Ps).await {
            ControlResponse::Ps { processes } => assert_eq!(processes.len(), 1),
            other => panic!("unexpected {other:?}"),
        }

        // Remove.
        match request(
            &session,
            &keys,
            &ControlRequest::Remove { app: "tiny".into() },
        )
        .await
        {
            ControlResponse::Removed { app } => assert_eq!(app, "tiny"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            request(
                &session,
                &keys,
                &ControlRequest::Remove { app: "tiny".into() }
            )
            .await,
            ControlResponse::NotFound { .. }
        ));
        match request(&session, &keys, &ControlRequest::Ps).await {
            ControlResponse::Ps { processes } => assert!(processes.is_empty()),
            other => panic!("unexpected {other:?}"),
        }
        controller.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn places_on_a_node_syncs_it_and_fails_over_when_it_dies() {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let controller = start(dir.path(), port);
        let endpoint = format!("tcp/127.0.0.1:{port}");
        let keys = Keys::new("default");
        let cli = client(&endpoint).await;
        let _ = request(&cli, &keys, &ControlRequest::Ps).await;

        // A fake node: liveliness token, status, and a Sync handler.
        let node = FabricConfig::default()
            .connect(vec![endpoint.clone()])
            .open()
            .await
            .unwrap();
        let token = node
            .liveliness()
            .declare_token(keys.node_alive("edge-1"))
            .await
            .unwrap();
        let status = NodeStatus {
            name: "edge-1".into(),
            pid: 1,
            labels: BTreeMap::new(),
            devices: Vec::new(),
            rt_class: "soft".into(),
            cores: 2,
            memory_bytes: 1 << 30,
            free_slots: 4,
            processes: Vec::new(),
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<AppAssignment>>();
        let server = tokio::spawn(weft_fabric::rpc::serve(
            node.clone(),
            keys.node_rpc("edge-1"),
            move |r: NodeRequest| {
                let tx = tx.clone();
                async move {
                    let NodeRequest::Sync { apps } = r;
                    let _ = tx.send(apps);
                    NodeResponse::Ok { handover: vec![] }
                }
            },
        ));
        let publisher = {
            let node = node.clone();
            let key = keys.node_status("edge-1");
            tokio::spawn(async move {
                loop {
                    let _ = node.put(&key, codec::encode(&status)).await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };

        let digest = module_digest(WAT.as_bytes());
        let deploy = ControlRequest::Deploy {
            manifest: manifest(&digest),
            modules: [(digest.clone(), Blob(WAT.as_bytes().to_vec()))].into(),
        };
        // Wait until the node is known and alive, then deploy.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let ControlResponse::Nodes { nodes } =
                request(&cli, &keys, &ControlRequest::Nodes).await
                && nodes
                    .iter()
                    .any(|n| n.name == "edge-1" && n.state == "alive" && n.free_slots == 4)
            {
                break;
            }
            assert!(Instant::now() < deadline, "node never seen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        match request(&cli, &keys, &deploy).await {
            ControlResponse::Deployed { pending, .. } => assert!(pending.is_empty(), "{pending:?}"),
            other => panic!("unexpected {other:?}"),
        }
        let assignment = loop {
            let apps = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("a sync")
                .unwrap();
            if let Some(a) = apps.into_iter().find(|a| a.app == "tiny") {
                break a;
            }
        };
        assert_eq!(assignment.generation, 1);
        assert_eq!(
            assignment.placement,
            [("t".to_string(), "edge-1".to_string())].into()
        );
        match request(&cli, &keys, &ControlRequest::Ps).await {
            ControlResponse::Ps { processes } => {
                assert_eq!(processes[0].node.as_deref(), Some("edge-1"));
                assert_eq!(processes[0].state, "starting");
            }
            other => panic!("unexpected {other:?}"),
        }

        // The node dies: its process becomes pending.
        publisher.abort();
        server.abort();
        drop(token);
        node.close().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let ControlResponse::Ps { processes } =
                request(&cli, &keys, &ControlRequest::Ps).await
                && processes[0].state == "pending"
            {
                assert_eq!(processes[0].node, None);
                break;
            }
            assert!(Instant::now() < deadline, "process never became pending");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        match request(&cli, &keys, &ControlRequest::Nodes).await {
            ControlResponse::Nodes { nodes } => assert_eq!(nodes[0].state, "dead"),
            other => panic!("unexpected {other:?}"),
        }
        controller.abort();
    }
}
