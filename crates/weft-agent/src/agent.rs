//! The agent's main loop: join the fabric, hold a liveliness token,
//! publish status, and apply the controller's `Sync` requests one at a time.
//! When the controller is unreachable nothing changes: the node keeps
//! running what it was last given, and Zenoh reconnects by itself.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};
use tokio::sync::Mutex as AsyncMutex;
use weft_devices::{NodeConfig, NodeDevices};
use weft_fabric::proto::{NodeRequest, NodeResponse, NodeStatus};
use weft_fabric::status::{Gone, StatusPolicy, StatusWriter};
use weft_fabric::{FabricConfig, Keys, codec, rpc};
use weft_manifest::module::DigestDir;
use weft_metrics::MetricsServer;
use weft_runtime::{Node, RuntimeConfig};
use weft_types::{AppName, NodeName, RtClass};

use crate::apps::{self, Context, LocalApp};
use crate::metrics::NodeMetrics;
use crate::monitor;
use crate::wiring::Outbox;

/// How a node agent runs, builder style.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    name: NodeName,
    labels: BTreeMap<String, String>,
    /// The devices this node offers (its node config's `[devices]`).
    devices: NodeConfig,
    fabric: FabricConfig,
    data_dir: PathBuf,
    max_processes: u32,
    checkpoint_every: Duration,
    status_every: Duration,
    metrics: Option<SocketAddr>,
}

impl AgentConfig {
    pub fn new(name: NodeName, data_dir: impl Into<PathBuf>) -> AgentConfig {
        AgentConfig {
            name,
            labels: BTreeMap::new(),
            devices: NodeConfig::default(),
            fabric: FabricConfig::default(),
            data_dir: data_dir.into(),
            max_processes: weft_runtime::engine::machine_max_processes(&RuntimeConfig::default()),
            checkpoint_every: Duration::from_millis(500),
            status_every: Duration::from_millis(250),
            metrics: None,
        }
    }
    pub fn labels(mut self, labels: BTreeMap<String, String>) -> Self {
        self.labels = labels;
        self
    }
    pub fn devices(mut self, devices: NodeConfig) -> Self {
        self.devices = devices;
        self
    }
    pub fn fabric(mut self, fabric: FabricConfig) -> Self {
        self.fabric = fabric;
        self
    }
    /// Most processes (and replicas) this node runs.
    pub fn max_processes(mut self, n: u32) -> Self {
        self.max_processes = n;
        self
    }
    pub fn checkpoint_every(mut self, every: Duration) -> Self {
        self.checkpoint_every = every;
        self
    }
    pub fn status_every(mut self, every: Duration) -> Self {
        self.status_every = every;
        self
    }
    /// Serve `/metrics` on this address.
    pub fn metrics(mut self, addr: SocketAddr) -> Self {
        self.metrics = Some(addr);
        self
    }
}

