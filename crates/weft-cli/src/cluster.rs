//! The client commands, which talk to the controller over the fabric:
//! `deploy`, `rm`, `ps`, `nodes`, `logs`, `drain`, `undrain`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, anyhow};
use clap::Args;
use weft_client::Client;
use weft_fabric::proto::{NodeEntry, PsEntry};
use weft_fabric::session::DEFAULT_ENDPOINT;
use weft_types::{AppName, LinkState, NodeName, ProcessRef};

use crate::error::InputResult;
use crate::out::{out, outln};

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
    pub async fn client(&self) -> Result<Client> {
        Ok(Client::connect(&self.cluster, &self.connect).await?)
    }

    /// Runs `f` with a client, closing it afterwards either way.
    async fn with<T>(&self, f: impl AsyncFnOnce(&Client) -> Result<T>) -> Result<T> {
        let client = self.client().await?;
        let result = f(&client).await;
        client.close().await;
        result
    }
}

/// Deploys the app at `path`; with `wait`, then waits that long for its
/// processes to run, saying how far it got on stderr as the counts change.
pub async fn deploy(client: ClientArgs, path: PathBuf, wait: Option<Duration>) -> Result<()> {
    let bundle = weft_client::bundle(&path).bad_input()?;
    let (deployed, progress) = client
        .with(async |c| {
            let deployed = c.deploy(&bundle).await?;
            let Some(timeout) = wait else {
                return Ok((deployed, None));
            };
            let (app, generation) = (&deployed.app, deployed.generation);
            let report = |p: &weft_client::Progress| eprintln!("  {app}: {p}");
            let progress = c.wait_deployed(app, generation, timeout, report).await?;
            Ok((deployed, Some(progress)))
        })
        .await?;
    if client.json {
        let value = serde_json::json!({
            "app": deployed.app,
            "generation": deployed.generation,
            "pending": deployed.pending,
            "warnings": deployed.warnings,
            "running": progress.as_ref().map(|p| p.running),
            "total": progress.as_ref().map(|p| p.total),
        });
        outln!("{value}");
        return Ok(());
    }
    outln!(
        "deployed {} (generation {})",
        deployed.app,
        deployed.generation
    );
    if let Some(p) = &progress {
        outln!("  {p}");
    }
    for p in deployed.pending {
        outln!(
            "  pending {}: {}",
            p.status.name,
            p.status.reason.unwrap_or_default()
        );
    }
    for w in deployed.warnings {
        eprintln!("  warning: {w}");
    }
    Ok(())
}

pub async fn remove(client: ClientArgs, app: AppName) -> Result<()> {
    let app = client.with(async |c| Ok(c.remove(app).await?)).await?;
    outln!("removed {app}");
    Ok(())
}

pub async fn ps(client: ClientArgs) -> Result<()> {
    let processes = client.with(async |c| Ok(c.ps().await?)).await?;
    if client.json {
        outln!("{}", serde_json::to_string_pretty(&processes)?);
    } else {
        out!("{}", ps_table(&processes));
    }
    Ok(())
}

pub fn ps_table(processes: &[PsEntry]) -> String {
    let mut out = format!(
        "{:<16} {:<12} {:<10} {:<9} {:>8} {:>8} {:>6} {:>8}  {}\n",
        "APP", "PROCESS", "NODE", "STATE", "TICKS", "MSGS", "FAULTS", "RESTARTS", "OUTPUT_HASH"
    );
    for p in processes {
        let s = &p.status;
        out += &format!(
            "{:<16} {:<12} {:<10} {:<9} {:>8} {:>8} {:>6} {:>8}  {}\n",
            s.app,
            s.name,
            p.node.as_ref().map_or("-", NodeName::as_str),
            s.state,
            s.ticks,
            s.messages_in,
            s.faults,
            s.restarts,
            s.output_hash.get(..16).unwrap_or(&s.output_hash)
        );
        if let Some(reason) = &s.reason {
            out += &format!("    └ {reason}\n");
        }
        if let Some(standby) = &p.standby {
            out += &standby_line(p, standby);
        }
    }
    out
}

