//! The scale group: apps of N = 100, 1,000 and 10,000 stateful periodic
//! processes over 4 nodes of a real local cluster (the controller and the
//! nodes are OS processes of the `weft` binary), and the recovery of the
//! ~1,000 processes of one node after `kill -9` of it (an app of 4,000
//! over the 4 nodes; no standbys).
//!
//! For each N the group deploys one app, times the deploy until node
//! statuses show all N running, then watches a steady window: once a
//! second it reads the controller's and the nodes' CPU time, RSS and disk
//! writes from `/proc`, and the nodes' checkpoint byte counters from their
//! statuses (the replica pushes and fetches that cross the fabric), and it
//! times `weft ps` (the controller's answer to a client). The baseline of
//! every steady figure is the same cluster with no app, measured in the
//! same run; the checkpoint traffic at 10,000 is judged against ten times
//! the traffic at 1,000.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use weft_client::LocalCluster;
use weft_fabric::codec::DeployBundle;

use crate::Ctx;
use crate::cluster::{Watch, deploy_modules, spawn_true, start_cluster};
use crate::stats::{Figure, Goal, Stat, Summary, Unit, histogram, record};

const NODES: [&str; 4] = ["a", "b", "c", "d"];

/// A process with 64 KiB of state (one Wasm page) that writes one word of
/// it every tick, so every checkpoint of it carries one changed OS page.
const STATEFUL: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "weft_tick") (param i64)
    (i64.store (i32.const 0) (i64.add (i64.load (i32.const 0)) (i64.const 1)))))
"#;

/// The page each process touches: the RSS figure counts what is beyond it.
const TOUCHED: u64 = 4096;

/// How long the time to all running may take for N = 10,000 (the issue's
/// goal), and the bound on waiting for any deploy at all.
const GOAL_RUNNING: Duration = Duration::from_secs(30);
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(300);

pub fn scale(ctx: &Ctx) -> Result<Vec<Figure>> {
    crate::on_runtime(run(ctx))
}

/// What one steady window saw, one sample per second.
#[derive(Default)]
struct Steady {
    /// CPU of the controller, percent of one core ×100.
    controller_cpu: Vec<u64>,
    controller_rss: u64,
    /// Bytes per second the controller wrote to storage.
    controller_disk: Vec<u64>,
    /// CPU of the nodes together, percent of one core ×100.
    nodes_cpu: Vec<u64>,
    nodes_rss: u64,
    /// Checkpoint bytes per second the nodes sent each other.
    checkpoint_bytes: Vec<u64>,
    /// `weft ps` round trips, nanoseconds.
    ps: Vec<u64>,
}

/// One N: the deploy and what its steady state costs.
struct Run {
    n: usize,
    to_running: Duration,
    /// The same count of native process spawns (the deploy's scale).
    spawn: hdrhistogram::Histogram<u64>,
    steady: Steady,
}

async fn run(ctx: &Ctx) -> Result<Vec<Figure>> {
    let sizes: &[usize] = if ctx.quick {
        &[100, 1_000]
    } else {
        &[100, 1_000, 10_000]
    };
    let window = if ctx.quick { 5 } else { 10 };
    let largest = *sizes.last().expect("sizes are set");
    // Room for a dead node's share on the other three.
    let per_node = (largest / 3 + 100) as u32;
    let (mut cluster, mut watch) = start_cluster(ctx, "scale", per_node, &NODES).await?;
    eprintln!("[bench]   scale: the idle cluster for {window} s (the baseline)");
    let idle = steady(&cluster, &mut watch, window).await?;
    let mut runs = Vec::new();
    for &n in sizes {
        runs.push(size(&cluster, &mut watch, n, window).await?);
    }
    // Four times 1,000 (100 in a quick run), so the killed node runs about
    // that many.
    let recovery = kill_recovery(&mut cluster, &mut watch, 4 * (largest / 10).min(1_000)).await;
    watch.client.close().await;
    let mut figures = Vec::new();
    for r in &runs {
        figures.extend(size_figures(r, &idle, &runs));
    }
    figures.push(recovery_figure(recovery));
    Ok(figures)
}

fn app_name(n: usize) -> String {
    format!("scale{n}")
}

fn request(app: &str, n: usize) -> DeployBundle {
    let text: String = (0..n)
        .map(|i| {
            format!(
                "[[process]]\nname = \"p{i}\"\nmodule = \"MODULE\"\nclass = \"be\"\nperiod = \"1s\"\n"
            )
        })
        .collect();
    deploy_modules(app, &[("MODULE", STATEFUL.as_bytes())], &text)
}