/// Runs the agent until the process is killed or Ctrl-C.
pub async fn run(config: AgentConfig) -> Result<()> {
    let runtime = RuntimeConfig::default().max_processes(config.max_processes);
    // Links to real devices start before anything else, so the first
    // process to read one finds it connected if it can be.
    let devices =
        Arc::new(NodeDevices::start(&config.devices).context("cannot start the device links")?);
    let node = Arc::new(Node::with_devices(&runtime, devices.devices())?);
    let rt_class = weft_runtime::rt::node_rt_class();
    let session = config.fabric.open().await?;
    let keys = Keys::new(&config.fabric.cluster);
    let ctx = Arc::new(Context {
        node,
        name: config.name.clone(),
        session: session.clone(),
        keys: keys.clone(),
        outbox: Outbox::start(session.clone(), keys.clone(), config.name.clone()),
        modules: DigestDir::new(config.data_dir.join("modules")),
        checkpoint_every: config.checkpoint_every,
        handed_over: Mutex::default(),
        status_seq: AtomicU64::new(0),
        settled: AtomicBool::new(false),
    });
    let apps: Arc<AsyncMutex<BTreeMap<AppName, LocalApp>>> = Arc::default();
    // The status task hands the process handles to this board; `/metrics`
    // and the task monitor read them from it.
    let board = Arc::new(NodeMetrics::new(
        ctx.clone(),
        rt_class,
        config.max_processes,
        devices.clone(),
    ));
    let _metrics_server = match config.metrics {
        Some(addr) => {
            weft_runtime::metrics::publish_histograms();
            let registry = weft_metrics::registry_of(board.clone());
            Some(MetricsServer::bind(addr, registry).await?)
        }
        None => None,
    };
    // Alive only once everything that can fail at start has started.
    let _token = session
        .liveliness()
        .declare_token(keys.node_alive(&config.name))
        .await
        .map_err(|e| anyhow!("cannot declare liveliness: {e}"))?;
    let dirty_tracking = weft_runtime::dirty_tracking();
    tracing::info!(
        node = %config.name,
        rt_class = %rt_class,
        %dirty_tracking,
        max_processes = config.max_processes,
        "node agent up"
    );

    let server = {
        let (ctx, apps) = (ctx.clone(), apps.clone());
        tokio::spawn(rpc::serve(
            session.clone(),
            keys.node_rpc(&config.name),
            move |request: NodeRequest| {
                let (ctx, apps) = (ctx.clone(), apps.clone());
                async move {
                    let NodeRequest::Sync {
                        apps: desired,
                        seen,
                    } = request;
                    tracing::debug!(apps = desired.len(), "sync from the controller");
                    let mut apps = apps.lock().await;
                    let errors = apps::sync(&ctx, &mut apps, desired, seen).await;
                    if errors.is_empty() {
                        NodeResponse::Ok {}
                    } else {
                        NodeResponse::Error {
                            message: errors.join("; "),
                        }
                    }
                }
            },
        ))
    };
    let monitor = {
        let board = board.clone();
        tokio::spawn(rpc::serve_raw(
            session.clone(),
            keys.node_monitor(&config.name),
            move |_, _, _| {
                let board = board.clone();
                async move { Ok(weft_fabric::codec::encode(&monitor::monitor(&board))) }
            },
        ))
    };
    let status = tokio::spawn(publish_status(
        ctx.clone(),
        apps.clone(),
        config,
        rt_class,
        board,
        devices,
    ));
    tokio::select! {
        r = server => r.context("rpc server")??,
        r = monitor => r.context("task monitor")??,
        r = status => r.context("status task")?,
        _ = tokio::signal::ctrl_c() => tracing::info!("stopping"),
    }
    let mut apps = apps.lock().await;
    for (_, app) in std::mem::take(&mut *apps) {
        app.stop().await;
    }
    Ok(())
}

/// Publishes this node's status every `status_every`, as deltas (see
/// `weft_fabric::status`).
async fn publish_status(
    ctx: Arc<Context>,
    apps: Arc<AsyncMutex<BTreeMap<AppName, LocalApp>>>,
    config: AgentConfig,
    rt_class: RtClass,
    board: Arc<NodeMetrics>,
    devices: Arc<NodeDevices>,
) {
    let mut every = tokio::time::interval(config.status_every);
    let key = ctx.keys.node_status(&config.name);
    let mut writer = StatusWriter::new(StatusPolicy::default());
    loop {
        every.tick().await;
        let (processes, hot, wants_sync) = {
            let apps = apps.lock().await;
            let processes: Vec<_> = apps.values().flat_map(|a| a.status()).collect();
            let hot = apps.values().flat_map(|a| a.replicated()).collect();
            let wants =
                !ctx.settled.load(Ordering::SeqCst) || apps.values().any(|a| a.wants_sync());
            board.set_apps(apps.values().map(LocalApp::metrics).collect());
            (processes, hot, wants)
        };
        let status = NodeStatus {
            name: config.name.clone(),
            pid: std::process::id(),
            labels: config.labels.clone(),
            devices: devices.names(),
            device_reports: devices.reports(),
            rt_class,
            dirty_tracking: Some(weft_runtime::dirty_tracking()),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            memory_bytes: weft_runtime::engine::total_memory(),
            free_slots: config.max_processes.saturating_sub(processes.len() as u32),
            slots: config.max_processes,
            delta_of: None,
            gone: Gone::default(),
            processes,
            handed_over: ctx.handed_over(),
            checkpoints: ctx.outbox.checkpoints().list(),
            checkpoint_bytes_sent: ctx.outbox.checkpoints().bytes_sent(),
            seq: ctx.status_seq.fetch_add(1, Ordering::SeqCst) + 1,
            wants_sync,
        };
        let status = writer.write(status, &hot, Instant::now());
        // A status is a delta of the one before: one dropped on a congested
        // link (a large checkpoint on its way) left the controller blind to
        // this node until its next full status, up to 10 s later, and a
        // move waited that long for its replica to be seen running. So
        // statuses wait for room instead of being dropped.
        let sent = ctx
            .session
            .put(&key, codec::encode(&status))
            .congestion_control(zenoh::qos::CongestionControl::Block)
            .await;
        if let Err(e) = sent {
            tracing::warn!("cannot publish status: {e}");
        }
    }
}
