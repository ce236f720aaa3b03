//! The agent's main loop: join the fabric, hold a liveliness token,
//! publish status, and apply the controller's `Sync` requests one at a time.
//! When the controller is unreachable nothing changes: the node keeps
//! running what it was last given, and Zenoh reconnects by itself.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use tokio::sync::Mutex;
use weft_fabric::proto::{NodeRequest, NodeResponse, NodeStatus};
use weft_fabric::{FabricConfig, Keys, codec, rpc};
use weft_runtime::device::{Devices, ThermalPlant};
use weft_runtime::{Node, RuntimeConfig};

use crate::apps::{self, Context, LocalApp};
use crate::wiring::Outbox;

/// How a node agent runs, builder style.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Simulated devices this node offers (e.g. `plant`).
    pub devices: Vec<String>,
    pub fabric: FabricConfig,
    pub data_dir: PathBuf,
    pub max_processes: u32,
    pub checkpoint_every: Duration,
    pub status_every: Duration,
}

impl AgentConfig {
    pub fn new(name: impl Into<String>, data_dir: impl Into<PathBuf>) -> AgentConfig {
        AgentConfig {
            name: name.into(),
            labels: BTreeMap::new(),
            devices: Vec::new(),
            fabric: FabricConfig::default(),
            data_dir: data_dir.into(),
            max_processes: 256,
            checkpoint_every: Duration::from_millis(500),
            status_every: Duration::from_millis(250),
        }
    }
}

fn devices(names: &[String]) -> Result<Devices> {
    let mut devices = Devices::new();
    for name in names {
        match name.as_str() {
            "plant" => devices.add("plant", Arc::new(ThermalPlant::default())),
            other => anyhow::bail!("unknown device {other:?}; this build simulates: plant"),
        }
    }
    Ok(devices)
}

/// Runs the agent until the process is killed or Ctrl-C.
pub async fn run(config: AgentConfig) -> Result<()> {
    if !weft_fabric::keys::valid_segment(&config.name) {
        anyhow::bail!(
            "node name {:?} must be letters, digits, '-', '_' or '.'",
            config.name
        );
    }
    let runtime = RuntimeConfig::default().max_processes(config.max_processes);
    let node = Arc::new(Node::with_devices(&runtime, devices(&config.devices)?)?);
    let rt_class = serde_json::to_value(weft_runtime::rt::node_rt_class())?
        .as_str()
        .unwrap_or("soft")
        .to_string();
    let session = config.fabric.open().await?;
    let keys = Keys::new(&config.fabric.cluster);
    let _token = session
        .liveliness()
        .declare_token(keys.node_alive(&config.name))
        .await
        .map_err(|e| anyhow!("cannot declare liveliness: {e}"))?;
    let ctx = Arc::new(Context {
        node,
        name: config.name.clone(),
        session: session.clone(),
        keys: keys.clone(),
        outbox: Outbox::start(session.clone(), keys.clone()),
        module_dir: config.data_dir.join("modules"),
        checkpoint_every: config.checkpoint_every,
    });
    let apps: Arc<Mutex<BTreeMap<String, LocalApp>>> = Arc::default();
    tracing::info!(node = %config.name, rt_class = %rt_class, "node agent up");

    let server = {
        let (ctx, apps) = (ctx.clone(), apps.clone());
        tokio::spawn(rpc::serve(
            session.clone(),
            keys.node_rpc(&config.name),
            move |request: NodeRequest| {
                let (ctx, apps) = (ctx.clone(), apps.clone());
                async move {
                    let NodeRequest::Sync { apps: desired } = request;
                    let mut apps = apps.lock().await;
                    let (errors, handover) = apps::sync(&ctx, &mut apps, desired).await;
                    if errors.is_empty() {
                        NodeResponse::Ok { handover }
                    } else {
                        NodeResponse::Error {
                            message: errors.join("; "),
                        }
                    }
                }
            },
        ))
    };

    let status = {
        let (apps, session, keys, config) =
            (apps.clone(), session.clone(), keys.clone(), config.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(config.status_every);
            loop {
                every.tick().await;
                let processes: Vec<_> = apps
                    .lock()
                    .await
                    .values()
                    .flat_map(|a| a.status())
                    .collect();
                let status = NodeStatus {
                    name: config.name.clone(),
                    pid: std::process::id(),
                    labels: config.labels.clone(),
                    devices: config.devices.clone(),
                    rt_class: rt_class.clone(),
                    cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
                    memory_bytes: total_memory(),
                    free_slots: config.max_processes.saturating_sub(processes.len() as u32),
                    processes,
                };
                if let Err(e) = session
                    .put(keys.node_status(&config.name), codec::encode(&status))
                    .await
                {
                    tracing::warn!("cannot publish status: {e}");
                }
            }
        })
    };

    tokio::select! {
        r = server => r.context("rpc server")??,
        r = status => r.context("status task")?,
        _ = tokio::signal::ctrl_c() => tracing::info!("stopping"),
    }
    let mut apps = apps.lock().await;
    for (_, app) in std::mem::take(&mut *apps) {
        app.stop().await;
    }
    Ok(())
}

fn total_memory() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let (pages, size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    (pages.max(0) as u64) * (size.max(0) as u64)
}
