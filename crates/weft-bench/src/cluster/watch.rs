//! A client session's view of a real local cluster (node liveliness and
//! statuses, timestamped on arrival), and starting such a cluster from the
//! `weft` binary running this benchmark.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use tokio::sync::mpsc;
use weft_client::cluster::NodeSpec;
use weft_client::{Client, LocalCluster};
use weft_fabric::Keys;
use weft_fabric::codec::{self, DeployBundle};
use weft_fabric::proto::NodeStatus;
use weft_types::{NodeName, ProcessState};
use zenoh::sample::SampleKind;

use super::zerr;
use crate::Ctx;

/// What the watching session saw.
pub(crate) enum Event {
    Alive(NodeName, bool),
    Status(Box<NodeStatus>),
}

/// A client session's view of the cluster: liveliness and statuses, each
/// event timestamped in the Zenoh callback that received it.
pub(crate) struct Watch {
    pub(crate) client: Client,
    rx: mpsc::UnboundedReceiver<(Instant, Event)>,
    pub(crate) alive: BTreeSet<NodeName>,
    pub(crate) status: HashMap<NodeName, NodeStatus>,
    _subscribers: Vec<zenoh::pubsub::Subscriber<()>>,
}

impl Watch {
    async fn open(cluster: &LocalCluster) -> Result<Watch> {
        let start = Instant::now();
        let client = loop {
            match cluster.client().await {
                Ok(c) => break c,
                Err(e) if start.elapsed() > Duration::from_secs(15) => {
                    return Err(anyhow::Error::from(e).context(format!(
                        "the controller did not come up; its log ends:\n{}",
                        cluster.tail("controller", 8)
                    )));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        let (session, keys) = (client.session().clone(), client.keys().clone());
        let (tx, rx) = mpsc::unbounded_channel();
        let (liveliness_tx, liveliness_keys) = (tx.clone(), keys.clone());
        let alive = session
            .liveliness()
            .declare_subscriber(keys.all_nodes_alive())
            .history(true)
            .callback(move |sample| {
                let t = Instant::now();
                if let Some(node) = liveliness_keys.node_of(sample.key_expr().as_str()) {
                    let up = sample.kind() == SampleKind::Put;
                    let _ = liveliness_tx.send((t, Event::Alive(node, up)));
                }
            })
            .await
            .map_err(zerr)?;
        let status = session
            .declare_subscriber(keys.all_node_status())
            .callback(move |sample| {
                let t = Instant::now();
                if let Ok(s) = codec::decode::<NodeStatus>(&sample.payload().to_bytes()) {
                    let _ = tx.send((t, Event::Status(Box::new(s))));
                }
            })
            .await
            .map_err(zerr)?;
        Ok(Watch {
            client,
            rx,
            alive: BTreeSet::new(),
            status: HashMap::new(),
            _subscribers: vec![alive, status],
        })
    }

    /// Takes events until `done` holds after one of them; returns its time.
    pub(crate) async fn until(
        &mut self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&Watch, Instant, &Event) -> bool,
    ) -> Result<Instant> {
        let end = tokio::time::Instant::now() + timeout;
        loop {
            let (t, event) = tokio::time::timeout_at(end, self.rx.recv())
                .await
                .map_err(|_| anyhow!("timed out after {timeout:?} waiting for {what}"))?
                .context("the watching session closed")?;
            match &event {
                Event::Alive(node, true) => {
                    self.alive.insert(node.clone());
                }
                Event::Alive(node, false) => {
                    self.alive.remove(node);
                    self.status.remove(node);
                }
                Event::Status(s) => {
                    // Statuses are deltas: the view is what they add up to.
                    let mut view = self.status.remove(&s.name);
                    if let Err(gap) = NodeStatus::apply(&mut view, (**s).clone()) {
                        tracing::debug!("{gap}");
                    }
                    self.status.extend(view.map(|v| (v.name.clone(), v)));
                }
            }
            if done(self, t, &event) {
                return Ok(t);
            }
        }
    }

    /// Whether the view of `node` (its statuses added up) runs
    /// `process` of `app`.
    pub(crate) fn runs(&self, node: &NodeName, app: &str, process: &str) -> bool {
        self.status.get(node).is_some_and(|s| runs(s, app, process))
    }

    /// How many processes of `app` alive nodes last reported running.
    pub(crate) fn running(&self, app: &str) -> usize {
        self.status
            .iter()
            .filter(|(n, _)| self.alive.contains(*n))
            .flat_map(|(_, s)| &s.processes)
            .filter(|p| p.app == app && p.state == ProcessState::Running)
            .count()
    }

    /// How many processes of `app` any node still lists, in any state.
    pub(crate) fn listed(&self, app: &str) -> usize {
        self.status
            .values()
            .flat_map(|s| &s.processes)
            .filter(|p| p.app == app)
            .count()
    }

    pub(crate) async fn deploy(&self, bundle: &DeployBundle) -> Result<()> {
        self.client.deploy(bundle).await?;
        Ok(())
    }

    pub(crate) async fn remove(&self, app: &str) -> Result<()> {
        self.client.remove(app.parse()?).await?;
        Ok(())
    }

    pub(crate) fn session(&self) -> &zenoh::Session {
        self.client.session()
    }

    pub(crate) fn keys(&self) -> &Keys {
        self.client.keys()
    }

    /// Removes `app` and waits until no node lists it.
    pub(crate) async fn remove_and_wait(&mut self, app: &str) -> Result<()> {
        self.remove(app).await?;
        self.until(
            &format!("{app} removed"),
            Duration::from_secs(60),
            |w, _, _| w.listed(app) == 0,
        )
        .await?;
        Ok(())
    }
}

pub(crate) fn runs(s: &NodeStatus, app: &str, process: &str) -> bool {
    s.processes
        .iter()
        .any(|p| p.app == app && p.name == process && p.state == ProcessState::Running)
}

fn weft_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let is_weft = exe
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n == "weft");
    if !is_weft {
        bail!(
            "this benchmark starts a controller and nodes with the weft binary; run it as `weft bench` (running as {})",
            exe.display()
        );
    }
    Ok(exe)
}

