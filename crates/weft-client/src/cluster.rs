//! A cluster of real OS processes on this machine: a controller and node
//! agents, each the `weft` binary, on loopback, each with its log file in
//! the cluster's directory. `weft up` runs one for a user; the tests and
//! `weft bench` run theirs (and kill their parts for real).
//!
//! Every child is stopped and reaped when the cluster is dropped, however
//! the caller ends: gracefully (SIGINT, so nodes stop their processes at a
//! call boundary) for `weft up`, or with SIGKILL.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use weft_types::NodeName;

use crate::{Client, ClientError};

/// How long a gracefully stopped child has before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A TCP port on loopback that nothing listens on right now. Another
/// program may take it before the child binds it; a child that then fails
/// to start says so in its log.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// One node to start.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: NodeName,
    pub labels: Vec<(String, String)>,
    /// Simulated devices it offers.
    pub devices: Vec<String>,
    /// Its node config (`--config`): real devices.
    pub config: Option<PathBuf>,
    pub max_processes: Option<u32>,
    /// How often it checkpoints its processes (the node's default if unset).
    pub checkpoint_every: Option<std::time::Duration>,
    /// Where it serves `/metrics` (nowhere if unset).
    pub metrics: Option<std::net::SocketAddr>,
}

impl NodeSpec {
    pub fn new(name: &str) -> NodeSpec {
        NodeSpec {
            name: name.parse().expect("a valid node name"),
            labels: Vec::new(),
            devices: Vec::new(),
            config: None,
            max_processes: None,
            checkpoint_every: None,
            metrics: None,
        }
    }
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.push((key.into(), value.into()));
        self
    }
    pub fn device(mut self, name: &str) -> Self {
        self.devices.push(name.into());
        self
    }
    pub fn config(mut self, path: &Path) -> Self {
        self.config = Some(path.into());
        self
    }
    pub fn max_processes(mut self, n: u32) -> Self {
        self.max_processes = Some(n);
        self
    }
    pub fn checkpoint_every(mut self, every: std::time::Duration) -> Self {
        self.checkpoint_every = Some(every);
        self
    }
    pub fn metrics(mut self, addr: std::net::SocketAddr) -> Self {
        self.metrics = Some(addr);
        self
    }
}

/// The processes of one local cluster.
pub struct LocalCluster {
    bin: PathBuf,
    dir: PathBuf,
    cluster: String,
    endpoint: String,
    graceful: bool,
    controller_metrics: Option<std::net::SocketAddr>,
    controller: Option<Child>,
    nodes: BTreeMap<NodeName, Child>,
    /// Devices run as processes of their own (`weft plant-sim`).
    devices: Vec<(String, Child)>,
}

