//! Cluster figures: cross-node port latency against raw Zenoh, failure
//! detection and recovery of a real cluster (`kill -9` and `SIGSTOP` of a
//! node), and the time to deploy apps of 1, 100 and 1,000 processes.
//!
//! The latency figure runs two Zenoh peer sessions in this process, joined
//! over TCP on loopback, and ping-pongs one message (no clock is shared
//! between two machines, so the figure is half the round trip). The other
//! figures start a controller and two nodes as real OS processes (the
//! `weft` binary running this benchmark) and watch them from a client
//! session: node liveliness (a `Delete` marks a death) and node statuses
//! (which processes run where), each event timestamped on arrival.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use sha2::Digest;
use tokio::sync::mpsc;
use weft_fabric::codec::{self, PortMessage};
use weft_fabric::proto::{Blob, ControlRequest, ControlResponse, NodeStatus};
use weft_fabric::{FabricConfig, Keys, Mode};
use weft_runtime::Tag;
use weft_runtime::ports::{Inbox, Output, Router};
use zenoh::Wait;
use zenoh::sample::SampleKind;

use crate::modules::TINY;
use crate::stats::{Figure, Goal, Stat, Summary, Unit, histogram, record};
use crate::{Ctx, progress};

pub fn cluster(ctx: &Ctx) -> Result<Vec<Figure>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut figures = Vec::new();
    match runtime.block_on(port_latency(ctx)) {
        Ok(f) => figures.push(f),
        Err(e) => {
            eprintln!("[bench]   cross-node port latency failed: {e:#}");
            figures.push(Figure::skipped(
                "cross-node-port-latency",
                "Cross-node port latency vs raw Zenoh",
                Unit::Nanoseconds,
                "median ≤ 1.3× raw Zenoh",
                format!("failed: {e:#}"),
            ));
        }
    }
    figures.extend(runtime.block_on(real_cluster(ctx)));
    for f in &figures {
        progress(f);
    }
    Ok(figures)
}

pub(crate) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn zerr(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("{e}")
}

// ---------------------------------------------------------------------------
// Cross-node port latency.

const APP: &str = "app";
/// Port handles of the one-input, one-output processes (inputs come first).
const IN: i32 = 0;
const OUT: i32 = 1;

/// weft's sending half, as the agent's `Outbox`: the publishing thread hands
/// the encoded message to an unbounded channel, one task performs the puts.
fn outbox(session: zenoh::Session) -> mpsc::UnboundedSender<(String, Vec<u8>)> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, Vec<u8>)>();
    tokio::spawn(async move {
        while let Some((key, payload)) = rx.recv().await {
            if let Err(e) = session.put(&key, payload).await {
                tracing::warn!(key = %key, "cannot publish: {e}");
            }
        }
    });
    tx
}

/// A process's side of the remote delivery path: a router with one route
/// from `sender`'s output into `inbox`, as `RemoteInlet::deliver` uses it.
fn inlet(sender: &str, receiver: &str) -> (Router, Arc<Inbox>) {
    let inbox = Arc::new(Inbox::new(64));
    let mut router = Router::default();
    router.connect(sender, OUT, receiver, inbox.clone(), IN, Duration::ZERO);
    (router, inbox)
}

