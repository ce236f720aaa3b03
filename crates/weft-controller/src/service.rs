//! The controller service: recovers its state from redb, joins the fabric,
//! watches nodes (liveliness and status, which lists the checkpoints each
//! holds), serves requests and modules, and reconciles every
//! `sync_interval` and right after any change. Checkpoints themselves stay
//! on the nodes.
//!
//! On restart the controller reloads apps, placements and intents from
//! redb. For `startup_grace` it presumes that nodes named in placements but
//! not yet seen are alive, so their processes are not moved while nodes
//! reconnect; a move or handover that was in flight carries on.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use tracing::{debug, error, info, warn};
use weft_fabric::codec;
use weft_fabric::proto::{ControlRequest, EventEntry, NodeStatus};
use weft_fabric::{FabricConfig, Keys};
use weft_manifest::AppManifest;
use weft_metrics::MetricsListener;
use weft_types::{EventKind, NodeName};
use zenoh::sample::SampleKind;

use crate::api;
use crate::dashboard::{self, PortTaps};
use crate::events::{self, EventLog, KEEP};
use crate::inbound::Inbound;
use crate::metrics::ControllerMetrics;
use crate::model::{App, Spec, State};
use crate::reconcile::{SyncTracker, reconcile};
use crate::shared::{Shared, SharedRef, blocking, now_ms};
use crate::store::Store;

/// How the controller runs, builder style.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Holds `controller.redb`.
    pub data_dir: PathBuf,
    pub fabric: FabricConfig,
    /// Period of the reconciliation loop.
    pub sync_interval: Duration,
    /// After a start, how long nodes named in stored placements are
    /// presumed alive before their processes are moved elsewhere.
    pub startup_grace: Duration,
    /// Where to serve `/metrics`, if anywhere.
    pub metrics: Option<SocketAddr>,
}