/// A controller and `nodes` (each taking up to `max_processes`), started
/// under `dir` in the scratch directory, all alive and reporting.
pub(crate) async fn start_cluster(
    ctx: &Ctx,
    dir: &str,
    max_processes: u32,
    nodes: &[&str],
) -> Result<(LocalCluster, Watch)> {
    let specs: Vec<NodeSpec> = nodes
        .iter()
        .map(|n| NodeSpec::new(n).max_processes(max_processes))
        .collect();
    start_cluster_of(ctx, dir, &specs).await
}

/// A controller and the nodes `specs`, once every node is alive and has
/// reported its status.
pub(crate) async fn start_cluster_of(
    ctx: &Ctx,
    dir: &str,
    specs: &[NodeSpec],
) -> Result<(LocalCluster, Watch)> {
    let bin = weft_binary()?;
    let mut cluster = LocalCluster::new(bin, ctx.scratch.path().join(dir))?;
    cluster.start_controller()?;
    let mut watch = Watch::open(&cluster).await?;
    for node in specs {
        cluster.start_node(node)?;
    }
    let names: Vec<String> = specs.iter().map(|s| s.name.to_string()).collect();
    watch
        .until(
            &format!("nodes {} alive and reporting", names.join(", ")),
            Duration::from_secs(30),
            |w, _, _| {
                specs
                    .iter()
                    .all(|s| w.alive.contains(&s.name) && w.status.contains_key(&s.name))
            },
        )
        .await
        .with_context(|| {
            format!(
                "node {}'s log ends:\n{}",
                names[0],
                cluster.tail(&names[0], 8)
            )
        })?;
    Ok((cluster, watch))
}