async fn port_latency(ctx: &Ctx) -> Result<Figure> {
    let iters: u64 = if ctx.quick { 2_000 } else { 10_000 };
    let cluster = format!("bench{}", std::process::id());
    let keys = Keys::new(&cluster);
    let endpoint = format!("tcp/127.0.0.1:{}", free_port()?);
    let a = FabricConfig::default()
        .cluster(&cluster)
        .listen([endpoint.clone()])
        .open()
        .await?;
    let b = FabricConfig::default()
        .cluster(&cluster)
        .connect([endpoint])
        .open()
        .await?;

    // weft: p (session a) publishes on port/app/p/o; q (session b) receives
    // it into its inbox and answers on port/app/q/o; p receives the answer
    // into its own inbox.
    let ping_key = keys.port(APP, "p", "o");
    let pong_key = keys.port(APP, "q", "o");
    let (router_q, inbox_q) = inlet("p", "q");
    let out_q = outbox(b.clone());
    let echo_key = pong_key.clone();
    let sub_q = b
        .declare_subscriber(&ping_key)
        .callback(move |sample| {
            let Ok(m) = PortMessage::decode(&sample.payload().to_bytes()) else {
                return;
            };
            if m.source != "p" {
                return;
            }
            let output = Output {
                port: OUT,
                payload: m.payload,
            };
            router_q.deliver_local("p", Tag(m.tag), m.seq, &output);
            if let Some(msg) = inbox_q.pop_next() {
                let echo = PortMessage {
                    tag: msg.key.tag.0,
                    seq: msg.key.seq,
                    source: "q".into(),
                    payload: msg.payload,
                };
                let _ = out_q.send((echo_key.clone(), echo.encode()));
            }
        })
        .await
        .map_err(zerr)?;
    let (router_p, inbox_p) = inlet("q", "p");
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel::<()>();
    let sub_p = a
        .declare_subscriber(&pong_key)
        .callback(move |sample| {
            let Ok(m) = PortMessage::decode(&sample.payload().to_bytes()) else {
                return;
            };
            if m.source != "q" {
                return;
            }
            let output = Output {
                port: OUT,
                payload: m.payload,
            };
            router_p.deliver_local("q", Tag(m.tag), m.seq, &output);
            let _ = arrived_tx.send(());
        })
        .await
        .map_err(zerr)?;
    let out_p = outbox(a.clone());

    // Raw Zenoh: the same 8 payload bytes put on one key and put back
    // unchanged on another from the subscriber's callback.
    let raw_ping = format!("weft/{cluster}/raw/ping");
    let raw_pong = format!("weft/{cluster}/raw/pong");
    let b2 = b.clone();
    let raw_echo_key = raw_pong.clone();
    let raw_sub_b = b
        .declare_subscriber(&raw_ping)
        .callback(move |sample| {
            let _ = b2
                .put(&raw_echo_key, sample.payload().to_bytes().to_vec())
                .wait();
        })
        .await
        .map_err(zerr)?;
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let raw_sub_a = a
        .declare_subscriber(&raw_pong)
        .callback(move |sample| {
            let _ = raw_tx.send(sample.payload().to_bytes().to_vec());
        })
        .await
        .map_err(zerr)?;

    let wait = Duration::from_millis(200);
    let mut weft_once = async |seq: u64| -> Result<Option<Duration>> {
        let m = PortMessage {
            tag: seq,
            seq,
            source: "p".into(),
            payload: seq.to_le_bytes().to_vec(),
        };
        let t = Instant::now();
        out_p
            .send((ping_key.clone(), m.encode()))
            .map_err(|_| anyhow!("outbox closed"))?;
        loop {
            match tokio::time::timeout(wait, arrived.recv()).await {
                Err(_) => return Ok(None),
                Ok(None) => bail!("subscriber closed"),
                Ok(Some(())) => {}
            }
            if let Some(m) = inbox_p.pop_next()
                && m.key.seq == seq
            {
                return Ok(Some(t.elapsed()));
            }
        }
    };
    let mut raw_once = async |seq: u64| -> Result<Option<Duration>> {
        let payload = seq.to_le_bytes().to_vec();
        let t = Instant::now();
        a.put(&raw_ping, payload.clone()).await.map_err(zerr)?;
        loop {
            match tokio::time::timeout(wait, raw_rx.recv()).await {
                Err(_) => return Ok(None),
                Ok(None) => bail!("subscriber closed"),
                Ok(Some(got)) if got == payload => return Ok(Some(t.elapsed())),
                Ok(Some(_)) => {}
            }
        }
    };

    // Until both sessions see each other's subscriptions, puts go nowhere.
    let start = Instant::now();
    let mut seq = 1u64;
    while weft_once(seq).await?.is_none() || raw_once(seq).await?.is_none() {
        seq += 1;
        if start.elapsed() > Duration::from_secs(10) {
            bail!("the two sessions did not exchange messages within 10 s");
        }
    }
    for _ in 0..500 {
        seq += 1;
        weft_once(seq).await?;
        raw_once(seq).await?;
    }
    let (mut weft, mut raw, mut lost) = (histogram(), histogram(), 0u64);
    for _ in 0..iters {
        seq += 1;
        match weft_once(seq).await? {
            Some(d) => record(&mut weft, d.as_nanos() as u64 / 2),
            None => lost += 1,
        }
        match raw_once(seq).await? {
            Some(d) => record(&mut raw, d.as_nanos() as u64 / 2),
            None => lost += 1,
        }
    }
    drop((sub_q, sub_p, raw_sub_a, raw_sub_b));
    let _ = a.close().await;
    let _ = b.close().await;

    let mut fig = Figure::new(
        "cross-node-port-latency",
        "Cross-node port latency vs raw Zenoh (RTT/2)",
        Unit::Nanoseconds,
        Summary::of(
            "weft: PortMessage encode → outbox task → Zenoh put → subscriber → decode → router → inbox, and back",
            &weft,
        ),
        Summary::of(
            "raw Zenoh: put of the same 8 bytes → subscriber → put back from the callback",
            &raw,
        ),
        Some(Goal::RatioAtMost {
            stat: Stat::Median,
            max: 1.3,
        }),
        "median ≤ 1.3× raw Zenoh",
    )
    .note(format!(
        "{iters} round trips each, interleaved, of an 8-byte payload between two Zenoh peer sessions in this process joined over TCP on \
         loopback (one listens, the other connects; default lease, no multicast). Half the round trip is reported, so no clocks need agree."
    ))
    .note(
        "The weft side is the node's real path without the guest: the sender encodes a fabric PortMessage and hands it to an outbox task that \
         puts on weft/<cluster>/port/app/p/o (as the agent's Outbox does); the receiver's subscriber callback decodes it and delivers it through \
         a Router route into an Inbox (what RemoteInlet::deliver does, minus the manifest lookup of the port handle), pops it, and answers the \
         same way. No Wasm process is woken: a process being scheduled costs the same whichever node the message came from (see port-latency).",
    );
    if lost > 0 {
        fig = fig.note(format!(
            "{lost} round trips got no answer within 200 ms and are not counted"
        ));
    }
    Ok(fig)
}