impl LocalCluster {
    /// A cluster run by the `weft` binary `bin`, keeping state and logs in
    /// `dir`, with a cluster name and a controller endpoint of its own.
    pub fn new(bin: impl Into<PathBuf>, dir: impl Into<PathBuf>) -> Result<LocalCluster> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(LocalCluster {
            bin: bin.into(),
            dir,
            cluster: format!("c{}", free_port()?),
            endpoint: format!("tcp/127.0.0.1:{}", free_port()?),
            graceful: false,
            controller_metrics: None,
            controller: None,
            nodes: BTreeMap::new(),
            devices: Vec::new(),
        })
    }

    pub fn cluster(mut self, name: &str) -> Self {
        self.cluster = name.to_string();
        self
    }

    /// The controller's endpoint (nodes and clients connect there).
    pub fn endpoint(mut self, endpoint: &str) -> Self {
        self.endpoint = endpoint.to_string();
        self
    }

    /// Stop children with SIGINT (then SIGKILL after a grace) on drop.
    pub fn graceful(mut self) -> Self {
        self.graceful = true;
        self
    }

    /// Where the controller serves `/metrics` (nowhere if unset).
    pub fn controller_metrics(mut self, addr: std::net::SocketAddr) -> Self {
        self.controller_metrics = Some(addr);
        self
    }

    pub fn cluster_name(&self) -> &str {
        &self.cluster
    }

    pub fn endpoint_str(&self) -> &str {
        &self.endpoint
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    /// A component's whole log so far.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.log_path(name)).unwrap_or_default()
    }

    /// The last `lines` lines of a component's log, for error messages.
    pub fn tail(&self, name: &str, lines: usize) -> String {
        let text = self.log(name);
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn spawn(&self, name: &str, args: &[String]) -> Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(name))
            .with_context(|| format!("cannot open the log of {name}"))?;
        Command::new(&self.bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {name} ({})", self.bin.display()))
    }

    /// Starts (or restarts) the controller.
    pub fn start_controller(&mut self) -> Result<()> {
        let mut args = vec![
            "controller".into(),
            "--cluster".into(),
            self.cluster.clone(),
            "--listen".into(),
            self.endpoint.clone(),
            "--data-dir".into(),
            self.dir.join("controller").display().to_string(),
        ];
        if let Some(addr) = self.controller_metrics {
            args.extend(["--metrics".into(), addr.to_string()]);
        }
        self.controller = Some(self.spawn("controller", &args)?);
        Ok(())
    }

    pub fn start_node(&mut self, node: &NodeSpec) -> Result<()> {
        let name = node.name.as_str();
        let mut args = vec![
            "node".to_string(),
            "--cluster".into(),
            self.cluster.clone(),
            "--name".into(),
            name.into(),
            // No --listen: a node picks a free port itself, as it does for
            // a user who starts one by hand.
            "--connect".into(),
            self.endpoint.clone(),
            "--data-dir".into(),
            self.dir.join(name).display().to_string(),
        ];
        if !node.labels.is_empty() {
            let labels: Vec<String> = node
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            args.extend(["--labels".into(), labels.join(",")]);
        }
        if let Some(config) = &node.config {
            args.extend(["--config".into(), config.display().to_string()]);
        }
        for device in &node.devices {
            args.extend(["--device".into(), device.clone()]);
        }
        if let Some(n) = node.max_processes {
            args.extend(["--max-processes".into(), n.to_string()]);
        }
        if let Some(every) = node.checkpoint_every {
            args.extend([
                "--checkpoint-every".into(),
                format!("{}ms", every.as_millis()),
            ]);
        }
        if let Some(addr) = node.metrics {
            args.extend(["--metrics".into(), addr.to_string()]);
        }
        let child = self.spawn(name, &args)?;
        self.nodes.insert(node.name.clone(), child);
        Ok(())
    }

    /// Starts `weft plant-sim`, a thermal plant speaking Modbus TCP on
    /// `listen`; its log is `plant-sim`'s.
    pub fn start_plant_sim(&mut self, listen: std::net::SocketAddr) -> Result<()> {
        let args = ["plant-sim".into(), "--listen".into(), listen.to_string()];
        let child = self.spawn("plant-sim", &args)?;
        self.devices.push(("plant-sim".into(), child));
        Ok(())
    }

    pub fn controller_pid(&self) -> Option<u32> {
        self.controller.as_ref().map(Child::id)
    }

    pub fn node_pid(&self, name: &str) -> Option<u32> {
        self.nodes.get(name).map(Child::id)
    }

    pub fn node_names(&self) -> Vec<NodeName> {
        self.nodes.keys().cloned().collect()
    }

    /// Sends `signal` to a node (SIGSTOP, SIGCONT, …).
    pub fn signal_node(&self, name: &str, signal: i32) -> Result<()> {
        let child = self
            .nodes
            .get(name)
            .with_context(|| format!("no node {name:?}"))?;
        send(child, signal).with_context(|| format!("cannot signal node {name}"))
    }

    /// Kills a node with SIGKILL and reaps it.
    pub fn kill_node(&mut self, name: &str) {
        if let Some(mut child) = self.nodes.remove(name) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the controller with SIGKILL and reaps it.
    pub fn kill_controller(&mut self) {
        if let Some(mut child) = self.controller.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A part that has exited, if any: its name and status.
    pub fn exited(&mut self) -> Option<(String, ExitStatus)> {
        let controller = self
            .controller
            .iter_mut()
            .map(|c| ("controller".to_string(), c));
        let nodes = self.nodes.iter_mut().map(|(n, c)| (n.to_string(), c));
        let devices = self.devices.iter_mut().map(|(n, c)| (n.clone(), c));
        for (name, child) in controller.chain(nodes).chain(devices) {
            if let Ok(Some(status)) = child.try_wait() {
                return Some((name, status));
            }
        }
        None
    }

    /// A client of this cluster.
    pub async fn client(&self) -> Result<Client, ClientError> {
        Client::connect(&self.cluster, &self.endpoint).await
    }

    /// Waits until `n` nodes are alive, failing early if a part exits.
    pub async fn wait_for_nodes(&mut self, n: usize, timeout: Duration) -> Result<()> {
        let end = Instant::now() + timeout;
        loop {
            if let Some((name, status)) = self.exited() {
                bail!(
                    "{name} exited during start-up ({status}):\n{}",
                    self.tail(&name, 8)
                );
            }
            if let Ok(client) = self.client().await {
                let alive = client.nodes().await.map_or(0, |nodes| {
                    nodes
                        .iter()
                        .filter(|n| n.state == weft_types::NodeState::Alive)
                        .count()
                });
                client.close().await;
                if alive >= n {
                    return Ok(());
                }
            }
            if Instant::now() > end {
                bail!(
                    "{n} nodes did not join within {timeout:?}; see the logs in {}",
                    self.dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn send(child: &Child, signal: i32) -> Result<()> {
    // SAFETY: signalling our own child, which has not been reaped.
    if unsafe { libc::kill(child.id() as i32, signal) } != 0 {
        bail!("{}", std::io::Error::last_os_error());
    }
    Ok(())
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let mut children: Vec<(String, Child)> = std::mem::take(&mut self.nodes)
            .into_iter()
            .map(|(n, c)| (n.to_string(), c))
            .chain(
                self.controller
                    .take()
                    .map(|c| ("controller".to_string(), c)),
            )
            .chain(std::mem::take(&mut self.devices))
            .collect();
        if self.graceful {
            for (_, child) in &children {
                let _ = send(child, libc::SIGINT);
            }
            let end = Instant::now() + STOP_GRACE;
            for (name, child) in &mut children {
                while Instant::now() < end && matches!(child.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if matches!(child.try_wait(), Ok(None)) {
                    eprintln!("{name} did not stop in time; killing it");
                }
            }
        }
        for (_, child) in &mut children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
