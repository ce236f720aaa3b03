//! The long-running components: `weft node`, `weft controller` and
//! `weft router`, and where each joins the fabric.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use weft_fabric::session::DEFAULT_ENDPOINT;
use weft_fabric::{FabricConfig, Mode};
use weft_types::NodeName;

use crate::error::{BadInput, InputResult};

/// The most often `weft node --checkpoint-every` may checkpoint.
const MIN_CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

/// Where a component joins the fabric.
#[derive(Args, Debug, Clone)]
pub struct FabricArgs {
    /// Cluster name (the `weft/<cluster>/` key prefix).
    #[arg(long, default_value = "default", env = "WEFT_CLUSTER")]
    pub cluster: String,
    /// Endpoints to listen on, e.g. tcp/0.0.0.0:7447 (repeatable). A node
    /// without one listens on a free port: on loopback if it connects
    /// over loopback, else on every interface.
    #[arg(long)]
    pub listen: Vec<String>,
    /// Endpoints to connect to (repeatable). A node without one connects to
    /// tcp/127.0.0.1:7447.
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

#[derive(Args, Debug)]
pub struct NodeArgs {
    /// Unique node name: letters, digits, '-' and '_'.
    #[arg(long)]
    pub name: NodeName,
    /// Labels, k=v,k=v.
    #[arg(long, value_delimiter = ',')]
    pub labels: Vec<String>,
    #[command(flatten)]
    pub devices: crate::devices::DeviceArgs,
    /// Where to keep fetched modules.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Most processes (and replicas) this node runs. The kernel's
    /// vm.max_map_count bounds it (about 16,000 at the default 65,530), and
    /// so do the address space (about 65,000 at the default 256 MiB
    /// largest memory) and the machine's memory; a value they cannot hold
    /// is refused at start with the reason [default: half of what the
    /// mapping limit allows, or less if memory or address space are
    /// tighter]
    #[arg(long)]
    pub max_processes: Option<u32>,
    /// How often each process here is checkpointed (its state for restarts,
    /// standbys and moves elsewhere).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "500ms")]
    pub checkpoint_every: std::time::Duration,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9461
    /// (see docs/observability.md) [default: off]
    #[arg(long, value_name = "ADDR", value_parser = parse_metrics_addr)]
    pub metrics: Option<SocketAddr>,
    #[command(flatten)]
    pub fabric: FabricArgs,
}

fn parse_metrics_addr(text: &str) -> Result<SocketAddr, String> {
    weft_metrics::parse_addr(text).map_err(|e| e.to_string())
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

pub async fn node(mut args: NodeArgs) -> Result<()> {
    let fabric = &mut args.fabric;
    if fabric.connect.is_empty() {
        fabric.connect.push(DEFAULT_ENDPOINT.into());
    }
    if fabric.listen.is_empty() {
        let listen = default_node_listen(&fabric.connect);
        tracing::info!(
            listen,
            "no --listen given: listening on a free port for the other nodes"
        );
        fabric.listen.push(listen.into());
    }
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("weft-node-{}", args.name)));
    if args.checkpoint_every < MIN_CHECKPOINT_EVERY {
        return Err(BadInput(anyhow::anyhow!(
            "--checkpoint-every {:?} is too often: at least {MIN_CHECKPOINT_EVERY:?}",
            args.checkpoint_every
        ))
        .into());
    }
    let config = weft_agent::AgentConfig::new(args.name.clone(), data_dir)
        .labels(parse_labels(&args.labels).bad_input()?)
        .devices(args.devices.node_config()?)
        .checkpoint_every(args.checkpoint_every)
        .fabric(args.fabric.config(Mode::Peer));
    let config = match args.max_processes {
        Some(n) => config.max_processes(n),
        None => config,
    };
    let config = match args.metrics {
        Some(addr) => config.metrics(addr),
        None => config,
    };
    weft_agent::run(config).await
}

/// Where a node listens when not told: on a free port, so that the nodes
/// it exchanges port traffic with can connect to it (peers learn each
/// other's endpoints by gossip; a node that listens nowhere can send to
/// others but never receive from them). Only on loopback when it reaches
/// the controller over loopback: the cluster is then this one machine.
fn default_node_listen(connect: &[String]) -> &'static str {
    if connect.iter().all(|e| is_loopback_endpoint(e)) {
        "tcp/127.0.0.1:0"
    } else {
        "tcp/0.0.0.0:0"
    }
}

/// Whether a Zenoh endpoint (`tcp/HOST:PORT`, perhaps with `#config`)
/// names this machine's loopback.
fn is_loopback_endpoint(endpoint: &str) -> bool {
    let address = endpoint.split('#').next().unwrap_or_default();
    let Some((_, address)) = address.split_once('/') else {
        return false;
    };
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[derive(Args, Debug)]
pub struct ControllerArgs {
    /// Where the controller keeps its state (controller.redb).
    #[arg(long, default_value = ".weft/controller")]
    pub data_dir: PathBuf,
    /// Serve Prometheus metrics at http://ADDR/metrics and the web
    /// dashboard at http://ADDR/, e.g. 127.0.0.1:9460 (see
    /// docs/observability.md) [default: off]
    #[arg(long, value_name = "ADDR", value_parser = parse_metrics_addr)]
    pub metrics: Option<SocketAddr>,
    #[command(flatten)]
    pub fabric: FabricArgs,
}

pub async fn controller(mut args: ControllerArgs) -> Result<()> {
    if args.fabric.listen.is_empty() {
        args.fabric.listen.push(DEFAULT_ENDPOINT.into());
    }
    let mut config =
        weft_controller::ControllerConfig::new(&args.data_dir, args.fabric.config(Mode::Peer));
    config.metrics = args.metrics;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_listens_on_loopback_only_when_its_cluster_is_this_machine() {
        let cases: &[(&[&str], &str)] = &[
            (&["tcp/127.0.0.1:7447"], "tcp/127.0.0.1:0"),
            (&["tcp/localhost:7447"], "tcp/127.0.0.1:0"),
            (&["tcp/[::1]:7447"], "tcp/127.0.0.1:0"),
            (&["tcp/127.0.0.1:7447#iface=lo"], "tcp/127.0.0.1:0"),
            (&["tcp/10.0.0.5:7447"], "tcp/0.0.0.0:0"),
            (
                &["tcp/127.0.0.1:7447", "tcp/ctl.plant:7447"],
                "tcp/0.0.0.0:0",
            ),
            (&["udp/192.168.1.2:7447"], "tcp/0.0.0.0:0"),
        ];
        for (connect, want) in cases {
            let connect: Vec<String> = connect.iter().map(|e| e.to_string()).collect();
            assert_eq!(default_node_listen(&connect), *want, "{connect:?}");
        }
    }
}