fn standby_line(p: &PsEntry, standby: &weft_fabric::proto::StandbyEntry) -> String {
    let mut line = match &standby.node {
        Some(node) => format!("    └ hot standby on {node} ({})", standby.state),
        None => format!(
            "    └ hot standby pending: {}",
            standby.reason.as_deref().unwrap_or("no node")
        ),
    };
    if let (Some(mine), Some(theirs)) = (&p.status.chain_mark, &standby.chain_mark)
        && mine.tag_ns == theirs.tag_ns
    {
        let same = if mine.output_hash == theirs.output_hash {
            "same chain as the process"
        } else {
            "chain DIFFERS from the process"
        };
        line += &format!(": {same} at {}s", mine.tag_ns / 1_000_000_000);
    }
    line + "\n"
}

pub async fn nodes(client: ClientArgs) -> Result<()> {
    let nodes = client.with(async |c| Ok(c.nodes().await?)).await?;
    if client.json {
        outln!("{}", serde_json::to_string_pretty(&nodes)?);
    } else {
        out!("{}", nodes_table(&nodes));
    }
    Ok(())
}

pub fn nodes_table(nodes: &[NodeEntry]) -> String {
    let mut out = format!(
        "{:<10} {:>8} {:<9} {:<7} {:<14} {:>5}  {:<28} {}\n",
        "NODE", "PID", "STATE", "RT", "DIRTY-PAGES", "PROCS", "LABELS", "DEVICES"
    );
    for n in nodes {
        let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out += &format!(
            "{:<10} {:>8} {:<9} {:<7} {:<14} {:>5}  {:<28} {}\n",
            n.name,
            n.pid,
            n.state,
            n.rt_class.map_or("unknown".to_string(), |c| c.to_string()),
            n.dirty_tracking
                .map_or("unknown".to_string(), |d| d.to_string()),
            n.processes,
            labels.join(","),
            n.device_list().join(",")
        );
    }
    let troubled: Vec<String> = nodes
        .iter()
        .flat_map(|n| n.device_reports.iter().map(move |d| (n, d)))
        .filter(|(_, d)| !matches!(d.state, LinkState::Connected | LinkState::Simulated))
        .map(|(n, d)| {
            format!(
                "  {}/{} ({}): {}{}; {} reconnects, {} timeouts\n",
                n.name,
                d.name,
                d.kind,
                d.state,
                d.last_error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default(),
                d.reconnects,
                d.timeouts
            )
        })
        .collect();
    if !troubled.is_empty() {
        out += "devices not connected:\n";
        out += &troubled.concat();
    }
    out
}

pub async fn drain(client: ClientArgs, node: NodeName) -> Result<()> {
    let moved = client
        .with(async |c| Ok(c.drain(node.clone()).await?))
        .await?;
    let moved: Vec<String> = moved.iter().map(ProcessRef::to_string).collect();
    outln!(
        "drained {node}; moving: {}",
        if moved.is_empty() {
            "nothing".to_string()
        } else {
            moved.join(", ")
        }
    );
    Ok(())
}

pub async fn undrain(client: ClientArgs, node: NodeName) -> Result<()> {
    client
        .with(async |c| Ok(c.undrain(node.clone()).await?))
        .await?;
    outln!("{node} takes processes again (what moved away stays where it is)");
    Ok(())
}

pub async fn logs(
    client: ClientArgs,
    target: ProcessRef,
    duration: Option<Duration>,
) -> Result<()> {
    let c = client.client().await?;
    let subscriber = c
        .session()
        .declare_subscriber(c.keys().log(&target.app, &target.process))
        .await
        .map_err(|e| anyhow!("cannot subscribe: {e}"))?;
    eprintln!("following logs of {target}; Ctrl-C to stop");
    let deadline = duration.map(|d| tokio::time::Instant::now() + d);
    let result = async {
        loop {
            let next = subscriber.recv_async();
            let sample = tokio::select! {
                s = next => s,
                _ = tokio::signal::ctrl_c() => return Ok(()),
                _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => return Ok(()),
            };
            let Ok(sample) = sample else { return Ok(()) };
            outln!("{}", String::from_utf8_lossy(&sample.payload().to_bytes()));
        }
    }
    .await;
    drop(subscriber);
    c.close().await;
    result
}