// ---------------------------------------------------------------------------
// A real cluster.

/// The controller and nodes of a cluster, as child processes; every one is
/// killed and reaped on drop, whatever happened.
pub(crate) struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    name: String,
    endpoint: String,
    max_processes: u32,
    controller: Option<Child>,
    nodes: BTreeMap<String, Child>,
}

impl Cluster {
    pub(crate) fn start(bin: PathBuf, dir: PathBuf, max_processes: u32) -> Result<Cluster> {
        std::fs::create_dir_all(&dir)?;
        let mut cluster = Cluster {
            bin,
            name: format!("bench{}", free_port()?),
            endpoint: format!("tcp/127.0.0.1:{}", free_port()?),
            dir,
            max_processes,
            controller: None,
            nodes: BTreeMap::new(),
        };
        let log = cluster.log("controller")?;
        let child = Command::new(&cluster.bin)
            .args(["controller", "--cluster", &cluster.name, "--listen"])
            .arg(&cluster.endpoint)
            .arg("--data-dir")
            .arg(cluster.dir.join("controller"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start the controller")?;
        cluster.controller = Some(child);
        Ok(cluster)
    }

    fn log(&self, name: &str) -> Result<std::fs::File> {
        let path = self.dir.join(format!("{name}.log"));
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))
    }

    pub(crate) fn start_node(&mut self, name: &str) -> Result<()> {
        let log = self.log(name)?;
        let child = Command::new(&self.bin)
            .args(["node", "--cluster", &self.name, "--name", name])
            .arg("--listen")
            .arg(format!("tcp/127.0.0.1:{}", free_port()?))
            .arg("--connect")
            .arg(&self.endpoint)
            .arg("--max-processes")
            .arg(self.max_processes.to_string())
            .arg("--data-dir")
            .arg(self.dir.join(name))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start node {name}"))?;
        self.nodes.insert(name.to_string(), child);
        Ok(())
    }