/// Deploys `n`, waits for all running, measures the steady window, removes
/// the app again.
async fn size(cluster: &LocalCluster, watch: &mut Watch, n: usize, window: u64) -> Result<Run> {
    let app = app_name(n);
    eprintln!("[bench]   scale: deploying {n} processes over 4 nodes");
    let to_running = deploy_and_wait(watch, &app, n).await?;
    eprintln!(
        "[bench]   scale: {n} running after {:.1} s; steady window of {window} s",
        to_running.as_secs_f64()
    );
    let steady = steady(cluster, watch, window).await?;
    watch.remove_and_wait(&app).await?;
    let mut spawn = histogram();
    record(&mut spawn, spawn_true(n)?.as_nanos() as u64);
    Ok(Run {
        n,
        to_running,
        spawn,
        steady,
    })
}

async fn deploy_and_wait(watch: &mut Watch, app: &str, n: usize) -> Result<Duration> {
    let bundle = request(app, n);
    let t = Instant::now();
    watch.deploy(&bundle).await?;
    let mut shown = Instant::now();
    let done = watch
        .until(
            &format!("{n} processes of {app} running"),
            DEPLOY_TIMEOUT,
            |w, _, _| {
                let running = w.running(app);
                if shown.elapsed() > Duration::from_secs(5) {
                    eprintln!("[bench]   scale: {running} of {n} running");
                    shown = Instant::now();
                }
                running >= n
            },
        )
        .await?;
    Ok(done.duration_since(t))
}

/// Samples the cluster once a second for `secs` seconds.
async fn steady(cluster: &LocalCluster, watch: &mut Watch, secs: u64) -> Result<Steady> {
    let controller = Proc::of(cluster.controller_pid().context("no controller")?);
    let nodes: Vec<Proc> = NODES
        .iter()
        .filter_map(|n| cluster.node_pid(n))
        .map(Proc::of)
        .collect();
    let mut out = Steady::default();
    let mut before = Reading::take(&controller, &nodes, watch)?;
    for _ in 0..secs {
        let t = Instant::now();
        let end = t + Duration::from_secs(1);
        watch
            .until(
                "a second of statuses",
                Duration::from_secs(5),
                |_, at, _| at >= end,
            )
            .await?;
        let ps = Instant::now();
        watch.client.ps().await.context("weft ps")?;
        out.ps.push(ps.elapsed().as_nanos() as u64);
        let now = Reading::take(&controller, &nodes, watch)?;
        let per_second = |a: u64, b: u64| {
            let dt = now.at.duration_since(before.at).as_secs_f64();
            (b.saturating_sub(a) as f64 / dt) as u64
        };
        out.controller_cpu
            .push(per_second(before.controller_cpu, now.controller_cpu));
        out.nodes_cpu
            .push(per_second(before.nodes_cpu, now.nodes_cpu));
        out.controller_disk
            .push(per_second(before.controller_disk, now.controller_disk));
        out.checkpoint_bytes
            .push(per_second(before.checkpoint_bytes, now.checkpoint_bytes));
        before = now;
    }
    out.controller_rss = controller.rss()?;
    out.nodes_rss = nodes.iter().map(Proc::rss).sum::<Result<u64>>()?;
    Ok(out)
}

/// Counters read at one instant; CPU in percent-of-a-core ×100 seconds.
struct Reading {
    at: Instant,
    controller_cpu: u64,
    controller_disk: u64,
    nodes_cpu: u64,
    checkpoint_bytes: u64,
}

impl Reading {
    fn take(controller: &Proc, nodes: &[Proc], watch: &Watch) -> Result<Reading> {
        let mut nodes_cpu = 0;
        for n in nodes {
            nodes_cpu += n.cpu()?;
        }
        Ok(Reading {
            at: Instant::now(),
            controller_cpu: controller.cpu()?,
            controller_disk: controller.write_bytes()?,
            nodes_cpu,
            checkpoint_bytes: watch.status.values().map(|s| s.checkpoint_bytes_sent).sum(),
        })
    }
}

/// One OS process read through `/proc`.
struct Proc {
    pid: u32,
}

impl Proc {
    fn of(pid: u32) -> Proc {
        Proc { pid }
    }

