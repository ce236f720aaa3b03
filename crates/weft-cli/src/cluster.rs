//! The cluster commands: `weft node`, `controller`, `router`, and the
//! client commands that talk to the controller over the fabric
//! (`deploy`, `rm`, `ps`, `nodes`, `logs`, `drain`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use sha2::{Digest, Sha256};
use weft_fabric::proto::{Blob, ControlRequest, ControlResponse, NodeEntry, PsEntry};
use weft_fabric::session::DEFAULT_ENDPOINT;
use weft_fabric::{FabricConfig, Keys, Mode, rpc};

/// Where a component joins the fabric.
#[derive(Args, Debug, Clone)]
pub struct FabricArgs {
    /// Cluster name (the `weft/<cluster>/` key prefix).
    #[arg(long, default_value = "default", env = "WEFT_CLUSTER")]
    pub cluster: String,
    /// Endpoints to listen on, e.g. tcp/0.0.0.0:7447 (repeatable).
    #[arg(long)]
    pub listen: Vec<String>,
    /// Endpoints to connect to (repeatable).
    #[arg(long)]
    pub connect: Vec<String>,
}

impl FabricArgs {
    pub fn config(&self, mode: Mode) -> FabricConfig {
        FabricConfig::default()
            .cluster(self.cluster.clone())
            .mode(mode)
            .listen(self.listen.clone())
            .connect(self.connect.clone())
    }
}

/// How a client command reaches the cluster.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    #[arg(long, default_value = "default", env = "WEFT_CLUSTER")]
    pub cluster: String,
    /// The controller's (or any router's) endpoint.
    #[arg(long, default_value = DEFAULT_ENDPOINT, env = "WEFT_CONNECT")]
    pub connect: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl ClientArgs {
    pub(crate) async fn session(&self) -> Result<(zenoh::Session, Keys)> {
        let config = FabricConfig::default()
            .cluster(self.cluster.clone())
            .mode(Mode::Client)
            .connect([self.connect.clone()]);
        let session = config
            .open()
            .await
            .with_context(|| format!("cannot reach the cluster at {}", self.connect))?;
        Ok((session, Keys::new(&self.cluster)))
    }

    pub(crate) async fn call(&self, request: ControlRequest) -> Result<ControlResponse> {
        let (session, keys) = self.session().await?;
        let response = rpc::call(
            &session,
            &keys.controller_rpc(),
            &request,
            rpc::DEFAULT_TIMEOUT,
        )
        .await
        .context("is the controller running? (`weft up` or `weft controller`)")?;
        let _ = session.close().await;
        match response {
            ControlResponse::Error { message } => bail!("{message}"),
            other => Ok(other),
        }
    }
}

#[derive(Args, Debug)]
pub struct NodeArgs {
    /// Unique node name.
    #[arg(long)]
    pub name: String,
    /// Labels, k=v,k=v.
    #[arg(long, value_delimiter = ',')]
    pub labels: Vec<String>,
    /// A simulated device this node offers (repeatable): plant.
    #[arg(long = "device")]
    pub devices: Vec<String>,
    /// Where to keep fetched modules.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Most processes this node accepts.
    #[arg(long, default_value_t = 256)]
    pub max_processes: u32,
    #[command(flatten)]
    pub fabric: FabricArgs,
}