    pub(crate) fn signal(&self, node: &str, signal: i32) -> Result<()> {
        let child = self.nodes.get(node).context("no such node")?;
        // SAFETY: signalling our own child, which has not been reaped.
        if unsafe { libc::kill(child.id() as i32, signal) } != 0 {
            bail!(
                "cannot signal node {node}: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// Kills (if still running) and reaps a node.
    pub(crate) fn reap(&mut self, node: &str) {
        if let Some(mut child) = self.nodes.remove(node) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The end of a component's log, for error messages.
    pub(crate) fn tail(&self, name: &str) -> String {
        let text =
            std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.nodes.values_mut().chain(self.controller.as_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What the watching session saw.
pub(crate) enum Event {
    Alive(String, bool),
    Status(Box<NodeStatus>),
}

/// A client session's view of the cluster: liveliness and statuses, each
/// event timestamped in the Zenoh callback that received it.
pub(crate) struct Watch {
    pub(crate) session: zenoh::Session,
    pub(crate) keys: Keys,
    rx: mpsc::UnboundedReceiver<(Instant, Event)>,
    pub(crate) alive: BTreeSet<String>,
    pub(crate) status: HashMap<String, NodeStatus>,
    _subscribers: Vec<zenoh::pubsub::Subscriber<()>>,
}

impl Watch {
    async fn open(cluster: &Cluster) -> Result<Watch> {
        let config = FabricConfig::default()
            .cluster(&cluster.name)
            .mode(Mode::Client)
            .connect([cluster.endpoint.clone()]);
        let start = Instant::now();
        let session = loop {
            match config.open().await {
                Ok(s) => break s,
                Err(e) if start.elapsed() > Duration::from_secs(15) => {
                    return Err(e.context(format!(
                        "the controller did not come up; its log ends:\n{}",
                        cluster.tail("controller")
                    )));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        let keys = Keys::new(&cluster.name);
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
            session,
            keys,
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
                    self.status.insert(s.name.clone(), (**s).clone());
                }
            }
            if done(self, t, &event) {
                return Ok(t);
            }
        }
    }

    /// How many processes of `app` alive nodes last reported running.
    fn running(&self, app: &str) -> usize {
        self.status
            .iter()
            .filter(|(n, _)| self.alive.contains(*n))
            .flat_map(|(_, s)| &s.processes)
            .filter(|p| p.app == app && p.state == "running")
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

    pub(crate) async fn control(&self, request: &ControlRequest) -> Result<ControlResponse> {
        let response: ControlResponse = weft_fabric::rpc::call(
            &self.session,
            &self.keys.controller_rpc(),
            request,
            Duration::from_secs(30),
        )
        .await?;
        if let ControlResponse::Error { message } = &response {
            bail!("the controller refused: {message}");
        }
        Ok(response)
    }
}

pub(crate) fn runs(s: &NodeStatus, app: &str, process: &str) -> bool {
    s.processes
        .iter()
        .any(|p| p.app == app && p.name == process && p.state == "running")
}

/// A deploy request as `weft deploy` builds it: module paths replaced by
/// their SHA-256 digests, the bytes uploaded alongside. `MODULE` in the
/// processes' text names `module`.
pub(crate) fn deploy_request(app: &str, module: &[u8], processes: &[String]) -> ControlRequest {
    deploy_modules(app, &[("MODULE", module)], &processes.concat())
}

/// The same for several modules: each `(placeholder, bytes)` of `modules`
/// is named by its placeholder in `text` (the manifest after its name).
pub(crate) fn deploy_modules(app: &str, modules: &[(&str, &[u8])], text: &str) -> ControlRequest {
    let mut manifest = format!("name = \"{app}\"\n{text}");
    let mut blobs = BTreeMap::new();
    for (placeholder, bytes) in modules {
        let digest = hex::encode(sha2::Sha256::digest(bytes));
        manifest = manifest.replace(placeholder, &format!("{digest}.wasm"));
        blobs.insert(digest, Blob(bytes.to_vec()));
    }
    ControlRequest::Deploy {
        manifest,
        modules: blobs,
    }
}

/// The stateful rt counter of the cluster tests: it keeps a count in linear
/// memory (checkpointed and restored on a move) and sends it every tick.
const COUNTER: &str = r#"(module (import "weft" "send" (func $send (param i32 i32 i32) (result i32)))
  (memory 1)
  (func (export "weft_tick") (param i64)
    (i64.store (i32.const 0) (i64.add (i64.load (i32.const 0)) (i64.const 1)))
    (drop (call $send (i32.const 0) (i32.const 0) (i32.const 8)))))"#;

fn counter_request() -> ControlRequest {
    let process = "[[process]]\nname = \"counter\"\nmodule = \"MODULE\"\nclass = \"rt\"\nperiod = \"10ms\"\n\
                   capabilities = [\"ports\"]\noutputs = [\"n\"]\nrestart = \"on-failure\"\n";
    deploy_request("count", COUNTER.as_bytes(), &[process.to_string()])
}

fn fleet_request(app: &str, n: usize) -> ControlRequest {
    let processes: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "[[process]]\nname = \"p{i}\"\nmodule = \"MODULE\"\nclass = \"be\"\nperiod = \"1s\"\n"
            )
        })
        .collect();
    deploy_request(app, TINY.as_bytes(), &processes)
}

/// Failure and deploy figures, or skipped figures saying why not.
async fn real_cluster(ctx: &Ctx) -> Vec<Figure> {
    match try_real_cluster(ctx).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("[bench]   cluster run failed: {e:#}");
            let skip = |id: &str, title: &str, goal: &str| {
                Figure::skipped(id, title, Unit::Nanoseconds, goal, format!("failed: {e:#}"))
            };
            vec![
                skip(
                    "node-death-detection-kill",
                    "Node death detection after kill -9",
                    "p99 ≤ 50 ms",
                ),
                skip(
                    "recovery-after-kill",
                    "Process running elsewhere after kill -9",
                    "p99 ≤ 1 s",
                ),
            ]
        }
    }
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
) -> Result<(Cluster, Watch)> {
    let bin = weft_binary()?;
    let mut cluster = Cluster::start(bin, ctx.scratch.path().join(dir), max_processes)?;
    let mut watch = Watch::open(&cluster).await?;
    for node in nodes {
        cluster.start_node(node)?;
    }
    watch
        .until(
            &format!("nodes {} alive and reporting", nodes.join(", ")),
            Duration::from_secs(30),
            |w, _, _| {
                nodes
                    .iter()
                    .all(|n| w.alive.contains(*n) && w.status.contains_key(*n))
            },
        )
        .await
        .with_context(|| format!("node {}'s log ends:\n{}", nodes[0], cluster.tail(nodes[0])))?;
    Ok((cluster, watch))
}

async fn try_real_cluster(ctx: &Ctx) -> Result<Vec<Figure>> {
    let (mut cluster, mut watch) = start_cluster(ctx, "cluster", 1024, &["a", "b"]).await?;
    let mut figures = deploy_times(ctx, &mut watch).await?;
    figures.extend(failures(ctx, &mut cluster, &mut watch).await?);
    let _ = watch.session.close().await;
    Ok(figures)
}

async fn deploy_times(ctx: &Ctx, watch: &mut Watch) -> Result<Vec<Figure>> {
    let sizes: &[(usize, usize)] = if ctx.quick {
        &[(1, 3), (100, 2)]
    } else {
        &[(1, 5), (100, 3), (1000, 1)]
    };
    let mut figures = Vec::new();
    for &(n, reps) in sizes {
        let (mut weft, mut native) = (histogram(), histogram());
        for rep in 0..reps {
            let app = format!("fleet{n}-{rep}");
            let request = fleet_request(&app, n);
            let t = Instant::now();
            watch.control(&request).await?;
            let done = watch
                .until(
                    &format!("{n} processes of {app} running"),
                    Duration::from_secs(120),
                    |w, _, _| w.running(&app) >= n,
                )
                .await?;
            record(&mut weft, done.duration_since(t).as_nanos() as u64);
            watch
                .control(&ControlRequest::Remove { app: app.clone() })
                .await?;
            watch
                .until(
                    &format!("{app} removed"),
                    Duration::from_secs(60),
                    |w, _, _| w.listed(&app) == 0,
                )
                .await?;

            let t = Instant::now();
            for _ in 0..n {
                let status = Command::new("/bin/true")
                    .stdin(Stdio::null())
                    .status()
                    .context("cannot spawn /bin/true")?;
                if !status.success() {
                    bail!("/bin/true failed");
                }
            }
            record(&mut native, t.elapsed().as_nanos() as u64);
        }
        let fig = Figure::new(
            &format!("deploy-{n}"),
            &format!("Deploy an app of {n} process{} on 2 nodes", if n == 1 { "" } else { "es" }),
            Unit::Nanoseconds,
            Summary::of(
                "weft: Deploy request to the controller → every process reported running in node statuses",
                &weft,
            ),
            Summary::of(format!("native: spawn and wait for {n} × /bin/true, one after another"), &native),
            None,
            "none (context)",
        )
        .note(format!(
            "{reps} deploys of a fresh app of {n} be processes (a one-page module ticking once a second), removed again after each. \
             Nodes publish their status every 250 ms, so the weft figure includes up to 250 ms of waiting for the next status; and the \
             controller sets a new app's tag 0 200 ms after the deploy (EPOCH_LEAD, so every node releases it on the same grid), \
             which is a floor for this figure. \
             The baseline is not the same work (no placement, no network, no Wasm) and only gives a sense of scale: no goal is set."
        ));
        figures.push(fig);
    }
    Ok(figures)
}

/// One TCP connection whose far end is held only by a child process, and
/// the time from `kill -9` of that child until the read here returns: how
/// fast the operating system itself reports a dead peer.
fn tcp_close_detection() -> Result<Duration> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let far = std::net::TcpStream::connect(listener.local_addr()?)?;
    let (mut near, _) = listener.accept()?;
    let mut child = Command::new("sleep")
        .arg("60")
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(far)))
        .stdout(Stdio::null())
        .spawn()
        .context("cannot spawn sleep")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 1];
        let n = near.read(&mut buf);
        let _ = tx.send((Instant::now(), n.map_err(|e| e.to_string())));
    });
    std::thread::sleep(Duration::from_millis(20));
    let t = Instant::now();
    let _ = child.kill();
    let _ = child.wait();
    let (seen, n) = rx
        .recv_timeout(Duration::from_secs(5))
        .map_err(|_| anyhow!("the connection was not closed within 5 s"))?;
    let _ = reader.join();
    match n {
        Ok(0) | Err(_) => Ok(seen.duration_since(t)),
        Ok(_) => bail!("unexpected data on the connection"),
    }
}