    fn read(&self, file: &str) -> Result<String> {
        let path = format!("/proc/{}/{file}", self.pid);
        std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))
    }

    /// User + system CPU time, in hundredths of a percent of one core
    /// times seconds (so a rate of it is percent ×100).
    fn cpu(&self) -> Result<u64> {
        let stat = self.read("stat")?;
        // The fields after the command name, which may hold spaces.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| -> Result<u64> {
            fields
                .get(i)
                .and_then(|f| f.parse().ok())
                .with_context(|| format!("/proc/{}/stat has no field {i}", self.pid))
        };
        // utime and stime are fields 14 and 15, 12 and 13 after the name.
        let total = ticks(11)? + ticks(12)?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Ok(total * 10_000 / hz)
    }

    fn rss(&self) -> Result<u64> {
        let statm = self.read("statm")?;
        let pages: u64 = statm
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("unreadable statm")?;
        Ok(pages * 4096)
    }

    /// Bytes this process caused to be written to storage.
    fn write_bytes(&self) -> Result<u64> {
        let io = self.read("io")?;
        io.lines()
            .find_map(|l| l.strip_prefix("write_bytes:"))
            .and_then(|v| v.trim().parse().ok())
            .context("no write_bytes in /proc/PID/io")
    }
}

/// What a `kill -9` of a node cost: how many processes it ran, when its
/// death was seen, and when they all ran on the nodes left.
struct Recovery {
    lost: usize,
    detected: Duration,
    running: Duration,
}

/// Deploys `n` processes over the 4 nodes, kills -9 the node with the
/// most of them, and times until all `n` run on the nodes left.
async fn kill_recovery(
    cluster: &mut LocalCluster,
    watch: &mut Watch,
    n: usize,
) -> Result<Recovery> {
    let app = "recover";
    eprintln!("[bench]   scale: {n} processes, then kill -9 of the busiest node");
    deploy_and_wait(watch, app, n).await?;
    // Let every process checkpoint and its peer keep a copy.
    let settle = Instant::now() + Duration::from_secs(2);
    watch
        .until(
            "two seconds of checkpoints",
            Duration::from_secs(10),
            |_, at, _| at >= settle,
        )
        .await?;
    let on = |w: &Watch, node: &str| {
        w.status
            .get(node)
            .map_or(0, |s| s.processes.iter().filter(|p| p.app == app).count())
    };
    let victim = *NODES
        .iter()
        .max_by_key(|node| on(watch, node))
        .expect("four nodes");
    let lost = on(watch, victim);
    let t = Instant::now();
    cluster.signal_node(victim, libc::SIGKILL)?;
    let detected = watch
        .until(
            &format!("node {victim} seen dead"),
            Duration::from_secs(30),
            |w, _, _| !w.alive.contains(victim),
        )
        .await?;
    let running = watch
        .until(
            &format!("{n} processes running again without node {victim}"),
            Duration::from_secs(60),
            |w, _, _| w.running(app) >= n,
        )
        .await?;
    cluster.kill_node(victim);
    watch.remove_and_wait(app).await?;
    Ok(Recovery {
        lost,
        detected: detected.duration_since(t),
        running: running.duration_since(t),
    })
}

fn one(label: impl Into<String>, v: f64) -> Summary {
    Summary::from_values(label, v, v, v, 1)
}

fn series(label: impl Into<String>, values: &[u64]) -> Summary {
    Summary::of_values(label, values)
}

fn size_figures(r: &Run, idle: &Steady, runs: &[Run]) -> Vec<Figure> {
    let n = r.n;
    let s = &r.steady;
    let mut figures = vec![running_figure(r)];
    figures.push(
        Figure::new(
            &format!("scale-{n}-controller-cpu"),
            &format!("Controller CPU, {n} processes running on 4 nodes"),
            Unit::PercentOfCore,
            series("weft controller with the app running (per-second samples)", &s.controller_cpu),
            series("the same controller, cluster idle", &idle.controller_cpu),
            Some(Goal::ValueAtMost { stat: Stat::Median, max: 2_500.0 }),
            "median < 25 % of one core",
        )
        .note("CPU time (user + system) from /proc/PID/stat over each second of the steady window; ×100 in the JSON"),
    );
    figures.push(Figure::new(
        &format!("scale-{n}-controller-disk"),
        &format!("Controller disk writes, {n} processes running"),
        Unit::BytesPerSecond,
        series(
            "weft controller, app running (write_bytes per second)",
            &s.controller_disk,
        ),
        series("the same controller, cluster idle", &idle.controller_disk),
        None,
        "none (context): the controller keeps metadata only, so ~0 checkpoint bytes",
    ));
    figures.push(Figure::new(
        &format!("scale-{n}-controller-rss"),
        &format!("Controller RSS, {n} processes running"),
        Unit::Bytes,
        one("weft controller, app running", s.controller_rss as f64),
        one(
            "the same controller, cluster idle",
            idle.controller_rss as f64,
        ),
        None,
        "none (context)",
    ));
    figures.push(Figure::new(
        &format!("scale-{n}-nodes-cpu"),
        &format!("CPU of the 4 nodes together, {n} processes running"),
        Unit::PercentOfCore,
        series("weft nodes, app running (per-second samples)", &s.nodes_cpu),
        series("the same nodes, idle", &idle.nodes_cpu),
        None,
        "none (context)",
    ));
    let beyond = (s.nodes_rss.saturating_sub(idle.nodes_rss) as f64 / n as f64) - TOUCHED as f64;
    figures.push(
        Figure::new(
            &format!("scale-{n}-node-rss-per-process"),
            &format!("Node RSS per process beyond touched memory, {n} processes"),
            Unit::Bytes,
            one(
                "(RSS of the 4 nodes − idle RSS) / N − one touched page",
                beyond,
            ),
            one("touched memory per process", TOUCHED as f64),
            Some(Goal::ValueAtMost {
                stat: Stat::Median,
                max: 65_536.0,
            }),
            "≤ 64 KiB beyond touched memory",
        )
        .note("includes each process's checkpoint on its node and its peer's copy"),
    );
    figures.push(checkpoint_figure(r, idle, runs));
    figures.push(Figure::new(
        &format!("scale-{n}-ps-latency"),
        &format!("`weft ps` round trip, {n} processes running"),
        Unit::Nanoseconds,
        series("weft ps with the app running", &s.ps),
        series("weft ps, cluster idle", &idle.ps),
        None,
        "none (context)",
    ));
    figures
}

