//! `weft up`: a whole cluster on this machine. It starts a controller and N
//! node agents as separate OS processes, all on loopback, and deploys the
//! demo app. Ctrl-C stops all of it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use weft_client::LocalCluster;
use weft_client::cluster::NodeSpec;
use weft_fabric::session::DEFAULT_ENDPOINT;

use crate::cluster::{self, ClientArgs};
use crate::error::InputResult;
use crate::out::{out, outln};

#[derive(Args, Debug)]
pub struct UpArgs {
    /// How many node agents to start (the last one is a "cloud" node).
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// The controller's endpoint; nodes and CLI commands connect here.
    #[arg(long, default_value = DEFAULT_ENDPOINT)]
    listen: String,
    /// Do not deploy the demo app.
    #[arg(long)]
    no_demo: bool,
    /// The app to deploy.
    #[arg(long, default_value = "examples/cluster-cell.toml")]
    app: PathBuf,
    /// Where state and logs go (default: a fresh temporary directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The controller serves Prometheus metrics on 127.0.0.1 at this port,
    /// and node i at this port + i.
    #[arg(long, default_value_t = DEFAULT_METRICS_PORT)]
    metrics_port: u16,
    /// Serve no metrics.
    #[arg(long)]
    no_metrics: bool,
    /// Run the plant as a process of its own that speaks Modbus TCP at
    /// ADDR (`weft plant-sim`), and have the edge nodes reach it through a
    /// node config instead of simulating it (docs/devices.md).
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:5020")]
    modbus_plant: Option<SocketAddr>,
}

/// The controller's metrics port under `weft up` (nodes follow it).
const DEFAULT_METRICS_PORT: u16 = 9460;

/// How long the nodes have to join.
/// How long `weft up` waits for the demo's processes to run.
const DEMO_TIMEOUT: Duration = Duration::from_secs(60);
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Where component `i` (0: the controller, then the nodes) of `weft up`
/// serves its metrics. `up` has checked that every port fits.
fn metrics_addr(args: &UpArgs, i: usize) -> Option<SocketAddr> {
    let port = args.metrics_port + u16::try_from(i).expect("checked in up");
    (!args.no_metrics).then(|| SocketAddr::from(([127, 0, 0, 1], port)))
}

/// The nodes of an N-node cluster: edge nodes with the simulated plant,
/// and one cloud node.
fn node_roles(n: usize) -> Vec<NodeSpec> {
    (0..n)
        .map(|i| {
            if i + 1 == n && n > 1 {
                NodeSpec::new("cloud-1").label("tier", "cloud")
            } else {
                NodeSpec::new(&format!("edge-{}", i + 1))
                    .label("tier", "edge")
                    .label("zone", "line-1")
                    .device("plant")
            }
        })
        .collect()
}

pub async fn up(args: UpArgs) -> Result<()> {
    if args.nodes == 0 {
        return Err(anyhow::anyhow!("--nodes must be at least 1")).bad_input();
    }
    if !args.no_metrics && usize::from(args.metrics_port) + args.nodes > usize::from(u16::MAX) {
        return Err(anyhow::anyhow!(
            "--metrics-port {} leaves no room for {} nodes above it (ports up to 65535): pick a lower port or pass --no-metrics",
            args.metrics_port,
            args.nodes
        ))
        .bad_input();
    }
    if !args.no_demo && !args.app.is_file() {
        bail!(
            "{} not found: run `weft up` from the repository root, or pass --app or --no-demo",
            args.app.display()
        );
    }
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("weft-up-{}", std::process::id())),
    };
    let logs = data_dir.join("logs");
    let mut cluster = LocalCluster::new(std::env::current_exe()?, &logs)?
        .cluster("default")
        .endpoint(&args.listen)
        .graceful();
    if let Some(addr) = metrics_addr(&args, 0) {
        cluster = cluster.controller_metrics(addr);
    }
    eprintln!(
        "starting a controller and {} nodes (logs in {})…",
        args.nodes,
        logs.display()
    );
    cluster.start_controller()?;
    let plant_config = match args.modbus_plant {
        Some(addr) => {
            cluster.start_plant_sim(addr)?;
            let path = data_dir.join("plant.node.toml");
            std::fs::write(&path, weft_devices::plant_server::node_config(addr))
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!(
                "the plant runs as its own process, Modbus TCP on {addr}; edge nodes reach it through {}",
                path.display()
            );
            Some(path)
        }
        None => None,
    };
    let mut scraped = Vec::new();
    for (i, mut node) in node_roles(args.nodes).into_iter().enumerate() {
        if let Some(path) = plant_config.as_ref().filter(|_| !node.devices.is_empty()) {
            node.devices.clear();
            node = node.config(path);
        }
        if let Some(addr) = metrics_addr(&args, i + 1) {
            node = node.metrics(addr);
            scraped.push(format!(
                "  {:<12} http://{addr}/metrics",
                node.name.as_str()
            ));
        }
        cluster.start_node(&node)?;
    }
    if let Some(addr) = metrics_addr(&args, 0) {
        scraped.insert(0, format!("  {:<12} http://{addr}/metrics", "controller"));
    }
    cluster
        .wait_for_nodes(args.nodes, JOIN_TIMEOUT)
        .await
        .context("the cluster did not come up")?;
    let client = ClientArgs {
        cluster: "default".into(),
        connect: args.listen.clone(),
        json: false,
    };
    if !args.no_demo {
        eprintln!(
            "deploying {} and waiting for it to run…",
            args.app.display()
        );
        cluster::deploy(client.clone(), args.app.clone(), Some(DEMO_TIMEOUT)).await?;
    }
    let c = client.client().await?;
    let (nodes, ps) = (c.nodes().await?, c.ps().await?);
    c.close().await;
    out!("{}", cluster::nodes_table(&nodes));
    outln!();
    out!("{}", cluster::ps_table(&ps));
    if let Some(addr) = metrics_addr(&args, 0) {
        outln!("\nDashboard: http://{addr}/");
    }
    if !scraped.is_empty() {
        outln!(
            "\nPrometheus metrics (docs/observability.md):\n{}",
            scraped.join("\n")
        );
    }
    outln!(
        "\nThe cluster is up at {}. In another terminal:\n  weft ps            # where every process runs, its ticks and output hash\n  weft nodes         # the nodes, their pids and labels\n  weft logs cluster-cell/analytics\n  weft migrate cluster-cell/pid --to edge-3   # a live move: no missed tick\n  kill -9 <pid of pid's node>   # its hot standby takes over\n  weft top           # live task monitor\n  weft events -f     # what happens, as it happens\nCtrl-C here stops everything.",
        args.listen
    );
    tokio::signal::ctrl_c().await?;
    eprintln!("stopping…");
    drop(cluster);
    Ok(())
}