pub fn parse_labels(labels: &[String]) -> Result<BTreeMap<String, String>> {
    labels
        .iter()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .with_context(|| format!("label {l:?}: write key=value"))?;
            Ok((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

pub async fn node(args: NodeArgs) -> Result<()> {
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("weft-node-{}", args.name)));
    let mut config = weft_agent::AgentConfig::new(&args.name, data_dir);
    config.labels = parse_labels(&args.labels)?;
    config.devices = args.devices.clone();
    config.max_processes = args.max_processes;
    config.fabric = args.fabric.config(Mode::Peer);
    weft_agent::run(config).await
}

#[derive(Args, Debug)]
pub struct ControllerArgs {
    /// Where the controller keeps its state (controller.redb).
    #[arg(long, default_value = ".weft/controller")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub fabric: FabricArgs,
}

pub async fn controller(mut args: ControllerArgs) -> Result<()> {
    if args.fabric.listen.is_empty() {
        args.fabric.listen.push(DEFAULT_ENDPOINT.into());
    }
    let config =
        weft_controller::ControllerConfig::new(&args.data_dir, args.fabric.config(Mode::Peer));
    weft_controller::run_until(config, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}

pub async fn router(mut args: FabricArgs) -> Result<()> {
    if args.listen.is_empty() {
        args.listen.push(DEFAULT_ENDPOINT.into());
    }
    let session = args.config(Mode::Router).open().await?;
    eprintln!("weft router listening on {:?}; Ctrl-C to stop", args.listen);
    let _ = tokio::signal::ctrl_c().await;
    let _ = session.close().await;
    Ok(())
}

/// Reads a manifest, validates it, and turns it into a deploy request whose
/// module paths are content digests.
pub fn deploy_request(path: &Path) -> Result<ControlRequest> {
    weft_manifest::AppManifest::load(path)?;
    let text = std::fs::read_to_string(path)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut table: toml::Table = toml::from_str(&text)?;
    let mut modules = BTreeMap::new();
    let mut to_digest = |value: &mut toml::Value| -> Result<()> {
        let relative = value.as_str().context("module paths are strings")?;
        let bytes = std::fs::read(base.join(relative))
            .with_context(|| format!("cannot read module {relative}"))?;
        let digest = hex::encode(Sha256::digest(&bytes));
        *value = toml::Value::String(format!("{digest}.wasm"));
        modules.insert(digest, Blob(bytes));
        Ok(())
    };
    for process in table
        .get_mut("process")
        .and_then(|p| p.as_array_mut())
        .into_iter()
        .flatten()
    {
        if let Some(module) = process.get_mut("module") {
            to_digest(module)?;
        }
        if let Some(links) = process.get_mut("link").and_then(|l| l.as_table_mut()) {
            for (_, value) in links.iter_mut() {
                to_digest(value)?;
            }
        }
    }
    Ok(ControlRequest::Deploy {
        manifest: toml::to_string(&table)?,
        modules,
    })
}

pub async fn deploy(client: ClientArgs, path: PathBuf) -> Result<()> {
    let request = deploy_request(&path)?;
    match client.call(request).await? {
        ControlResponse::Deployed {
            app,
            generation,
            pending,
            warnings,
        } => {
            if client.json {
                println!(
                    "{}",
                    serde_json::json!({ "app": app, "generation": generation, "pending": pending, "warnings": warnings })
                );
            } else {
                println!("deployed {app} (generation {generation})");
                for p in pending {
                    println!("  pending {}: {}", p.name, p.reason.unwrap_or_default());
                }
                for w in warnings {
                    eprintln!("  warning: {w}");
                }
            }
            Ok(())
        }
        other => bail!("unexpected answer: {other:?}"),
    }
}

pub async fn remove(client: ClientArgs, app: String) -> Result<()> {
    match client.call(ControlRequest::Remove { app }).await? {
        ControlResponse::Removed { app } => {
            println!("removed {app}");
            Ok(())
        }
        ControlResponse::NotFound { what } => bail!("no such app: {what}"),
        other => bail!("unexpected answer: {other:?}"),
    }
}

pub async fn fetch_ps(client: &ClientArgs) -> Result<Vec<PsEntry>> {
    match client.call(ControlRequest::Ps).await? {
        ControlResponse::Ps { processes } => Ok(processes),
        other => bail!("unexpected answer: {other:?}"),
    }
}

pub async fn fetch_nodes(client: &ClientArgs) -> Result<Vec<NodeEntry>> {
    match client.call(ControlRequest::Nodes).await? {
        ControlResponse::Nodes { nodes } => Ok(nodes),
        other => bail!("unexpected answer: {other:?}"),
    }
}

pub async fn ps(client: ClientArgs) -> Result<()> {
    let processes = fetch_ps(&client).await?;
    if client.json {
        println!("{}", serde_json::to_string_pretty(&processes)?);
    } else {
        print!("{}", ps_table(&processes));
    }
    Ok(())
}

pub fn ps_table(processes: &[PsEntry]) -> String {
    let mut out = format!(
        "{:<16} {:<12} {:<10} {:<9} {:>8} {:>6} {:>8}  {}\n",
        "APP", "PROCESS", "NODE", "STATE", "TICKS", "FAULTS", "RESTARTS", "OUTPUT_HASH"
    );
    for p in processes {
        out += &format!(
            "{:<16} {:<12} {:<10} {:<9} {:>8} {:>6} {:>8}  {}\n",
            p.app,
            p.name,
            p.node.as_deref().unwrap_or("-"),
            p.state,
            p.ticks,
            p.faults,
            p.restarts,
            p.output_hash.get(..16).unwrap_or(&p.output_hash)
        );
        if let Some(reason) = &p.reason {
            out += &format!("    └ {reason}\n");
        }
        if let Some(standby) = &p.standby {
            match &standby.node {
                Some(node) => out += &format!("    └ hot standby on {node} ({})", standby.state),
                None => {
                    out += &format!(
                        "    └ hot standby pending: {}",
                        standby.reason.as_deref().unwrap_or("no node")
                    )
                }
            }
            if let (Some(mine), Some(theirs)) = (&p.chain_mark, &standby.chain_mark)
                && mine.tag_ns == theirs.tag_ns
            {
                let same = if mine.output_hash == theirs.output_hash {
                    "same chain as the process"
                } else {
                    "chain DIFFERS from the process"
                };
                out += &format!(": {same} at {}s", mine.tag_ns / 1_000_000_000);
            }
            out += "\n";
        }
    }
    out
}

pub async fn nodes(client: ClientArgs) -> Result<()> {
    let nodes = fetch_nodes(&client).await?;
    if client.json {
        println!("{}", serde_json::to_string_pretty(&nodes)?);
    } else {
        print!("{}", nodes_table(&nodes));
    }
    Ok(())
}

pub fn nodes_table(nodes: &[NodeEntry]) -> String {
    let mut out = format!(
        "{:<10} {:>8} {:<9} {:<5} {:>5}  {:<28} {}\n",
        "NODE", "PID", "STATE", "RT", "PROCS", "LABELS", "DEVICES"
    );
    for n in nodes {
        let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out += &format!(
            "{:<10} {:>8} {:<9} {:<5} {:>5}  {:<28} {}\n",
            n.name,
            n.pid,
            n.state,
            n.rt_class,
            n.processes,
            labels.join(","),
            n.devices.join(",")
        );
    }
    out
}

pub async fn drain(client: ClientArgs, node: String) -> Result<()> {
    match client.call(ControlRequest::Drain { node }).await? {
        ControlResponse::Drained { node, moved } => {
            println!(
                "drained {node}; moving: {}",
                if moved.is_empty() {
                    "nothing".into()
                } else {
                    moved.join(", ")
                }
            );
            Ok(())
        }
        ControlResponse::NotFound { what } => bail!("no such node: {what}"),
        other => bail!("unexpected answer: {other:?}"),
    }
}

pub async fn logs(client: ClientArgs, target: String, duration: Option<Duration>) -> Result<()> {
    let (app, process) = target.split_once('/').context("write APP/PROCESS")?;
    let (session, keys) = client.session().await?;
    let subscriber = session
        .declare_subscriber(keys.log(app, process))
        .await
        .map_err(|e| anyhow::anyhow!("cannot subscribe: {e}"))?;
    eprintln!("following logs of {app}/{process}; Ctrl-C to stop");
    let deadline = duration.map(|d| tokio::time::Instant::now() + d);
    loop {
        let next = subscriber.recv_async();
        let sample = tokio::select! {
            s = next => s,
            _ = tokio::signal::ctrl_c() => break,
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break,
        };
        let Ok(sample) = sample else { break };
        println!("{}", String::from_utf8_lossy(&sample.payload().to_bytes()));
    }
    Ok(())
}