fn running_figure(r: &Run) -> Figure {
    let n = r.n;
    let goal = (n == 10_000).then_some(Goal::ValueAtMost {
        stat: Stat::Median,
        max: GOAL_RUNNING.as_nanos() as f64,
    });
    let mut h = histogram();
    record(&mut h, r.to_running.as_nanos() as u64);
    let spawn = Summary::of(
        format!("native: spawn and wait for {n} × /bin/true, one after another"),
        &r.spawn,
    );
    Figure::new(
        &format!("scale-{n}-to-running"),
        &format!("Deploy of {n} stateful processes over 4 nodes, until all run"),
        Unit::Nanoseconds,
        Summary::of("weft: deploy request → every process reported running", &h),
        spawn,
        goal,
        if n == 10_000 { "≤ 30 s" } else { "none (context)" },
    )
    .note("one deploy per N of be processes with 64 KiB of memory, each writing it once a second; the baseline is not the same work and only gives a sense of scale")
}

fn checkpoint_figure(r: &Run, idle: &Steady, runs: &[Run]) -> Figure {
    let n = r.n;
    let title = format!("Checkpoint bytes per second on the fabric, {n} processes");
    let weft = series(
        "weft: replica pushes and fetches between nodes",
        &r.steady.checkpoint_bytes,
    );
    match runs.iter().find(|b| b.n * 10 == n) {
        Some(base) => {
            let tenfold: Vec<u64> = base
                .steady
                .checkpoint_bytes
                .iter()
                .map(|v| v * 10)
                .collect();
            Figure::new(
                &format!("scale-{n}-checkpoint-traffic"),
                &title,
                Unit::BytesPerSecond,
                weft,
                series(format!("10 × the traffic at {}", base.n), &tenfold),
                Some(Goal::RatioAtMost {
                    stat: Stat::Median,
                    max: 1.1,
                }),
                "median ≤ 1.1 × 10 × the traffic at a tenth of N",
            )
        }
        None => Figure::new(
            &format!("scale-{n}-checkpoint-traffic"),
            &title,
            Unit::BytesPerSecond,
            weft,
            series("the same nodes, idle", &idle.checkpoint_bytes),
            None,
            "none (context)",
        ),
    }
}

fn recovery_figure(recovery: Result<Recovery>) -> Figure {
    let id = "scale-recovery-after-kill";
    let title =
        "Processes running elsewhere after kill -9 of a node with ~1,000 of them (no standbys)";
    let goal_text = "≤ 1 s";
    match recovery {
        Ok(r) => {
            let (mut weft, mut detect) = (histogram(), histogram());
            record(&mut weft, r.running.as_nanos() as u64);
            record(&mut detect, r.detected.as_nanos() as u64);
            Figure::new(
                id,
                title,
                Unit::Nanoseconds,
                Summary::of(
                    format!("weft: kill -9 → all {} of its processes reported running on the 3 nodes left", r.lost),
                    &weft,
                ),
                Summary::of("kill -9 → the node's liveliness gone (detection alone)", &detect),
                Some(Goal::ValueAtMost { stat: Stat::P99, max: 1e9 }),
                goal_text,
            )
            .note("one kill per run; the processes resume from the checkpoints their peers hold")
        }
        Err(e) => Figure::skipped(
            id,
            title,
            Unit::Nanoseconds,
            goal_text,
            format!("failed: {e:#}"),
        ),
    }
}
