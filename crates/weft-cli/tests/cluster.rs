//! The cluster end to end: a controller and nodes as real OS processes on
//! loopback, real `kill -9` and `SIGSTOP`. Every wait is bounded and
//! generous; assertions are about outcomes, never durations.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use weft_client::LocalCluster;
use weft_client::cluster::NodeSpec;
use weft_types::ProcessRef;

mod support;

use support::{free_port, repo, weft};

const WAIT: Duration = Duration::from_secs(60);

/// The first of `n` consecutive free ports, below the kernel's ephemeral
/// range: `weft up --metrics-port P` serves on P..P+n, and ports next to
/// one `free_port` gave out are the ones the kernel gives the other tests
/// running beside it (a node of `weft up` then failed to bind its metrics).
fn free_port_run(n: u16) -> u16 {
    let start = 20_000 + (std::process::id() % 2_000) as u16 * 4;
    (start..30_000)
        .step_by(usize::from(n))
        .find(|&p| (p..p + n).all(|q| std::net::TcpListener::bind(("127.0.0.1", q)).is_ok()))
        .expect("a run of free ports below 30000")
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

/// A cluster of real processes (`weft_client::LocalCluster`, the harness
/// `weft up` uses too) in a temporary directory; everything is killed on
/// drop. Client commands go through the `weft` binary under test.
struct Cluster {
    inner: LocalCluster,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn new() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut inner =
            LocalCluster::new(env!("CARGO_BIN_EXE_weft"), dir.path().join("cluster")).unwrap();
        inner.start_controller().unwrap();
        Cluster { inner, dir }
    }

    fn name(&self) -> &str {
        self.inner.cluster_name()
    }

    fn endpoint(&self) -> &str {
        self.inner.endpoint_str()
    }

    fn read_log(&self, name: &str) -> String {
        self.inner.log(name)
    }

    fn start_controller(&mut self) {
        self.inner.start_controller().unwrap();
    }

    /// Starts a node with labels `k=v,k=v` and simulated devices.
    fn start_node(&mut self, name: &str, labels: &str, devices: &[&str]) {
        let mut node = NodeSpec::new(name);
        for pair in labels.split(',').filter(|l| !l.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap();
            node = node.label(k, v);
        }
        for d in devices {
            node = node.device(d);
        }
        self.inner.start_node(&node).unwrap();
    }

    /// Sends a signal to a node (SIGKILL reaps it too).
    fn signal_node(&mut self, name: &str, sig: i32) {
        if sig == libc::SIGKILL {
            self.inner.kill_node(name);
        } else {
            self.inner.signal_node(name, sig).unwrap();
        }
    }

    fn client(&self, args: &[&str]) -> std::process::Output {
        weft()
            .args(args)
            .args(["--cluster", self.name(), "--connect", self.endpoint()])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// A client command running in the background, its stdout piped.
    fn spawn_client(&self, args: &[&str]) -> Child {
        weft()
            .args(args)
            .args(["--cluster", self.name(), "--connect", self.endpoint()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    fn json(&self, args: &[&str]) -> Option<Value> {
        let out = self.client(&[args, &["--json"]].concat());
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    fn ps(&self) -> Vec<Value> {
        self.json(&["ps"])
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    fn nodes(&self) -> Vec<Value> {
        self.json(&["nodes"])
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    fn process(&self, name: &str) -> Option<Value> {
        self.ps().into_iter().find(|p| p["name"] == name)
    }

    /// Waits for `get` to yield a value and returns it: a `weft ps` that
    /// fails once (the controller busy with a takeover) is no failure.
    fn wait_for<T>(&self, what: &str, mut get: impl FnMut(&Cluster) -> Option<T>) -> T {
        let mut found = None;
        self.wait(what, |c| {
            found = get(c);
            found.is_some()
        });
        found.unwrap()
    }

    fn wait(&self, what: &str, mut check: impl FnMut(&Cluster) -> bool) {
        let end = Instant::now() + WAIT;
        while Instant::now() < end {
            if check(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "timed out waiting for {what}\nps: {:#?}\nnodes: {:#?}\ncontroller log:\n{}",
            self.ps(),
            self.nodes(),
            self.read_log("controller")
        );
    }

    /// Waits for `n` nodes alive and reporting their status: placement
    /// prefers nodes it knows to be hard real-time, so a deploy before
    /// every node has reported could crowd onto the first that did.
    fn wait_nodes_alive(&self, n: usize) {
        self.wait(&format!("{n} nodes alive"), |c| {
            let reported = |node: &&Value| node["state"] == "alive" && !node["rt_class"].is_null();
            c.nodes().iter().filter(reported).count() == n
        });
    }

    /// `weft deploy`, which waits until the app runs; returns its stdout
    /// and stderr.
    fn deploy(&self, manifest: &Path) -> (String, String) {
        let out = self.client(&["deploy", manifest.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "deploy failed: {stderr}");
        (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
    }

    /// Tag of the newest checkpoint the nodes hold of `app/process`, if any.
    fn checkpoint_tag(&self, app: &str, process: &str) -> Option<u64> {
        let who: ProcessRef = format!("{app}/{process}").parse().unwrap();
        runtime().block_on(async {
            let client = self.inner.client().await.ok()?;
            let info = client.checkpoint_info(&who).await;
            client.close().await;
            info.ok()?.0.map(|t| t.0)
        })
    }

    fn running_on(&self, process: &str) -> Option<String> {
        let p = self.process(process)?;
        (p["state"] == "running")
            .then(|| p["node"].as_str().map(String::from))
            .flatten()
    }
}

/// A runtime for the few client calls a test makes itself (Zenoh needs
/// tokio's multi-thread scheduler).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// `weft up` under test: interrupted (so it stops its children) on drop,
/// even when the test panics.
struct Interrupt(Child);

impl Drop for Interrupt {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            signal(&self.0, libc::SIGINT);
            let end = Instant::now() + Duration::from_secs(10);
            while Instant::now() < end && matches!(self.0.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A small stateful app: a counter whose state (memory) survives moves.
fn counter_app(dir: &Path, name: &str, placement: &str) -> PathBuf {
    std::fs::write(
        dir.join("counter.wat"),
        r#"(module (import "weft" "send" (func $send (param i32 i32 i32) (result i32)))
            (memory 1)
            (func (export "weft_tick") (param i64)
              (i64.store (i32.const 0) (i64.add (i64.load (i32.const 0)) (i64.const 1)))
              (drop (call $send (i32.const 0) (i32.const 0) (i32.const 8)))))"#,
    )
    .unwrap();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "name = \"{name}\"\n[[process]]\nname = \"counter\"\nmodule = \"counter.wat\"\nclass = \"rt\"\nperiod = \"10ms\"\n\
             capabilities = [\"ports\"]\noutputs = [\"n\"]\n{placement}\n"
        ),
    )
    .unwrap();
    path
}

/// The counter app, logging a line at every tick.
fn logging_counter_app(dir: &Path, name: &str, placement: &str) -> PathBuf {
    standby_app(dir);
    let path = counter_app(dir, name, placement);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("counter.wat", "logging-counter.wat")
        .replace("[\"ports\"]", "[\"ports\", \"log\"]");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn deploy_honours_labels_and_devices_and_reports_unsatisfiable_apps() {
    let mut c = Cluster::new();
    c.start_node("edge-1", "tier=edge", &["plant"]);
    c.start_node("edge-2", "tier=edge", &[]);
    c.start_node("cloud-1", "tier=cloud", &[]);
    c.wait_nodes_alive(3);
    let nodes = c.nodes();
    for n in &nodes {
        for key in ["name", "pid", "state", "labels", "rt_class"] {
            assert!(n.get(key).is_some(), "{key} missing in {n}");
        }
    }
    // `weft deploy` waits until the cell runs, saying how far it got.
    let (out, progress) = c.deploy(&repo().join("examples/cluster-cell.toml"));
    assert!(out.contains("4/4 running"), "{out}");
    assert!(
        progress.contains("placed") && progress.contains("running"),
        "{progress}"
    );
    assert!(
        ["pid", "supervisor", "analytics", "heartbeat"]
            .iter()
            .all(|p| c.running_on(p).is_some()),
        "{:#?}",
        c.ps()
    );
    assert_eq!(
        c.running_on("pid").as_deref(),
        Some("edge-1"),
        "only edge-1 has the plant"
    );
    assert_eq!(c.running_on("analytics").as_deref(), Some("cloud-1"));
    assert_eq!(
        c.running_on("heartbeat").as_deref(),
        Some("edge-2"),
        "tier=edge and not beside pid"
    );
    // Cross-node ports: analytics (cloud-1) receives pid's (edge-1) telemetry.
    c.wait("analytics output", |c| {
        c.process("analytics").is_some_and(|p| {
            p["output_hash"] != c.process("supervisor").unwrap()["output_hash"]
                && p["output_hash"].as_str() != Some(&"0".repeat(64))
        })
    });
    for p in c.ps() {
        for key in ["app", "name", "node", "state", "ticks", "output_hash"] {
            assert!(p.get(key).is_some(), "{key} missing in {p}");
        }
    }
    // A message-driven process shows what it did: messages, not ticks.
    let analytics = c.process("analytics").unwrap();
    assert!(
        analytics["messages_in"].as_u64() > Some(0),
        "analytics handled no messages: {analytics}"
    );
    let table = String::from_utf8_lossy(&c.client(&["ps"]).stdout).to_string();
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.contains("analytics"))
        .unwrap()
        .split_whitespace()
        .collect();
    let column = header
        .iter()
        .position(|h| *h == "MSGS")
        .expect("a MSGS column");
    assert_ne!(row[column], "0", "{table}");

    let dir = c.dir.path().to_owned();
    let app = counter_app(
        &dir,
        "nowhere",
        "placement = { labels = { zone = \"line-9\" } }",
    );
    // An app no node can take: the deploy says so and returns, without
    // waiting for a node that may never come.
    let (out, _) = c.deploy(&app);
    assert!(
        out.contains("1 no node can take") && out.contains("zone"),
        "{out}"
    );
    assert!(c.ps().iter().any(|p| {
        p["app"] == "nowhere"
            && p["state"] == "pending"
            && p["reason"].as_str().is_some_and(|r| r.contains("zone"))
    }));
}

/// An app of 2,000 processes deploys onto three nodes and runs, and
/// `weft deploy` shows how far it got while it waits. Checkpoints are
/// rare here: until they live on nodes, 2,000 of them every 500 ms would
/// all pass through the controller.
#[test]
fn two_thousand_processes_deploy_and_run_with_progress() {
    let mut c = Cluster::new();
    for name in ["m1", "m2", "m3"] {
        let node = NodeSpec::new(name).checkpoint_every(Duration::from_secs(60));
        c.inner.start_node(&node).unwrap();
    }
    c.wait_nodes_alive(3);
    let dir = c.dir.path().to_owned();
    std::fs::write(
        dir.join("idle.wat"),
        r#"(module (memory 1) (func (export "weft_tick") (param i64)))"#,
    )
    .unwrap();
    let mut manifest = String::from("name = \"many\"\n");
    for i in 0..2000 {
        manifest.push_str(&format!(
            "[[process]]\nname = \"p{i}\"\nmodule = \"idle.wat\"\nperiod = \"1s\"\nmemory = \"64KiB\"\n"
        ));
    }
    let path = dir.join("many.toml");
    std::fs::write(&path, manifest).unwrap();
    let (out, progress) = c.deploy(&path);
    assert!(out.contains("2000/2000 running"), "{out}");
    assert!(progress.contains("/2000 placed"), "{progress}");
    // `ps` of 2,000 processes can time out on a loaded machine (and reads
    // as empty then): ask until it answers.
    let mut ps = Vec::new();
    c.wait("ps to list the 2000 processes running", |c| {
        ps = c.ps();
        let running = |p: &&Value| p["app"] == "many" && p["state"] == "running";
        ps.iter().filter(running).count() == 2000
    });
    let on: std::collections::BTreeSet<&str> =
        ps.iter().filter_map(|p| p["node"].as_str()).collect();
    assert_eq!(on.len(), 3, "spread over the three nodes: {on:?}");
}

#[test]
fn a_killed_node_s_processes_restart_elsewhere_from_their_checkpoint() {
    let mut c = Cluster::new();
    c.start_node("a", "", &[]);
    c.start_node("b", "", &[]);
    c.wait_nodes_alive(2);
    let app = logging_counter_app(c.dir.path(), "count", "restart = \"on-failure\"");
    c.deploy(&app);
    c.wait("counter running", |c| c.running_on("counter").is_some());
    let first = c.running_on("counter").unwrap();
    c.wait("some ticks", |c| {
        c.process("counter")
            .is_some_and(|p| p["ticks"].as_u64() > Some(100))
    });
    c.wait("a checkpoint on the nodes", |c| {
        c.checkpoint_tag("count", "counter").is_some_and(|t| t > 0)
    });
    // Follow the logs across the kill: the restored counter catches up on
    // the ticks since its checkpoint, whose lines were published already.
    let mut logs = c.spawn_client(&["logs", "count/counter", "--for", "8s"]);
    let mut lines = std::io::BufReader::new(logs.stdout.take().unwrap());
    let mut seen = String::new();
    // Once lines arrive, the follower sees everything from here on.
    std::io::BufRead::read_line(&mut lines, &mut seen).unwrap();
    c.signal_node(&first, libc::SIGKILL);
    c.wait("counter moved", |c| {
        c.running_on("counter").is_some_and(|n| n != first)
    });
    std::io::Read::read_to_string(&mut lines, &mut seen).unwrap();
    let _ = logs.wait();
    assert_each_line_once(&seen);
    let p = c.process("counter").unwrap();
    assert!(
        p["restored_from_tag"].as_u64().is_some_and(|t| t > 0),
        "not restored from a checkpoint: {p}"
    );
    assert_eq!(c.ps().iter().filter(|p| p["name"] == "counter").count(), 1);
}

/// A counter with 4 MiB of memory, so each of its checkpoints is larger
/// than the controller's whole store should ever be.
fn big_counter_app(dir: &Path) -> PathBuf {
    let path = counter_app(dir, "big", "");
    let wat = std::fs::read_to_string(dir.join("counter.wat")).unwrap();
    std::fs::write(
        dir.join("big-counter.wat"),
        wat.replace("(memory 1)", "(memory 64)"),
    )
    .unwrap();
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("counter.wat", "big-counter.wat");
    std::fs::write(&path, text).unwrap();
    path
}

impl Cluster {
    /// Every alive node holding a checkpoint of `big/counter`, with its tag.
    fn holders(&self) -> std::collections::BTreeMap<String, u64> {
        let who: ProcessRef = "big/counter".parse().unwrap();
        runtime().block_on(async {
            let client = self.inner.client().await.unwrap();
            let info = client.checkpoint_holders(&who).await;
            client.close().await;
            let (_, _, holders) = info.unwrap_or_default();
            holders
                .into_iter()
                .map(|(n, t)| (n.to_string(), t.0))
                .collect()
        })
    }

    fn controller_store_bytes(&self) -> u64 {
        let path = self.inner.dir().join("controller").join("controller.redb");
        std::fs::metadata(path).unwrap().len()
    }
}

/// Checkpoints live on nodes: each process's node holds its own and one
/// other node (its peer) a copy, the controller only which node holds
/// what. kill -9 of the process's node: it resumes from the peer's copy,
/// and the controller's store stays far smaller than one checkpoint. kill
/// -9 of both nodes holding it: it starts afresh on the last node, and
/// `weft ps` says which checkpoint was lost with them.
#[test]
fn checkpoints_live_on_nodes_and_survive_the_loss_of_the_process_s_node() {
    let mut c = Cluster::new();
    for name in ["a", "b", "c", "d"] {
        c.start_node(name, "", &[]);
    }
    c.wait_nodes_alive(4);
    c.deploy(&big_counter_app(c.dir.path()));
    c.wait("counter running", |c| c.running_on("counter").is_some());
    let first = c.running_on("counter").unwrap();
    c.wait("a copy of its checkpoint on another node", |c| {
        let holders = c.holders();
        holders.contains_key(&first) && holders.keys().any(|n| *n != first)
    });
    c.signal_node(&first, libc::SIGKILL);
    c.wait("counter resumed elsewhere", |c| {
        c.running_on("counter").is_some_and(|n| n != first)
    });
    let p = c.process("counter").unwrap();
    assert!(
        p["restored_from_tag"].as_u64().is_some_and(|t| t > 0),
        "not restored from its peer's checkpoint: {p}"
    );
    assert!(p["lost_checkpoint"].is_null(), "nothing was lost: {p}");
    let store = c.controller_store_bytes();
    assert!(
        store < 1 << 20,
        "the controller's store holds {store} bytes, more than a checkpoint's worth"
    );

    // Now kill both nodes that hold it: nothing of its state survives.
    let second = c.running_on("counter").unwrap();
    let mut peer = String::new();
    c.wait("a new peer holding its checkpoint", |c| {
        let holders = c.holders();
        match holders.keys().find(|n| **n != second) {
            Some(n) if holders.contains_key(&second) => {
                peer = n.clone();
                true
            }
            _ => false,
        }
    });
    let newest = c.holders().values().copied().max().unwrap();
    c.signal_node(&second, libc::SIGKILL);
    c.signal_node(&peer, libc::SIGKILL);
    let last = ["a", "b", "c", "d"]
        .into_iter()
        .find(|n| ![first.as_str(), second.as_str(), peer.as_str()].contains(n))
        .unwrap();
    c.wait("counter started afresh on the last node", |c| {
        c.running_on("counter").as_deref() == Some(last)
    });
    c.wait("ps to say which checkpoint was lost", |c| {
        c.process("counter")
            .is_some_and(|p| p["lost_checkpoint"].as_u64() >= Some(newest))
    });
    let p = c.process("counter").unwrap();
    assert!(p["restored_from_tag"].is_null(), "no copy survived: {p}");
}

/// A node stopped long enough to be declared dead is replaced; when it
/// resumes, its copy of the counter (which skips ahead and holds its
/// outputs) is stopped, and a consumer on a third node never sees a tag
/// twice: not while the counter restarts elsewhere, not when the node
/// returns.
#[test]
fn a_frozen_node_is_replaced_and_its_return_creates_no_duplicates() {
    let mut c = Cluster::new();
    c.start_node("a", "tier=edge", &[]);
    c.start_node("b", "tier=edge", &[]);
    c.start_node("c", "", &[]);
    c.wait_nodes_alive(3);
    let app = counter_app(
        c.dir.path(),
        "count",
        "restart = \"on-failure\"\nplacement = { labels = { tier = \"edge\" } }",
    );
    add_consumer(c.dir.path(), &app, "c");
    c.deploy(&app);
    c.wait("counter and consumer running", |c| {
        c.running_on("counter").is_some() && seen(c).is_some_and(|(n, _, _)| n > 50)
    });
    let first = c.running_on("counter").unwrap();
    let other = if first == "a" { "b" } else { "a" };
    c.signal_node(&first, libc::SIGSTOP);
    c.wait("counter moved off the frozen node", |c| {
        c.running_on("counter").as_deref() == Some(other)
    });
    // Stay frozen past the catch-up bound (2 s), so the node's counter
    // skips ahead when it resumes instead of catching up: 300 more ticks
    // at the consumer are 3 s.
    let at_move = c.wait_for("what the consumer saw", seen).0;
    c.wait("the consumer counting on without the frozen node", |c| {
        seen(c).is_some_and(|(n, _, _)| n > at_move + 300)
    });
    c.signal_node(&first, libc::SIGCONT);
    c.wait_nodes_alive(3);
    // The returned node is told it runs nothing: its status stops listing the counter.
    c.wait("the returned node to drop its stale copy", |c| {
        c.nodes()
            .iter()
            .any(|n| n["name"] == first.as_str() && n["processes"] == 0)
    });
    let at_return = c.wait_for("what the consumer saw", seen).0;
    c.wait("the consumer counting on", |c| {
        seen(c).is_some_and(|(n, _, _)| n > at_return + 100)
    });
    assert_eq!(c.running_on("counter").as_deref(), Some(other));
    let (n, gaps, duplicates) = c.wait_for("what the consumer saw", seen);
    eprintln!("{first} frozen, {other} took over; {n} messages, {gaps} gaps");
    assert_eq!(duplicates, 0, "{n} messages: no tag seen twice");
    // The restart from a checkpoint may skip what nobody computed while
    // the node was out (one gap); it never causes more.
    assert!(gaps <= 1, "{gaps} gaps in {n} messages");
    // Its copy skipped ahead on its return and held its outputs; stopped,
    // it did not hand its diverged state over as the newest checkpoint.
    let log = c.read_log(&first);
    assert!(
        log.contains("skipping to the present") && log.contains("held=true"),
        "the frozen node's counter skipped ahead and held its outputs:\n{log}"
    );
    assert!(
        log.contains("not handed over") && !log.contains("handing over"),
        "a held copy hands nothing over:\n{log}"
    );
}

#[test]
fn processes_survive_the_controller_and_a_restarted_controller_recovers() {
    let mut c = Cluster::new();
    c.start_node("a", "", &[]);
    c.start_node("b", "", &[]);
    c.wait_nodes_alive(2);
    let app = counter_app(c.dir.path(), "count", "");
    c.deploy(&app);
    c.wait("counter running", |c| c.running_on("counter").is_some());
    let node = c.running_on("counter").unwrap();
    let ticks_before = c.process("counter").unwrap()["ticks"].as_u64().unwrap();

    c.inner.kill_controller();
    let ps = c.client(&["ps"]);
    assert_eq!(
        ps.status.code(),
        Some(3),
        "ps needs the controller: {}",
        String::from_utf8_lossy(&ps.stderr)
    );

    c.start_controller();
    c.wait("the recovered controller to see the counter", |c| {
        c.running_on("counter").as_deref() == Some(node.as_str())
    });
    let p = c.process("counter").unwrap();
    assert!(
        p["ticks"].as_u64().unwrap() > ticks_before,
        "the counter kept ticking without the controller"
    );
    assert_eq!(p["restarts"], 0);
    assert!(
        p["restored_from_tag"].is_null(),
        "it was never moved or restarted"
    );
    assert_eq!(c.ps().iter().filter(|p| p["name"] == "counter").count(), 1);
    let hosting: Vec<_> = c
        .nodes()
        .into_iter()
        .filter(|n| n["processes"].as_u64() > Some(0))
        .collect();
    assert_eq!(hosting.len(), 1, "no duplicate copy anywhere: {hosting:?}");
}

/// A new generation of the app takes over the counter's state: its count
/// goes on from where the old generation left it.
#[test]
fn a_rolling_update_keeps_the_app_running() {
    let mut c = Cluster::new();
    c.start_node("a", "", &[]);
    c.wait_nodes_alive(1);
    let app = counter_app(c.dir.path(), "count", "");
    c.deploy(&app);
    c.wait("generation 1 counting past 200", |c| {
        c.process("counter").is_some_and(|p| {
            p["state"] == "running" && p["generation"] == 1 && count(&p) > Some(200)
        })
    });
    let text = std::fs::read_to_string(&app)
        .unwrap()
        .replace("period = \"10ms\"", "period = \"20ms\"");
    std::fs::write(&app, text).unwrap();
    let before = count(&c.process("counter").unwrap()).unwrap();
    c.deploy(&app);
    c.wait("generation 2 running", |c| {
        c.process("counter")
            .is_some_and(|p| p["state"] == "running" && p["generation"] == 2 && count(&p).is_some())
    });
    let p = c.process("counter").unwrap();
    assert!(
        count(&p).unwrap() >= before,
        "generation 2 counts on from {before}, not from 0: {p}"
    );
    c.wait("generation 2 ticking", |c| {
        c.process("counter")
            .is_some_and(|p| p["ticks"].as_u64() > Some(10))
    });
}

/// The counter's count, from its last output (a little-endian u64).
fn count(p: &Value) -> Option<u64> {
    let hex = p["last_output_hex"].as_str()?;
    let word = u64::from_str_radix(hex.get(..16)?, 16).ok()?;
    Some(word.swap_bytes())
}

#[test]
fn malformed_fabric_messages_are_dropped_with_a_log() {
    let mut c = Cluster::new();
    c.start_node("a", "", &[]);
    c.wait_nodes_alive(1);
    let app = counter_app(c.dir.path(), "count", "");
    c.deploy(&app);
    c.wait("counter running", |c| c.running_on("counter").is_some());
    let node: weft_types::NodeName = "a".parse().unwrap();
    runtime().block_on(async {
        let config = weft_fabric::FabricConfig::default()
            .mode(weft_fabric::Mode::Client)
            .connect([c.endpoint().to_string()]);
        let session = config.open().await.unwrap();
        let keys = weft_fabric::Keys::new(c.name());
        let put = |key: String, payload: &'static [u8]| {
            let session = session.clone();
            async move { session.put(key, payload.to_vec()).await.unwrap() }
        };
        put(keys.node_status(&node), b"\xff\xfe not json").await;
        put(keys.node_status(&"ghost".parse().unwrap()), br#"{"v":99}"#).await;
        // Every queryable answers garbage with an error reply.
        let modules = keys.module(&weft_types::ModuleDigest([0; 32]));
        for (key, payload) in [
            (keys.controller_rpc(), b"garbage".to_vec()),
            (keys.controller_deploy(), b"garbage".to_vec()),
            (keys.node_rpc(&node), br#"{"v":1,"op":"explode"}"#.to_vec()),
            (modules, Vec::new()),
            (keys.replicas_to(&node), b"garbage".to_vec()),
        ] {
            let replies = session.get(&key).payload(payload).await.unwrap();
            let reply = replies.recv_async().await.unwrap();
            let answer = match reply.result() {
                Ok(sample) => String::from_utf8_lossy(&sample.payload().to_bytes()).into_owned(),
                Err(e) => String::from_utf8_lossy(&e.payload().to_bytes()).into_owned(),
            };
            assert!(
                reply.result().is_err() || answer.contains("\"error\""),
                "{key} answered garbage with {answer}"
            );
        }
        session.close().await.unwrap();
    });
    // Everything is still up and serving.
    let before = c.process("counter").unwrap()["ticks"].as_u64().unwrap();
    c.wait("the counter to keep ticking", |c| {
        c.process("counter")
            .is_some_and(|p| p["ticks"].as_u64() > Some(before))
    });
    // Each case left its own line.
    let (controller, node) = (c.read_log("controller"), c.read_log("a"));
    for (log, needle) in [
        (&controller, "dropping malformed node status"),
        (&controller, "unsupported payload version 99"),
        (&node, "checkpoint links from a peer refused"),
        (&controller, "dropping malformed request"),
        (&controller, "malformed deploy bundle"),
        (&node, "dropping malformed request"),
    ] {
        assert!(log.contains(needle), "no log line with {needle:?}:\n{log}");
    }
}

/// An ordinary Zenoh client (the Python package, as in docs/fabric.md)
/// connects to the cluster and decodes a process's port traffic.
#[test]
fn a_plain_python_zenoh_client_reads_port_traffic() {
    let python = repo().join("build/pyenv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run `bash scripts/setup.sh`",
        python.display()
    );
    let mut c = Cluster::new();
    c.start_node("a", "", &[]);
    c.start_node("b", "", &[]);
    c.wait_nodes_alive(2);
    // Only outputs with a receiver on another node go on the fabric, so the
    // source and the sink are pinned to different nodes.
    counter_app(c.dir.path(), "unused", "");
    std::fs::write(
        c.dir.path().join("sink.wat"),
        r#"(module (memory 1) (global $n (mut i32) (i32.const 0))
            (func (export "weft_alloc") (param i32) (result i32) (i32.const 1024))
            (func (export "weft_message") (param i32 i32 i32 i64) (global.set $n (i32.add (global.get $n) (i32.const 1)))))"#,
    )
    .unwrap();
    let pair = c.dir.path().join("pair.toml");
    std::fs::write(
        &pair,
        "name = \"pair\"\n\
         [[process]]\nname = \"src\"\nmodule = \"counter.wat\"\nclass = \"rt\"\nperiod = \"10ms\"\ncapabilities = [\"ports\"]\noutputs = [\"n\"]\nplacement = { node = \"a\" }\n\
         [[process]]\nname = \"dst\"\nmodule = \"sink.wat\"\ninputs = [\"n\"]\nplacement = { node = \"b\" }\n\
         [[connection]]\nfrom = \"src.n\"\nto = \"dst.n\"\n",
    )
    .unwrap();
    c.deploy(&pair);
    c.wait("pair running", |c| {
        c.running_on("src").is_some() && c.running_on("dst").is_some()
    });
    let out = Command::new(&python)
        .arg(repo().join("examples/python/watch_ports.py"))
        .args([
            "--connect",
            c.endpoint(),
            "--key",
            &format!("weft/{}/port/pair/src/n", c.name()),
            "--count",
            "3",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for m in &lines {
        assert_eq!(m["source"], "src");
        assert_eq!(
            m["payload_hex"].as_str().unwrap().len(),
            16,
            "an 8-byte counter"
        );
    }
    assert!(lines[1]["seq"].as_u64() > lines[0]["seq"].as_u64());
}

/// `weft up` as a user runs it: three nodes, the demo cell, healing after a
/// killed node, a drain, logs, and a clean stop on Ctrl-C.
#[test]
fn weft_up_runs_the_demo_and_heals() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("tcp/127.0.0.1:{}", free_port());
    let http_port = free_port_run(4).to_string();
    let mut up = Interrupt(
        weft()
            .args(["up", "--nodes", "3", "--listen", &endpoint, "--data-dir"])
            .arg(dir.path())
            .args(["--metrics-port", &http_port])
            .current_dir(repo())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client = |args: &[&str]| {
        weft()
            .args(args)
            .args(["--connect", &endpoint])
            .output()
            .unwrap()
    };
    let json = |args: &[&str]| -> Vec<Value> {
        let out = client(&[args, &["--json"]].concat());
        serde_json::from_slice(&out.stdout)
            .ok()
            .and_then(|v: Value| v.as_array().cloned())
            .unwrap_or_default()
    };
    let wait = |what: &str, check: &dyn Fn() -> bool| {
        let end = Instant::now() + WAIT;
        while Instant::now() < end {
            if check() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "timed out waiting for {what}: {:#?} {:#?}",
            json(&["ps"]),
            json(&["nodes"])
        );
    };
    let node_of = |process: &str| -> Option<String> {
        json(&["ps"])
            .into_iter()
            .find(|p| p["name"] == process && p["state"] == "running")?["node"]
            .as_str()
            .map(String::from)
    };
    wait("three nodes and four running processes", &|| {
        json(&["nodes"])
            .iter()
            .filter(|n| n["state"] == "alive")
            .count()
            == 3
            && json(&["ps"])
                .iter()
                .filter(|p| p["state"] == "running")
                .count()
                == 4
    });
    for node in json(&["nodes"]) {
        let way = node["dirty_tracking"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            ["write-protect", "page-hash"].contains(&way.as_str()),
            "each node says how it finds written pages: {node}"
        );
    }
    // `weft top` in a real terminal shows every process, and re-sorts.
    let top = Tmux::start(&[
        env!("CARGO_BIN_EXE_weft"),
        "top",
        "--connect",
        &endpoint,
        "--interval",
        "300ms",
    ]);
    let screen = top.wait_for("every demo process in weft top", |screen| {
        ["pid", "supervisor", "analytics", "heartbeat"]
            .iter()
            .all(|p| screen.contains(&format!("cluster-cell/{p}")))
            && screen.contains("(replica)")
    });
    assert!(
        screen.contains("NODE▲") && screen.contains("JIT_P99"),
        "{screen}"
    );
    top.keys(&["Right"]);
    top.wait_for("the table sorted by process", |s| {
        s.contains("APP/PROCESS▲")
    });
    top.keys(&["q"]);
    top.wait_for_exit();

    // The dashboard in a real browser: every node and process, the PID's
    // telemetry charted live, and a migration through the page.
    let dashboard = format!("http://127.0.0.1:{http_port}/");
    let mut browser = Browser::open(&dashboard, dir.path());
    let nodes = browser.wait_for("the nodes on the page", |b| {
        let n = b.eval(
            "[...document.querySelectorAll('#nodes tr[data-node]')].map(r => r.dataset.node)",
        );
        (n.as_array()?.len() == 3).then_some(n)
    });
    assert!(nodes.to_string().contains("cloud-1"), "{nodes}");
    browser.wait_for("every process on the page", |b| {
        let shown = b
            .eval("document.getElementById('processes').textContent")
            .to_string();
        ["pid", "supervisor", "analytics", "heartbeat"]
            .iter()
            .all(|p| shown.contains(&format!("cluster-cell/{p}")))
            .then_some(())
    });
    let points = |b: &mut Browser| b.eval("weftCharts.port.added").as_u64();
    let charted = browser.wait_for("the telemetry chart", |b| points(b).filter(|n| *n > 2));
    browser.wait_for("the telemetry chart to move on", |b| {
        points(b).filter(|n| *n > charted)
    });
    assert_eq!(
        browser.eval("weftCharts.port.names.length"),
        3,
        "temperature, setpoint and power"
    );
    let (from, standby) = browser.wait_for("pid and its standby", |_| {
        let p = json(&["ps"]).into_iter().find(|p| p["name"] == "pid")?;
        let standby = p["standby"]["node"].as_str()?.to_string();
        (p["standby"]["state"] == "standby")
            .then(|| (p["node"].as_str().unwrap().to_string(), standby))
    });
    browser.eval(&format!(
        "document.querySelector('#migrate [name=process]').value = 'cluster-cell/pid';\
         document.querySelector('#migrate [name=to]').value = '{standby}';\
         document.querySelector('#migrate button').click(); true"
    ));
    browser.wait_for("the migration in the page's events", |b| {
        let text = b
            .eval("document.getElementById('events').textContent")
            .to_string();
        text.contains(&format!(
            "cluster-cell/pid moves live from {from} to {standby}"
        ))
        .then_some(())
    });
    wait("pid on the node chosen in the page", &|| {
        node_of("pid").as_deref() == Some(standby.as_str())
    });
    let shot = browser.screenshot("dashboard.png");
    eprintln!("dashboard screenshot: {}", shot.display());
    drop(browser);

    let pid_node = node_of("pid").unwrap();
    assert!(
        pid_node.starts_with("edge-"),
        "pid needs the plant: {pid_node}"
    );
    let standby_of_pid = || -> Option<String> {
        json(&["ps"])
            .into_iter()
            .find(|p| p["name"] == "pid" && p["standby"]["state"] == "standby")?["standby"]["node"]
            .as_str()
            .map(String::from)
    };
    wait("pid's hot standby in step", &|| standby_of_pid().is_some());
    let standby_node = standby_of_pid().unwrap();
    assert!(standby_node.starts_with("edge-") && standby_node != pid_node);

    // Migrate pid onto its standby's node: analytics (on cloud-1) sees no
    // missed tick.
    let out = client(&[
        "migrate",
        "cluster-cell/pid",
        "--to",
        &standby_node,
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["missed_ticks"], 0, "{report}");
    let (pid_node, standby_node) = (standby_node, pid_node);
    wait("pid on its new node, its standby on the old one", &|| {
        node_of("pid").as_deref() == Some(pid_node.as_str())
            && standby_of_pid().as_deref() == Some(standby_node.as_str())
    });

    // Guest logs reach `weft logs`.
    let logs = client(&["logs", "cluster-cell/analytics", "--for", "3s"]);
    assert!(
        String::from_utf8_lossy(&logs.stdout).contains("quality"),
        "{}",
        String::from_utf8_lossy(&logs.stdout)
    );

    // Heal: kill -9 the PID's node.
    let victim = json(&["nodes"])
        .into_iter()
        .find(|n| n["name"] == pid_node.as_str())
        .unwrap()["pid"]
        .as_i64()
        .unwrap();
    // SAFETY: signalling a process weft up started for this test.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    wait("pid's standby to take over", &|| {
        node_of("pid").as_deref() == Some(standby_node.as_str())
    });

    // Drain the cloud node: analytics has nowhere else to go and is pending.
    let out = client(&["drain", "cloud-1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait("analytics pending after the drain", &|| {
        json(&["ps"])
            .iter()
            .any(|p| p["name"] == "analytics" && p["state"] == "pending")
    });

    // Ctrl-C stops the whole cluster.
    signal(&up.0, libc::SIGINT);
    let status = up.0.wait().unwrap();
    assert!(status.success(), "weft up exited with {status}");
    let mut banner = String::new();
    std::io::Read::read_to_string(up.0.stdout.as_mut().unwrap(), &mut banner).unwrap();
    assert!(
        banner.contains("edge-1") && banner.contains("cloud-1") && banner.contains("weft ps"),
        "{banner}"
    );
    assert!(
        banner.contains(&format!("Dashboard: {dashboard}")),
        "{banner}"
    );
    assert!(
        !client(&["nodes"]).status.success(),
        "the cluster is gone after Ctrl-C"
    );
}

/// A program running in a detached tmux session of its own server
/// (`tmux -L`), read by capturing its screen; the server is killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(command: &[&str]) -> Tmux {
        let socket = format!("weft-test-{}-{}", std::process::id(), free_port());
        let tmux = Tmux { socket };
        let out = tmux
            .command()
            .args(["new-session", "-d", "-s", "t", "-x", "200", "-y", "40"])
            .args(command)
            .output()
            .expect("cannot run tmux: install it with scripts/setup.sh");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        tmux
    }

    fn command(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    /// The screen, or `None` once the session has ended.
    fn screen(&self) -> Option<String> {
        let out = self
            .command()
            .args(["capture-pane", "-p", "-t", "t"])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn wait_for(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + WAIT;
        let mut last = String::new();
        while Instant::now() < end {
            if let Some(screen) = self.screen() {
                if check(&screen) {
                    return screen;
                }
                last = screen;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("timed out waiting for {what}; the screen:\n{last}");
    }

    fn keys(&self, keys: &[&str]) {
        let out = self
            .command()
            .args(["send-keys", "-t", "t"])
            .args(keys)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn wait_for_exit(&self) {
        let end = Instant::now() + WAIT;
        while self.screen().is_some() {
            assert!(Instant::now() < end, "the program did not exit");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").output();
    }
}

/// A headless Chromium (Debian's `chromium`) on one page, driven over the
/// DevTools protocol; killed by PID on drop.
struct Browser {
    _chromium: KillTree,
    socket: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
    next_id: u64,
}

impl Browser {
    fn open(url: &str, dir: &Path) -> Browser {
        let port = free_port();
        // Everything it writes, its crash handler's database too, goes
        // under `home`, which names every process it starts (see KillTree).
        let home = dir.join("chromium");
        let child = Command::new("chromium")
            .env("HOME", &home)
            .args(["--headless=new", "--no-sandbox", "--disable-gpu"])
            .args(["--disable-dev-shm-usage", "--disable-breakpad"])
            .args(["--no-first-run", "--window-size=1400,1100"])
            .arg(format!("--remote-debugging-port={port}"))
            .arg(format!(
                "--user-data-dir={}",
                home.join("profile").display()
            ))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start chromium: install it with scripts/setup.sh");
        let guard = KillTree {
            child,
            marker: home.display().to_string(),
        };
        let end = Instant::now() + WAIT;
        let page = loop {
            let targets = http_get(
                std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                "/json/list",
            )
            .and_then(|body| serde_json::from_str::<Value>(&body).ok());
            let page = targets.as_ref().and_then(|t| {
                t.as_array()?.iter().find(|t| t["type"] == "page")?["webSocketDebuggerUrl"]
                    .as_str()
                    .map(String::from)
            });
            if let Some(page) = page {
                break page;
            }
            assert!(Instant::now() < end, "chromium did not open the page");
            std::thread::sleep(Duration::from_millis(200));
        };
        let (socket, _) = tungstenite::connect(page.as_str()).unwrap();
        Browser {
            _chromium: guard,
            socket,
            next_id: 0,
        }
    }

    /// Calls a DevTools method and returns its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let request = serde_json::json!({"id": id, "method": method, "params": params});
        self.socket
            .send(tungstenite::Message::text(request.to_string()))
            .unwrap();
        loop {
            let message = self.socket.read().unwrap();
            let Ok(text) = message.to_text() else {
                continue;
            };
            let Ok(answer) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            if answer["id"] == id {
                return answer["result"].clone();
            }
        }
    }

    /// Evaluates `expression` in the page; its value, `null` if it threw.
    fn eval(&mut self, expression: &str) -> Value {
        let params = serde_json::json!({"expression": expression, "returnByValue": true});
        self.call("Runtime.evaluate", params)["result"]["value"].clone()
    }

    fn wait_for<T>(&mut self, what: &str, mut check: impl FnMut(&mut Browser) -> Option<T>) -> T {
        let end = Instant::now() + WAIT;
        while Instant::now() < end {
            if let Some(found) = check(self) {
                return found;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let page = self.eval("document.body.innerText");
        panic!(
            "timed out waiting for {what}; the page shows:\n{}",
            page.as_str().unwrap_or("")
        );
    }

    /// Saves a PNG of the page as a test artifact; returns where.
    fn screenshot(&mut self, name: &str) -> PathBuf {
        use base64::Engine;
        let shot = self.call(
            "Page.captureScreenshot",
            serde_json::json!({"format": "png"}),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("artifacts");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, png).unwrap();
        path
    }
}

/// A child that starts a tree of processes (Chromium), some of which
/// leave its process group: on drop, every process whose command line
/// names `marker` is killed by PID, then the child is reaped.
struct KillTree {
    child: Child,
    marker: String,
}

impl Drop for KillTree {
    fn drop(&mut self) {
        let _ = self.child.kill();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&self.marker) {
                // SAFETY: signalling a process this test started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = self.child.wait();
    }
}

/// A GET of `path` at a DevTools endpoint, if it answers 200. It speaks
/// HTTP/1.1 only and keeps the connection open after its answer, so the
/// body is read up to its `Content-Length`.
fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    // DevTools names its WebSocket URLs after the Host asked for.
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        response.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&response).into_owned();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length: usize = head.lines().find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")?
                .trim()
                .parse()
                .ok()
        })?;
        if body.len() >= length {
            let ok = head.split(' ').nth(1) == Some("200");
            return ok.then(|| body.to_string());
        }
    }
}

/// Draining a node moves its processes with their final state: the old
/// node hands its snapshot over before the new node starts the process.
#[test]
fn drain_moves_processes_live() {
    let mut c = Cluster::new();
    c.start_node("a", "", &[]);
    c.start_node("b", "", &[]);
    c.wait_nodes_alive(2);
    let app = counter_app(c.dir.path(), "count", "");
    c.deploy(&app);
    c.wait("counter running", |c| c.running_on("counter").is_some());
    let first = c.running_on("counter").unwrap();
    c.wait("some ticks", |c| {
        c.process("counter")
            .is_some_and(|p| p["ticks"].as_u64() > Some(50))
    });
    let out = c.client(&["drain", &first]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("count/counter"));
    c.wait("counter moved", |c| {
        c.running_on("counter").is_some_and(|n| n != first)
    });
    let p = c.process("counter").unwrap();
    assert!(
        p["restored_from_tag"].as_u64().is_some_and(|t| t > 0),
        "{p}"
    );
    let log = c.read_log("controller");
    assert!(
        log.contains("moved live"),
        "not moved live (replica first):\n{log}"
    );
    assert_eq!(c.ps().iter().filter(|p| p["name"] == "counter").count(), 1);
}

/// `weft migrate` moves a running process with its state; unsuitable or
/// unknown targets are refused and the process stays where it was.
#[test]
fn migrate_moves_a_process_and_refuses_unsuitable_targets() {
    let mut c = Cluster::new();
    c.start_node("a", "tier=edge", &["plant"]);
    c.start_node("b", "tier=edge", &["plant"]);
    c.start_node("c", "tier=cloud", &[]);
    c.wait_nodes_alive(3);
    // The counter needs the plant, which node c does not have.
    let app = counter_app(c.dir.path(), "count", "");
    let text = std::fs::read_to_string(&app).unwrap().replace(
        "capabilities = [\"ports\"]",
        "capabilities = [\"ports\", \"device:plant\"]",
    );
    std::fs::write(&app, text).unwrap();
    add_consumer(c.dir.path(), &app, "c");
    c.deploy(&app);
    c.wait("counter running", |c| c.running_on("counter").is_some());
    let from = c.running_on("counter").unwrap();
    let to = if from == "a" { "b" } else { "a" };

    let refused = c.client(&["migrate", "count/counter", "--to", "c"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(5), "refused: {err}");
    assert!(
        err.contains("node c cannot run count/counter") && err.contains("plant"),
        "{err}"
    );
    let unknown = c.client(&["migrate", "count/counter", "--to", "nowhere"]);
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert_eq!(unknown.status.code(), Some(4), "no such node: {err}");
    assert!(err.contains("nowhere"), "{err}");
    let no_process = c.client(&["migrate", "count/nobody", "--to", to]);
    let err = String::from_utf8_lossy(&no_process.stderr);
    assert_eq!(no_process.status.code(), Some(4), "no such process: {err}");
    assert!(
        err.contains("nobody") && !err.contains("{"),
        "a sentence: {err}"
    );
    assert_eq!(
        c.running_on("counter").as_deref(),
        Some(from.as_str()),
        "refusals leave it where it was"
    );

    c.wait("a few ticks", |c| {
        c.process("counter")
            .is_some_and(|p| p["ticks"].as_u64() > Some(20))
    });
    let out = c.client(&["migrate", "count/counter", "--to", to, "--json"]);
    assert!(
        out.status.success(),
        "{}\ncontroller:\n{}\nto:\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.read_log("controller"),
        c.read_log(to)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("migration: {report}");
    for key in [
        "downtime_us",
        "total_us",
        "state_bytes",
        "missed_ticks",
        "dirty_tracking",
    ] {
        assert!(report.get(key).is_some(), "{key} missing: {report}");
    }
    assert!(
        report["state_bytes"].as_u64().unwrap() >= 65536,
        "a page of memory at least: {report}"
    );
    assert_eq!(c.running_on("counter").as_deref(), Some(to));
    assert_eq!(c.ps().iter().filter(|p| p["name"] == "counter").count(), 1);
    // The consumer on c saw every tag, once, across the move.
    let at_move = c.wait_for("what the consumer saw", seen).0;
    c.wait("the consumer counting on", |c| {
        seen(c).is_some_and(|(n, _, _)| n > at_move + 100)
    });
    let (n, gaps, duplicates) = c.wait_for("what the consumer saw", seen);
    assert_eq!(
        (gaps, duplicates),
        (0, 0),
        "{n} messages: no tag missed or doubled by the move"
    );
}

/// Adds the exactly-once consumer of [`standby_app`], pinned to node `on`,
/// fed by the counter of the app at `path`.
fn add_consumer(dir: &Path, path: &Path, on: &str) {
    standby_app(dir);
    let mut text = std::fs::read_to_string(path).unwrap();
    text.push_str(&format!(
        "[[process]]\nname = \"once\"\nmodule = \"once.wat\"\ncapabilities = [\"ports\"]\n\
         inputs = [\"n\"]\noutputs = [\"seen\"]\nplacement = {{ node = \"{on}\" }}\n\
         [[connection]]\nfrom = \"counter.n\"\nto = \"once.n\"\n"
    ));
    std::fs::write(path, text).unwrap();
}

/// A 10 ms counter with a hot standby, which logs a line every tick, and a
/// consumer on node c that checks every tag arrives exactly once: its last
/// output is [messages, gaps, duplicates, last tag] (u64 each,
/// little-endian). The counter's deadline is 1 s, not one period: a
/// deadline miss changes a copy's outputs by design, and each copy decides
/// it by its own clock, so one 10 ms stall of this shared VM would make
/// the standby and its process differ. What this tests is the takeover.
fn standby_app(dir: &Path) -> PathBuf {
    std::fs::write(
        dir.join("logging-counter.wat"),
        r#"(module (import "weft" "send" (func $send (param i32 i32 i32) (result i32)))
            (import "weft" "log" (func $log (param i32 i32 i32)))
            (memory 1) (data (i32.const 64) "tick")
            (func (export "weft_tick") (param i64)
              (i64.store (i32.const 0) (i64.add (i64.load (i32.const 0)) (i64.const 1)))
              (call $log (i32.const 2) (i32.const 64) (i32.const 4))
              (drop (call $send (i32.const 0) (i32.const 0) (i32.const 8)))))"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("once.wat"),
        r#"(module (import "weft" "send" (func $send (param i32 i32 i32) (result i32)))
            (memory 1)
            (func $bump (param $at i32)
              (i64.store (local.get $at) (i64.add (i64.load (local.get $at)) (i64.const 1))))
            (func (export "weft_alloc") (param i32) (result i32) (i32.const 1024))
            (func (export "weft_message") (param i32 i32 i32) (param $tag i64) (local $last i64)
              (local.set $last (i64.load (i32.const 24)))
              (call $bump (i32.const 0))
              (if (i64.ne (local.get $last) (i64.const 0))
                (then
                  (if (i64.le_u (local.get $tag) (local.get $last))
                    (then (call $bump (i32.const 16)))
                    (else
                      (if (i64.ne (local.get $tag) (i64.add (local.get $last) (i64.const 10000000)))
                        (then
                          (call $bump (i32.const 8))
                          (i64.store (i32.const 32) (local.get $tag))
                          (i64.store (i32.const 40) (local.get $last))))))))
              (if (i64.gt_u (local.get $tag) (local.get $last))
                (then (i64.store (i32.const 24) (local.get $tag))))
              (drop (call $send (i32.const 1) (i32.const 0) (i32.const 48)))))"#,
    )
    .unwrap();
    let path = dir.join("hot.toml");
    std::fs::write(
        &path,
        "name = \"hot\"\n\
         [[process]]\nname = \"once\"\nmodule = \"once.wat\"\ncapabilities = [\"ports\"]\ninputs = [\"n\"]\noutputs = [\"seen\"]\n\
         placement = { node = \"c\" }\n\
         [[process]]\nname = \"counter\"\nmodule = \"logging-counter.wat\"\nclass = \"rt\"\nperiod = \"10ms\"\n\
         deadline = \"1s\"\n\
         capabilities = [\"ports\", \"log\"]\noutputs = [\"n\"]\nstandby = \"hot\"\n\
         [[connection]]\nfrom = \"counter.n\"\nto = \"once.n\"\n",
    )
    .unwrap();
    path
}

/// What the exactly-once consumer has seen: (messages, gaps, duplicates).
fn seen(c: &Cluster) -> Option<(u64, u64, u64)> {
    let hex = c.process("once")?["last_output_hex"].as_str()?.to_string();
    let word = |i: usize| {
        u64::from_str_radix(&hex[i * 16..i * 16 + 16], 16)
            .ok()
            .map(u64::swap_bytes)
    };
    Some((word(0)?, word(1)?, word(2)?))
}

/// `weft logs` of a process that logs one line per tick shows each line
/// once: its replicas' lines are not published as the process's.
fn assert_logged_once(c: &Cluster, target: &str) {
    let out = c.client(&["logs", target, "--for", "2s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_each_line_once(&String::from_utf8_lossy(&out.stdout));
}

/// Log lines carry their tag, so a line seen twice was published twice.
fn assert_each_line_once(text: &str) {
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() > 50, "too few log lines: {lines:?}");
    let unique: std::collections::BTreeSet<&str> = lines.iter().copied().collect();
    assert_eq!(unique.len(), lines.len(), "a line logged twice:\n{text}");
}

/// The standby computes what its process computes (same chain at the same
/// tag); when the process's node is killed, the standby goes live, the
/// consumer sees every tag exactly once, and a new standby starts elsewhere.
#[test]
fn a_hot_standby_takes_over_without_a_missed_or_doubled_tag() {
    let mut c = Cluster::new();
    for node in ["a", "b", "c"] {
        c.start_node(node, "", &[]);
    }
    c.wait_nodes_alive(3);
    c.deploy(&standby_app(c.dir.path()));
    let in_step = |c: &Cluster| {
        let p = c.process("counter")?;
        let standby = &p["standby"];
        let (mine, theirs) = (&p["chain_mark"], &standby["chain_mark"]);
        (p["state"] == "running"
            && standby["state"] == "standby"
            && !mine.is_null()
            && mine["tag_ns"] == theirs["tag_ns"])
            .then(|| {
                let nodes = (
                    p["node"].as_str().unwrap().to_string(),
                    standby["node"].as_str().unwrap().to_string(),
                );
                assert_eq!(
                    mine,
                    theirs,
                    "the standby computes what its process computes\nps: {:#}\n{}",
                    Value::Array(c.ps()),
                    ["controller", "a", "b", "c"]
                        .map(|n| format!("log of {n}:\n{}", c.read_log(n)))
                        .join("\n")
                );
                nodes
            })
    };
    c.wait("counter and its standby in step", |c| in_step(c).is_some());
    let (primary, standby) = in_step(&c).unwrap();
    assert_ne!(primary, standby);
    c.wait("the consumer counting", |c| {
        seen(c).is_some_and(|(n, _, _)| n > 50)
    });
    assert_logged_once(&c, "hot/counter");

    c.signal_node(&primary, libc::SIGKILL);
    c.wait("the standby live on its node", |c| {
        c.running_on("counter").as_deref() == Some(standby.as_str())
    });
    let at_takeover = c.wait_for("what the consumer saw", seen).0;
    c.wait("a new standby in step elsewhere", |c| {
        in_step(c).is_some_and(|(p, s)| p == standby && s != primary)
    });
    c.wait("the consumer counting on", |c| {
        seen(c).is_some_and(|(n, _, _)| n > at_takeover + 100)
    });
    assert_logged_once(&c, "hot/counter");
    let (n, gaps, duplicates) = c.wait_for("what the consumer saw", seen);
    eprintln!("{primary} killed; {standby} took over at message {at_takeover}; {n} seen");
    assert_eq!(
        (gaps, duplicates),
        (0, 0),
        "{n} messages: every tag exactly once"
    );
}

/// The chain each process of `report` (`weft run --json`) had at `tag_ns`.
fn run_chain_at(report: &Value, process: &str, tag_ns: u64) -> Option<String> {
    report["processes"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == process)?["chain_marks"]
        .as_array()?
        .iter()
        .find(|m| m["tag_ns"] == tag_ns)?["output_hash"]
        .as_str()
        .map(String::from)
}

/// The demo app with the PID's deadline at 1 s instead of one period: a
/// deadline miss is a timing fault that changes outputs by design (it is
/// recorded, and replays reproduce it), and a 10 ms stall of this shared
/// VM would make one. What this copy tests is that placement, migration
/// and takeover change nothing.
fn demo_without_timing_faults(dir: &Path) -> PathBuf {
    let wasm = repo().join("examples/wasm");
    let text = std::fs::read_to_string(repo().join("examples/cluster-cell.toml"))
        .unwrap()
        .replace(
            "module = \"wasm/",
            &format!("module = \"{}/", wasm.display()),
        )
        .replace(
            "fuel_per_tick = 200_000",
            "fuel_per_tick = 200_000\ndeadline = \"1s\"",
        );
    assert!(text.contains("deadline"));
    let path = dir.join("cluster-cell.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The demo app computes the same outputs wherever it runs: spread over
/// four nodes, with its PID migrated three times (onto its standby, live to
/// a third node, back) and its node then killed (the standby takes over),
/// every process's output chain equals that of a run on one node, and that
/// run's replay. Analytics consumes every PID output, so its equal chain
/// shows it got each tag exactly once.
#[test]
fn the_demo_gives_the_same_chains_on_one_node_spread_moved_and_taken_over() {
    let mut c = Cluster::new();
    let app = demo_without_timing_faults(c.dir.path());
    for edge in ["edge-1", "edge-2", "edge-3"] {
        c.start_node(edge, "tier=edge", &["plant"]);
    }
    c.start_node("cloud-1", "tier=cloud", &[]);
    c.wait_nodes_alive(4);
    c.deploy(&app);
    let standby_of_pid = |c: &Cluster| -> Option<String> {
        let p = c.process("pid")?;
        (p["standby"]["state"] == "standby")
            .then(|| p["standby"]["node"].as_str().map(String::from))?
    };
    c.wait("pid and its standby", |c| {
        c.running_on("pid").is_some() && standby_of_pid(c).is_some()
    });

    let migrate = |c: &Cluster, to: &str| {
        let out = c.client(&["migrate", "cluster-cell/pid", "--to", to, "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        eprintln!("migration: {report}");
        assert_eq!(report["missed_ticks"], 0, "{report}");
        c.wait("pid live on its new node", |c| {
            c.running_on("pid").as_deref() == Some(to)
        });
    };
    let onto_standby = standby_of_pid(&c).unwrap();
    migrate(&c, &onto_standby);
    let third = ["edge-1", "edge-2", "edge-3"]
        .into_iter()
        .find(|n| {
            Some(*n) != c.running_on("pid").as_deref() && Some(n.to_string()) != standby_of_pid(&c)
        })
        .unwrap();
    migrate(&c, third);
    c.wait("the standby in step again", |c| standby_of_pid(c).is_some());
    migrate(&c, &standby_of_pid(&c).unwrap());

    // Kill a node without the supervisor: its restart from a checkpoint
    // could deliver a setpoint after the PID needed it (a tardy message,
    // which changes the outputs by design).
    c.wait("the standby in step again", |c| standby_of_pid(c).is_some());
    if c.running_on("supervisor") == c.running_on("pid") {
        migrate(&c, &standby_of_pid(&c).unwrap());
        c.wait("the standby in step again", |c| standby_of_pid(c).is_some());
    }
    let victim = c.running_on("pid").unwrap();
    let heir = standby_of_pid(&c).unwrap();
    c.signal_node(&victim, libc::SIGKILL);
    c.wait("the standby live", |c| {
        c.running_on("pid").as_deref() == Some(heir.as_str())
    });
    let mark_of_pid = |c: &Cluster| {
        c.process("pid")
            .and_then(|p| p["chain_mark"]["tag_ns"].as_u64())
    };
    c.wait("a chain mark from the new pid", |c| {
        mark_of_pid(c).is_some()
    });
    let killed_at = mark_of_pid(&c).unwrap();
    c.wait("two more seconds of marks", |c| {
        mark_of_pid(c).is_some_and(|t| t >= killed_at + 2_000_000_000)
    });

    // Deadline misses and tardy messages change outputs by design (they
    // are timing faults, recorded for replay), so chains are compared
    // between runs that had none.
    let mut marks = Vec::new();
    for p in c.ps() {
        let faults = (p["deadline_misses"].as_u64(), p["tardy"].as_u64());
        assert_eq!(
            faults,
            (Some(0), Some(0)),
            "timing faults in the cluster: {p}"
        );
        let mark = &p["chain_mark"];
        marks.push((
            p["name"].as_str().unwrap().to_string(),
            mark["tag_ns"]
                .as_u64()
                .unwrap_or_else(|| panic!("no mark: {p}")),
            mark["output_hash"].as_str().unwrap().to_string(),
        ));
    }
    drop(c);

    // (a) and (d): one node, recorded, then replayed.
    let dir = tempfile::tempdir().unwrap();
    let app = demo_without_timing_faults(dir.path());
    let recording = dir.path().join("cell.rec");
    let latest = marks.iter().map(|(_, t, _)| *t).max().unwrap();
    let single =
        single_node_run_without_timing_faults(&app, latest / 1_000_000_000 + 2, &recording);
    for (process, tag, hash) in &marks {
        assert_eq!(
            run_chain_at(&single, process, *tag).as_deref(),
            Some(hash.as_str()),
            "{process} at {tag} ns: the cluster's chain differs from one node's"
        );
    }
    let replayed = weft()
        .args(["replay", "--json"])
        .arg(&recording)
        .output()
        .unwrap();
    let replayed: Value = serde_json::from_slice(&replayed.stdout).unwrap();
    assert_eq!(replayed["matches_live"], true, "{replayed}");
}

/// `weft run APP` for `secs`, recorded; retried (up to three runs) while a
/// shared machine makes a run miss a deadline.
fn single_node_run_without_timing_faults(app: &Path, secs: u64, recording: &Path) -> Value {
    for attempt in 1..=3 {
        let out = weft()
            .arg("run")
            .arg(app)
            .args(["--json", "--record"])
            .arg(recording)
            .args(["--for", &format!("{secs}s")])
            .current_dir(repo())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let faulty: Vec<&Value> = report["processes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["deadline_misses"] != 0 || p["tardy"] != 0)
            .collect();
        if faulty.is_empty() {
            return report;
        }
        eprintln!("run {attempt} had timing faults, again: {faulty:?}");
    }
    panic!("three single-node runs in a row missed deadlines");
}

/// The body of `GET http://addr/metrics`, if it answers.
fn scrape(addr: std::net::SocketAddr) -> Option<String> {
    http10_get(addr, "/metrics")
}

/// A GET of `path` at `addr` in HTTP/1.0 (the answer comes whole, not in
/// chunks, and the server closes the connection), if it answers 200.
fn http10_get(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    (head.split(' ').nth(1) == Some("200")).then(|| body.to_string())
}

/// The value of the sample line that starts with `series` (its name and
/// labels), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// A real Prometheus (Debian's `prometheus`) scraping `targets` every
/// second, killed by PID on drop.
struct Prometheus {
    child: Child,
    at: std::net::SocketAddr,
}

impl Prometheus {
    fn start(dir: &Path, targets: &[std::net::SocketAddr]) -> Prometheus {
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: weft\n    \
                 static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            ),
        )
        .unwrap();
        let at = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address={at}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start prometheus: install it with scripts/setup.sh (Debian package `prometheus`)");
        Prometheus { child, at }
    }

    /// A GET of `path` on Prometheus's HTTP API, if it answers 200.
    fn get(&self, path: &str) -> Option<String> {
        http10_get(self.at, path)
    }

    /// Waits until an instant query of `promql` has results; returns them.
    fn wait_for(&self, promql: &str) -> Vec<Value> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let path = format!("/api/v1/query?query={encoded}");
        let end = Instant::now() + WAIT;
        while Instant::now() < end {
            let answer = self
                .get(&path)
                .and_then(|b| serde_json::from_str::<Value>(&b).ok());
            if let Some(result) = answer.as_ref().and_then(|a| a["data"]["result"].as_array())
                && !result.is_empty()
            {
                return result.clone();
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let targets = self.get("/api/v1/targets").unwrap_or_default();
        panic!("Prometheus has no {promql} after {WAIT:?}; its targets: {targets}");
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_node_and_the_controller_serve_documented_prometheus_metrics() {
    let loopback = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let (controller_at, node_at) = (loopback(free_port()), loopback(free_port()));
    let dir = tempfile::tempdir().unwrap();
    let mut inner = LocalCluster::new(env!("CARGO_BIN_EXE_weft"), dir.path().join("cluster"))
        .unwrap()
        .controller_metrics(controller_at);
    inner.start_controller().unwrap();
    let mut c = Cluster { inner, dir };
    c.inner
        .start_node(&NodeSpec::new("m1").metrics(node_at))
        .unwrap();
    c.wait_nodes_alive(1);
    c.deploy(&counter_app(c.dir.path(), "metered", ""));

    let labels = r#"{app="metered",process="counter",node="m1",class="rt"}"#;
    let node = c.wait_for("the counter ticking in the node's metrics", |_| {
        let text = scrape(node_at)?;
        (sample(&text, &format!("weft_process_ticks_total{labels}"))? > 0.0).then_some(text)
    });
    let jitter = format!(r#"{{le="+Inf",{}"#, &labels[1..]);
    assert!(
        sample(
            &node,
            &format!("weft_process_jitter_seconds_bucket{jitter}")
        )
        .is_some(),
        "no jitter histogram in\n{node}"
    );
    assert_eq!(
        sample(
            &node,
            r#"weft_node_fabric_dropped_total{node="m1",lane="logs"}"#
        ),
        Some(0.0),
        "the lanes to the fabric are shown: {node}"
    );
    assert!(
        sample(
            &node,
            r#"weft_node_fabric_queue_bytes{node="m1",lane="ports"}"#
        )
        .is_some()
    );
    let trap = labels.replace('}', r#",kind="trap"}"#);
    assert_eq!(
        sample(&node, &format!("weft_process_faults_total{trap}")),
        Some(0.0)
    );
    let controller = c.wait_for("node m1 alive in the controller's metrics", |_| {
        let text = scrape(controller_at)?;
        (sample(&text, r#"weft_controller_node_alive{node="m1"}"#)? == 1.0).then_some(text)
    });
    assert!(
        sample(
            &controller,
            r#"weft_controller_events_total{event="placed"}"#
        ) >= Some(1.0),
        "{controller}"
    );

    // Every exported family is documented.
    let docs = std::fs::read_to_string(repo().join("docs/observability.md")).unwrap();
    for text in [&node, &controller] {
        for family in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
            let name = family.split(' ').next().unwrap();
            assert!(
                docs.contains(&format!("`{name}")),
                "{name} is not in docs/observability.md"
            );
        }
    }

    // A real Prometheus scrapes both and serves the series with their labels.
    let prometheus = Prometheus::start(c.dir.path(), &[controller_at, node_at]);
    let ticks = prometheus.wait_for(r#"weft_process_ticks_total{app="metered",process="counter"}"#);
    let metric = &ticks[0]["metric"];
    assert_eq!(
        (&metric["node"], &metric["class"], &metric["job"]),
        (&Value::from("m1"), &Value::from("rt"), &Value::from("weft")),
        "{ticks:#?}"
    );
    let alive = prometheus.wait_for(r#"weft_controller_node_alive{node="m1"}"#);
    assert_eq!(alive[0]["value"][1], "1", "{alive:#?}");
    let buckets = prometheus.wait_for(r#"weft_process_jitter_seconds_bucket{process="counter"}"#);
    assert!(buckets.len() > 10, "every bucket a series: {buckets:#?}");
    let up = prometheus.wait_for("up == 1");
    assert_eq!(up.len(), 2, "both targets scraped: {up:#?}");
    drop(prometheus);

    // A bad address is refused at start, by name.
    let out = weft()
        .args(["node", "--name", "m2", "--metrics", "nowhere:x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("\"nowhere:x\""), "{stderr}");
}

/// A process that traps at every tick, restarted twice, then parked.
fn crashing_app(dir: &Path) -> PathBuf {
    std::fs::write(
        dir.join("crash.wat"),
        r#"(module (func (export "weft_tick") (param i64) unreachable))"#,
    )
    .unwrap();
    let path = dir.join("crash.toml");
    std::fs::write(
        &path,
        "name = \"crash\"\n[[process]]\nname = \"crasher\"\nmodule = \"crash.wat\"\n\
         period = \"100ms\"\nrestart = \"on-failure\"\nmax_restarts = 2\nbackoff = \"50ms\"\n",
    )
    .unwrap();
    path
}

/// Events of `weft events --json` output, one per line.
fn event_lines(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Where the first event of `kind` about `process` (if given) is.
fn position(events: &[Value], kind: &str, process: Option<&str>) -> Option<usize> {
    events
        .iter()
        .position(|e| e["kind"] == kind && process.is_none_or(|p| e["process"] == p))
}

/// A live migration, a kill -9 takeover and a crash loop are events, in
/// the order they happened; a follower sees them as they come, and goes on
/// after a controller restart without a number seen twice.
#[test]
fn migration_takeover_and_faults_are_events_in_order() {
    let mut c = Cluster::new();
    for node in ["a", "b", "c"] {
        c.start_node(node, "", &[]);
    }
    c.wait_nodes_alive(3);
    let followed = c.dir.path().join("followed.jsonl");
    let follower = Interrupt(
        weft()
            .args(["events", "--follow", "--json"])
            .args(["--cluster", c.name(), "--connect", c.endpoint()])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&followed).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let read_followed = || event_lines(&std::fs::read(&followed).unwrap());
    c.deploy(&standby_app(c.dir.path()));
    let placed = |c: &Cluster| {
        let p = c.process("counter")?;
        let standby = p["standby"]["node"].as_str()?.to_string();
        (p["state"] == "running" && p["standby"]["state"] == "standby")
            .then(|| (p["node"].as_str().unwrap().to_string(), standby))
    };
    let (primary, standby) = c.wait_for("counter and its standby", placed);
    let third = ["a", "b", "c"]
        .into_iter()
        .find(|n| *n != primary && *n != standby)
        .unwrap();
    let out = c.client(&["migrate", "hot/counter", "--to", third]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.wait("the counter on its new node", |c| {
        c.running_on("counter").as_deref() == Some(third)
    });
    c.signal_node(third, libc::SIGKILL);
    c.wait("the standby live", |c| {
        c.running_on("counter").as_deref() == Some(standby.as_str())
    });
    let crash = crashing_app(c.dir.path());
    let out = c.client(&["deploy", crash.to_str().unwrap(), "--no-wait"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.wait("the crasher parked, in its events", |c| {
        let out = c.client(&["events", "--json", "crash/crasher"]);
        position(&event_lines(&out.stdout), "parked", None).is_some()
    });

    let all = event_lines(&c.client(&["events", "--json"]).stdout);
    let at = |kind: &str, process: Option<&str>| {
        position(&all, kind, process)
            .unwrap_or_else(|| panic!("no {kind} event of {process:?} in {all:#?}"))
    };
    let order = [
        at("deployed", None),
        at("migration_begun", Some("counter")),
        at("migration_done", Some("counter")),
        at("node_dead", None),
        at("takeover", Some("counter")),
        at("fault", Some("crasher")),
        at("restart", Some("crasher")),
        at("parked", Some("crasher")),
    ];
    assert!(order.is_sorted(), "out of order {order:?}: {all:#?}");
    let done = &all[order[2]];
    assert_eq!(done["node"], third);
    assert_eq!(done["from"], primary.as_str());
    assert!(done["millis"].as_f64().is_some(), "{done}");
    assert_eq!(all[order[3]]["node"], third);
    assert_eq!(all[order[4]]["node"], standby.as_str());
    let fault = &all[order[5]];
    assert_eq!(fault["fault"], "trap", "{fault}");
    assert!(fault["tag"].as_u64().is_some(), "the fault's tag: {fault}");
    let seq = |e: &Value| e["seq"].as_u64().unwrap();
    let seqs: Vec<u64> = all.iter().map(seq).collect();
    assert!(
        seqs.is_sorted() && seqs.windows(2).all(|w| w[0] < w[1]),
        "{seqs:?}"
    );
    let only = event_lines(&c.client(&["events", "--json", "crash"]).stdout);
    assert!(!only.is_empty() && only.iter().all(|e| e["app"] == "crash"));
    let takeover = seq(&all[order[4]]);
    c.wait("the follower to see the takeover", |_| {
        read_followed().iter().any(|e| seq(e) == takeover)
    });

    // The stream is stored: a restarted controller carries it on, and so
    // does the follower.
    let last = *seqs.last().unwrap();
    c.inner.kill_controller();
    c.start_controller();
    let after_restart = |c: &Cluster| {
        let out = c.client(&["events", "--json", "--after", &last.to_string()]);
        let events = event_lines(&out.stdout);
        position(&events, "node_up", None).map(|i| seq(&events[i]))
    };
    let joined = c.wait_for("a node_up event after the restart", after_restart);
    c.wait("the follower to go on after the restart", |_| {
        read_followed().iter().any(|e| seq(e) == joined)
    });
    drop(follower);
    let followed: Vec<u64> = read_followed().iter().map(seq).collect();
    assert!(
        followed.windows(2).all(|w| w[0] < w[1]),
        "no event twice, none out of order: {followed:?}"
    );
    let before: Vec<u64> = seqs.iter().copied().filter(|s| *s <= last).collect();
    assert!(
        before.iter().all(|s| followed.contains(s)),
        "the follower saw every event: {followed:?} vs {before:?}"
    );
}

/// An app of the example PID alone (10 ms, granted `device:plant`), with
/// `extra` keys for it, e.g. its standby or restart policy.
fn pid_on_plant_app(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("pid.toml");
    std::fs::write(
        &path,
        format!(
            "name = \"loop\"\n[[process]]\nname = \"pid\"\nmodule = \"{}\"\nclass = \"rt\"\n\
             period = \"10ms\"\nfuel_per_tick = 200_000\nmemory = \"1MiB\"\n\
             capabilities = [\"ports\", \"log\", \"device:plant\"]\ninputs = [\"setpoint\"]\n\
             outputs = [\"telemetry\"]\n{extra}\n",
            repo().join("examples/wasm/pid.wasm").display()
        ),
    )
    .unwrap();
    path
}

/// A PID loop with a hot standby, both on nodes whose node config reaches
/// one real plant over Modbus TCP (`weft plant-sim`): only the primary's
/// node writes to it; after the primary's node is killed the promoted
/// standby's does. The nodes report their device links, and losing the
/// plant shows in `weft nodes` and as events.
#[test]
fn only_the_primary_writes_to_a_real_device_and_its_loss_is_reported() {
    let mut c = Cluster::new();
    let sim = support::modbus_plant_sim(free_port());
    let config = support::plant_node_config(c.dir.path(), sim.port);
    let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    for name in ["a", "b"] {
        let mut node = NodeSpec::new(name).config(&config);
        if name == "a" {
            node = node.metrics(metrics);
        }
        c.inner.start_node(&node).unwrap();
    }
    c.wait_nodes_alive(2);
    let link = |c: &Cluster, node: &str| {
        c.nodes()
            .into_iter()
            .find(|n| n["name"] == node)
            .map(|n| n["device_reports"][0].clone())
            .filter(|d| !d.is_null())
    };
    for node in ["a", "b"] {
        c.wait(&format!("{node}'s plant link connected"), |c| {
            link(c, node).is_some_and(|d| d["state"] == "connected" && d["kind"] == "modbus-tcp")
        });
    }
    let series = "weft_node_device_state{node=\"a\",device=\"plant\",kind=\"modbus-tcp\",state=\"connected\"}";
    c.wait("a's device state in /metrics", |_| {
        scrape(metrics).is_some_and(|text| sample(&text, series) == Some(1.0))
    });
    c.deploy(&pid_on_plant_app(c.dir.path(), "standby = \"hot\""));
    let placed = |c: &Cluster| {
        let p = c.process("pid")?;
        let standby = p["standby"]["node"].as_str()?.to_string();
        (p["state"] == "running" && p["standby"]["state"] == "standby")
            .then(|| (p["node"].as_str().unwrap().to_string(), standby))
    };
    let (primary, standby) = c.wait_for("pid and its standby", placed);
    let writes = |c: &Cluster, node: &str| link(c, node).and_then(|d| d["writes"].as_u64());
    c.wait("the primary driving the plant", |c| {
        writes(c, &primary).is_some_and(|w| w > 100)
    });
    assert_eq!(
        writes(&c, &standby),
        Some(0),
        "the standby computes every tick but never writes"
    );

    c.signal_node(&primary, libc::SIGKILL);
    c.wait("the standby live", |c| {
        c.running_on("pid").as_deref() == Some(standby.as_str())
    });
    c.wait("the promoted standby driving the plant", |c| {
        writes(c, &standby).is_some_and(|w| w > 100)
    });

    sim.kill();
    c.wait("the plant's loss in weft nodes", |c| {
        link(c, &standby).is_some_and(|d| d["state"] == "disconnected")
    });
    let table = c.client(&["nodes"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("plant(modbus-tcp disconnected)"), "{table}");
    assert!(table.contains("devices not connected:"), "{table}");
    assert!(
        table.contains(&format!("{standby}/plant (modbus-tcp): disconnected")),
        "{table}"
    );
    // Events are readable once stored, a moment after the status that
    // made them.
    c.wait("a device_down event", |c| {
        let events = c.client(&["events", "--json"]);
        event_lines(&events.stdout)
            .iter()
            .any(|e| e["kind"] == "device_down" && e["node"] == standby.as_str())
    });
}

/// A PID driving a real plant, with no standby, whose node is killed:
/// it restarts on the other node from its checkpoint and re-runs the tags
/// since, and those writes are held back (counted in /metrics), never sent
/// to the plant as stale commands; from the present on it drives the plant.
#[test]
fn a_restored_process_catching_up_does_not_write_to_a_real_device() {
    let mut c = Cluster::new();
    let sim = support::modbus_plant_sim(free_port());
    let config = support::plant_node_config(c.dir.path(), sim.port);
    let mut metrics = std::collections::BTreeMap::new();
    for name in ["a", "b"] {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
        metrics.insert(name.to_string(), addr);
        let node = NodeSpec::new(name).config(&config).metrics(addr);
        c.inner.start_node(&node).unwrap();
    }
    c.wait_nodes_alive(2);
    c.deploy(&pid_on_plant_app(c.dir.path(), "restart = \"on-failure\""));
    let first = c.wait_for("pid running", |c| c.running_on("pid"));
    // On both nodes: the one that survives restores from its copy.
    let who: ProcessRef = "loop/pid".parse().unwrap();
    c.wait("a checkpoint on both nodes", |c| {
        runtime().block_on(async {
            let Ok(client) = c.inner.client().await else {
                return false;
            };
            let holders = client.checkpoint_holders(&who).await;
            client.close().await;
            holders.is_ok_and(|(_, _, held)| held.iter().filter(|(_, t)| t.0 > 0).count() == 2)
        })
    });
    let fenced = |node: &str| {
        scrape(metrics[node]).and_then(|text| {
            text.lines()
                .filter(|l| {
                    l.starts_with("weft_process_fenced_writes_total{")
                        && l.contains("process=\"pid\"")
                })
                .find_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        })
    };
    c.wait("the first node's pid in /metrics", |_| {
        fenced(&first).is_some()
    });
    assert_eq!(fenced(&first), Some(0), "a live process holds nothing back");

    c.signal_node(&first, libc::SIGKILL);
    let second = if first == "a" { "b" } else { "a" };
    c.wait("pid restored on the other node", |c| {
        c.running_on("pid").as_deref() == Some(second)
            && c.process("pid")
                .is_some_and(|p| p["restored_from_tag"].as_u64().is_some_and(|t| t > 0))
    });
    c.wait("the re-run tags' writes held back", |_| {
        fenced(second).is_some_and(|n| n > 0)
    });
    let writes = |c: &Cluster| {
        c.nodes()
            .into_iter()
            .find(|n| n["name"] == second)
            .and_then(|n| n["device_reports"][0]["writes"].as_u64())
    };
    let before = c.wait_for("the second node's plant link", writes);
    c.wait("the restored pid driving the plant", |c| {
        writes(c).is_some_and(|w| w > before + 50)
    });
}