impl ControllerConfig {
    pub fn new(data_dir: impl Into<PathBuf>, fabric: FabricConfig) -> ControllerConfig {
        ControllerConfig {
            data_dir: data_dir.into(),
            fabric,
            sync_interval: Duration::from_millis(500),
            startup_grace: Duration::from_secs(5),
            metrics: None,
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
    pub fn metrics(mut self, addr: SocketAddr) -> Self {
        self.metrics = Some(addr);
        self
    }
}

/// Runs the controller until a fatal error.
pub async fn run(config: ControllerConfig) -> Result<()> {
    run_until(config, std::future::pending()).await
}

/// Runs the controller until `shutdown` completes (then returns `Ok`) or a
/// fatal error. Dropping the returned future stops everything it started.
pub async fn run_until(config: ControllerConfig, shutdown: impl Future<Output = ()>) -> Result<()> {
    let metrics_listener = match config.metrics {
        Some(addr) => Some(MetricsListener::bind(addr).await?),
        None => None,
    };
    let store = Arc::new(Store::open(&config.data_dir)?);
    let state = recover(&store)?;
    let events = EventLog::recover(store.events()?);
    let persisted = state.current.clone();
    let keys = Keys::new(&config.fabric.cluster);
    let session = config.fabric.open().await?;
    let _token = session
        .liveliness()
        .declare_token(keys.controller_alive())
        .await
        .map_err(|e| anyhow!("{e}"))
        .context("cannot declare the controller's liveliness token")?;
    let metrics = Arc::new(ControllerMetrics::default());
    let shared = Arc::new(Shared {
        metrics: metrics.clone(),
        store,
        keys: keys.clone(),
        session: session.clone(),
        state: Mutex::new(state),
        kick: tokio::sync::Notify::new(),
        started: Instant::now(),
        grace: config.startup_grace,
        writes: tokio::sync::Mutex::new(()),
        reconciling: tokio::sync::Mutex::new(persisted),
        sync: Arc::new(SyncTracker::default()),
        events,
        taps: PortTaps::default(),
    });
    let _metrics_server = match metrics_listener {
        Some(listener) => {
            let registry = metrics.registry(Arc::downgrade(&shared));
            Some(listener.serve_with(registry, dashboard::router(shared.clone()))?)
        }
        None => None,
    };
    let apps = shared.state().spec.apps.len();
    info!(cluster = %config.fabric.cluster, data = %config.data_dir.display(), apps, "controller started");
    let result = tokio::select! {
        r = serve(&shared, &session) => r,
        r = watch(&shared, &session) => r,
        _ = reconcile_loop(&shared, config.sync_interval) => Err(anyhow!("the reconciliation loop stopped")),
        _ = save_events(&shared) => Err(anyhow!("the event writer stopped")),
        _ = shutdown => Ok(()),
    };
    let last = shared.events.unsaved();
    if let Err(e) = shared.store.append_events(&last, KEEP) {
        warn!("the newest events were not stored: {e:#}");
    }
    drop(shared);
    if let Err(e) = session.close().await {
        debug!("closing the fabric session: {e}");
    }
    result
}

/// Loads apps, placements, intents and drained nodes. An app whose stored
/// manifest no longer parses is kept on disk and not run.
fn recover(store: &Store) -> Result<State> {
    let mut state = State {
        spec: Spec {
            drained: store.drained()?,
            ..Spec::default()
        },
        current: store.current()?,
        ..State::default()
    };
    for (name, record) in store.apps()? {
        match AppManifest::parse(&record.manifest, format!("stored app \"{name}\"")) {
            Ok(manifest) => {
                let placed = state.current.placed.get(&name).map_or(0, |p| p.len());
                info!(app = %name, generation = record.generation, placed, "recovered app");
                let manifest = Arc::new(manifest);
                state.spec.apps.insert(name, App { record, manifest });
            }
            Err(e) => error!(app = %name, "cannot recover app (kept on disk, not run): {e:#}"),
        }
    }
    let (moves, handovers) = (state.current.moves.len(), state.current.handovers.len());
    if moves + handovers > 0 {
        info!(moves, handovers, "resuming what was in flight");
    }
    Ok(state)
}

async fn reconcile_loop(shared: &SharedRef, interval: Duration) {
    loop {
        reconcile(shared).await;
        tokio::select! {
            _ = shared.kick.notified() => {}
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// How long new events gather before they are written together.
const GATHER_EVENTS: Duration = Duration::from_millis(50);

/// Writes new events to the store in batches, and shows them to readers
/// once stored; a batch that fails is tried again with the next.
async fn save_events(shared: &SharedRef) {
    let mut failing = false;
    loop {
        shared.events.wait_unsaved().await;
        tokio::time::sleep(GATHER_EVENTS).await;
        let batch = shared.events.unsaved();
        let Some(last) = batch.last().map(|e| e.seq) else {
            continue;
        };
        let store = shared.store.clone();
        let written = blocking(move || {
            let result = store.append_events(&batch, KEEP);
            Ok(result.map_err(|e| (e, batch)))
        })
        .await;
        let written = written.and_then(|r| {
            r.map_err(|(e, batch)| {
                shared.events.unsaved_again(batch);
                e
            })
        });
        match written {
            Ok(()) => {
                shared.events.stored(last);
                if failing {
                    failing = false;
                    info!("events are stored again");
                }
            }
            Err(e) => {
                if !failing {
                    error!("cannot store events (kept in memory, tried again): {e:#}");
                }
                failing = true;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// The queryables: requests, deploys, modules.
async fn serve(shared: &SharedRef, session: &zenoh::Session) -> Result<()> {
    let keys = &shared.keys;
    let rpc = {
        let shared = shared.clone();
        weft_fabric::rpc::serve(
            session.clone(),
            keys.controller_rpc(),
            move |r: ControlRequest| {
                let shared = shared.clone();
                async move { api::handle(&shared, r).await }
            },
        )
    };
    let deploy = {
        let shared = shared.clone();
        weft_fabric::rpc::serve_raw(
            session.clone(),
            keys.controller_deploy(),
            move |_, _, bytes| {
                let shared = shared.clone();
                async move { Ok(codec::encode(&api::deploy(&shared, bytes).await)) }
            },
        )
    };
    let modules = {
        let shared = shared.clone();
        weft_fabric::rpc::serve_raw(session.clone(), keys.all_modules(), move |key, _, _| {
            let shared = shared.clone();
            async move { module(&shared, &key).await }
        })
    };
    tokio::select! {
        r = rpc => r.context("the controller RPC queryable stopped"),
        r = deploy => r.context("the deploy queryable stopped"),
        r = modules => r.context("the module queryable stopped"),
    }
}

async fn module(shared: &SharedRef, key: &str) -> Result<Vec<u8>, String> {
    let digest = shared
        .keys
        .module_of(key)
        .ok_or_else(|| format!("{key} does not name a module digest"))?;
    let store = shared.store.clone();
    match blocking(move || store.module(&digest)).await {
        Ok(Some(bytes)) => Ok(codec::encode_module(&bytes)),
        Ok(None) => Err(format!("the controller has no module {digest}")),
        Err(e) => Err(format!("{e:#}")),
    }
}

/// The subscriptions: node liveliness and node statuses.
async fn watch(shared: &SharedRef, session: &zenoh::Session) -> Result<()> {
    let keys = &shared.keys;
    let alive = session
        .liveliness()
        .declare_subscriber(keys.all_nodes_alive())
        .history(true)
        .await
        .map_err(|e| anyhow!("cannot watch node liveliness: {e}"))?;
    // Statuses wait in order per node, bounded (see `Inbound`), so a slow
    // controller never holds Zenoh's receive path back.
    let statuses = Arc::new(Inbound::default());
    let _statuses = {
        let statuses = statuses.clone();
        session
            .declare_subscriber(keys.all_node_status())
            .callback(move |sample| statuses.arrived(sample))
            .await
            .map_err(|e| anyhow!("cannot subscribe to node status: {e}"))?
    };
    let liveliness = async {
        while let Ok(sample) = alive.recv_async().await {
            let key = sample.key_expr().as_str();
            match shared.keys.node_of(key) {
                Some(node) => node_liveliness(shared, node, sample.kind() == SampleKind::Put),
                None => warn!(key, "liveliness token outside the node key space; ignored"),
            }
        }
    };
    let status = async {
        loop {
            for (key, payloads) in statuses.take().await {
                for payload in payloads {
                    node_status(shared, &key, &payload.to_bytes());
                }
                // Statuses of thousands of processes arrive faster than a
                // busy controller handles them; without a yield, `take`
                // is always ready and this loop would starve the requests
                // and the reconciliation that share its task.
                tokio::task::yield_now().await;
            }
        }
    };
    tokio::select! {
        _ = liveliness => Err(anyhow!("the node liveliness subscription closed")),
        _ = status => Err(anyhow!("the node status subscription closed")),
    }
}

fn node_liveliness(shared: &SharedRef, node: NodeName, alive: bool) {
    {
        let mut state = shared.state();
        let seen = state.observed.nodes.entry(node.clone()).or_default();
        if seen.alive == alive {
            return;
        }
        seen.alive = alive;
    }
    let event = match alive {
        true => {
            info!(node = %node, "node joined");
            EventEntry::new(EventKind::NodeUp, format!("node {node} joined"))
        }
        false => {
            warn!(node = %node, "node is gone");
            EventEntry::new(EventKind::NodeDead, format!("node {node} is gone"))
        }
    };
    shared.events.record([event.node(&node)]);
    shared.kick.notify_one();
}

fn node_status(shared: &SharedRef, key: &str, bytes: &[u8]) {
    let Some(node) = shared.keys.node_of(key) else {
        warn!(key, "status outside the node key space; dropped");
        return;
    };
    let status = match codec::decode::<NodeStatus>(bytes) {
        Ok(status) if status.name == node => status,
        Ok(status) => {
            warn!(node = %node, named = %status.name, "dropping node status published under another node's key");
            return;
        }
        Err(e) => {
            warn!(node = %node, "dropping malformed node status: {e}");
            return;
        }
    };
    shared.metrics.statuses.inc();
    let mut state = shared.state();
    let in_flight = !state.current.moves.is_empty() || !state.current.handovers.is_empty();
    let waited = |state: &State| {
        state
            .observed
            .nodes
            .get(&node)
            .is_some_and(|s| s.waits_for_full)
    };
    let waited_before = waited(&state);
    let events = {
        let held = state
            .observed
            .nodes
            .get(&node)
            .and_then(|n| n.status.as_ref());
        let mut bursts = shared.events.bursts.lock().unwrap();
        events::status_events(&node, held, &status, &mut bursts, now_ms())
    };
    let first = state.observed.set_status(node.clone(), status);
    let gap = waited(&state);
    if !waited_before && gap {
        shared.metrics.status_gaps.inc();
    }
    drop(state);
    if !gap {
        shared.events.record(events);
    }
    if first || in_flight {
        shared.kick.notify_one();
    }
}