async fn failures(ctx: &Ctx, cluster: &mut Cluster, watch: &mut Watch) -> Result<Vec<Figure>> {
    let (kills, stops) = if ctx.quick { (3, 2) } else { (10, 4) };
    watch.control(&counter_request()).await?;
    let mut host = String::new();
    watch
        .until(
            "the counter running",
            Duration::from_secs(30),
            |_, _, e| match e {
                Event::Status(s) if runs(s, "count", "counter") => {
                    host = s.name.clone();
                    true
                }
                _ => false,
            },
        )
        .await?;
    let (mut detect_kill, mut recover_kill, mut tcp) = (histogram(), histogram(), histogram());
    let (mut detect_stop, mut recover_stop) = (histogram(), histogram());
    for rep in 0..kills + stops {
        let kill = rep < kills;
        // Let the new incarnation checkpoint before it is lost.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let victim = host.clone();
        let other = if victim == "a" { "b" } else { "a" }.to_string();
        let t = Instant::now();
        cluster.signal(&victim, if kill { libc::SIGKILL } else { libc::SIGSTOP })?;
        let (mut dead, mut running) = (None, None);
        watch
            .until(
                &format!("node {victim} reported dead and the counter running on {other}"),
                Duration::from_secs(20),
                |_, at, e| {
                    match e {
                        Event::Alive(n, false) if *n == victim => dead = dead.or(Some(at)),
                        Event::Status(s) if s.name == other && runs(s, "count", "counter") => {
                            running = running.or(Some(at))
                        }
                        _ => {}
                    }
                    dead.is_some() && running.is_some()
                },
            )
            .await?;
        let (dead, running) = (dead.unwrap(), running.unwrap());
        let (d, r) = (dead.duration_since(t), running.duration_since(t));
        if kill {
            record(&mut detect_kill, d.as_nanos() as u64);
            record(&mut recover_kill, r.as_nanos() as u64);
            record(&mut tcp, tcp_close_detection()?.as_nanos() as u64);
            cluster.reap(&victim);
            cluster.start_node(&victim)?;
        } else {
            record(&mut detect_stop, d.as_nanos() as u64);
            record(&mut recover_stop, r.as_nanos() as u64);
            cluster.signal(&victim, libc::SIGCONT)?;
        }
        // The victim back and running nothing before the next round.
        watch
            .until(
                &format!("node {victim} back without the counter"),
                Duration::from_secs(30),
                |w, _, _| {
                    w.alive.contains(&victim)
                        && w.status
                            .get(&victim)
                            .is_some_and(|s| !runs(s, "count", "counter"))
                },
            )
            .await
            .with_context(|| format!("node {victim}'s log ends:\n{}", cluster.tail(&victim)))?;
        host = other;
    }

    let lease = FabricConfig::default().lease;
    let lease_ns = lease.as_nanos() as f64;
    let watch_note = "Timed from just before the signal to the arrival of the event at a client session connected to the controller \
                      (liveliness Delete of weft/<cluster>/node/<name>/alive, the signal the controller acts on; and the first status \
                      of the other node listing the counter as running).";
    let figures = vec![
        Figure::new(
            "node-death-detection-kill",
            "Node death detection after kill -9",
            Unit::Nanoseconds,
            Summary::of("weft: kill -9 of the node → liveliness Delete seen on the fabric", &detect_kill),
            Summary::of("OS: kill -9 of a child holding one end of a loopback TCP connection → read() returns EOF", &tcp),
            Some(Goal::ValueAtMost { stat: Stat::P99, max: 50e6 }),
            "p99 ≤ 50 ms",
        )
        .note(format!("{kills} kills of whichever node hosts the counter (2 nodes, the killed one restarted in between). {watch_note}"))
        .note("The baseline is the operating system's own notice of the dead process (its socket closed by the kernel), the floor for any detector."),
        Figure::new(
            "recovery-after-kill",
            "Process running elsewhere after kill -9",
            Unit::Nanoseconds,
            Summary::of("weft: kill -9 → the other node's status lists the stateful counter running", &recover_kill),
            Summary::of("weft: kill -9 → liveliness Delete (the detection part of the same runs)", &detect_kill),
            Some(Goal::ValueAtMost { stat: Stat::P99, max: 1e9 }),
            "p99 ≤ 1 s",
        )
        .note(format!(
            "{kills} kills. An rt counter (10 ms period, restart on-failure) restored on the other node from its last checkpoint. \
             Node statuses are published every 250 ms, so up to 250 ms of this is waiting for the status that shows it. The baseline \
             is the detection time of the same runs: the ratio shows how much of recovery is detection. {watch_note}"
        )),
        Figure::new(
            "node-death-detection-stop",
            "Node death detection after SIGSTOP",
            Unit::Nanoseconds,
            Summary::of("weft: SIGSTOP of the node → liveliness Delete seen on the fabric", &detect_stop),
            Summary::from_values(
                format!("the Zenoh lease configured by weft's FabricConfig ({} ms): a silent peer is declared gone after it", lease.as_millis()),
                lease_ns,
                lease_ns,
                lease_ns,
                0,
            ),
            None,
            "none (bounded by the lease)",
        )
        .note(format!(
            "{stops} SIGSTOPs of the node hosting the counter, each followed by SIGCONT and a wait until the node is back and has dropped \
             its stale copy. A frozen process closes no socket, so only the lease can notice it. The baseline is the configured lease itself, \
             not a measurement. {watch_note}"
        )),
        Figure::new(
            "recovery-after-stop",
            "Process running elsewhere after SIGSTOP",
            Unit::Nanoseconds,
            Summary::of("weft: SIGSTOP → the other node's status lists the counter running", &recover_stop),
            Summary::of("weft: SIGSTOP → liveliness Delete (the detection part of the same runs)", &detect_stop),
            None,
            "none (context)",
        )
        .note(format!("{stops} SIGSTOPs; see node-death-detection-stop. Status granularity is 250 ms as for kill -9.")),
    ];
    Ok(figures)
}
