//! Hot-standby takeover: what the consumers of a process see when its
//! node is killed (`kill -9`) and its standby goes live.
//!
//! A real local cluster: nodes `a`, `b` and `d` for the process and its
//! standby, `c` for the process's consumer (so its outputs travel on the
//! fabric). Each round deploys a 10 ms rt process with `standby = "hot"`,
//! waits until the standby is in step, watches the outputs, kills the
//! process's node, and keeps watching until the standby is live and a while
//! after. The watch counts output tags that never arrived and the longest
//! pause beyond one period, as `weft migrate` does. The baseline is the
//! same watch of the same outputs for as long, just before, with no kill.
//! The killed node is started again for the next round.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use weft_client::LocalCluster;
use weft_client::cluster::NodeSpec;
use weft_client::migration::OutputWatch;
use weft_fabric::codec::DeployBundle;
use weft_fabric::proto::NodeStatus;
use weft_types::{NodeName, ProcessRef, ProcessState};

use crate::Ctx;
use crate::checkpoint::{self, FUEL_PER_CALL};
use crate::cluster::{Watch, deploy_modules, runs, start_cluster};
use crate::modules::COUNT_MESSAGES;
use crate::stats::{Figure, Goal, Stat, Summary, Unit};

const PROCESS: &str = "state";
const SINK: &str = "sink";
const SINK_NODE: &str = "c";
const HOSTS: [&str; 3] = ["a", "b", "d"];
const PERIOD: Duration = Duration::from_millis(10);
const PERIOD_NS: u64 = PERIOD.as_nanos() as u64;
const STATE_BYTES: u64 = 64 << 10;
/// How long to keep watching after the standby is live.
const WATCH_AFTER: Duration = Duration::from_millis(500);

/// One takeover: what the outputs showed with and without the kill.
struct Round {
    /// (longest pause beyond one period in µs, missed tags).
    takeover: Option<(f64, u64)>,
    idle: Option<(f64, u64)>,
    /// From the kill until the standby's node reported it live.
    live_after: Duration,
}

/// The takeover figures (missed tags, output pause), or one skipped
/// figure pair saying why they could not be measured.
pub fn takeover(ctx: &Ctx, runtime: &tokio::runtime::Runtime) -> Vec<Figure> {
    let rounds_wanted = if ctx.quick { 2 } else { 5 };
    eprintln!("[bench]   {rounds_wanted} hot-standby takeovers after kill -9 ...");
    match runtime.block_on(rounds(ctx, rounds_wanted)) {
        Ok(rounds) if !rounds.is_empty() => figures(&rounds),
        Ok(_) => skipped("no takeover completed".into()),
        Err(e) => {
            eprintln!("[bench]   takeovers failed: {e:#}");
            skipped(format!("failed: {e:#}"))
        }
    }
}

async fn rounds(ctx: &Ctx, n: usize) -> Result<Vec<Round>> {
    let nodes = [HOSTS[0], HOSTS[1], HOSTS[2], SINK_NODE];
    let (mut cluster, mut watch) = start_cluster(ctx, "takeover", 16, &nodes).await?;
    let mut rounds = Vec::new();
    for k in 0..n {
        let app = format!("hot{k}");
        let round = one_round(ctx, &mut cluster, &mut watch, &app)
            .await
            .with_context(|| format!("takeover {} of {n}", k + 1))?;
        rounds.push(round);
    }
    watch.client.close().await;
    Ok(rounds)
}

async fn one_round(
    ctx: &Ctx,
    cluster: &mut LocalCluster,
    watch: &mut Watch,
    app: &str,
) -> Result<Round> {
    watch.deploy(&deploy(ctx, app)?).await?;
    let mut placed = None;
    watch
        .until(
            &format!("{app}: process, its standby in step and its consumer running"),
            Duration::from_secs(60),
            |w, _, _| {
                placed = placement(w, app);
                placed.is_some() && w.status.get(SINK_NODE).is_some_and(|s| runs(s, app, SINK))
            },
        )
        .await?;
    let (primary, standby) = placed.expect("checked");
    let idle = watch_for(watch, app, Duration::from_secs(1)).await?;

    let seen = watch_outputs(watch, app).await?;
    let killed = Instant::now();
    cluster.signal_node(primary.as_str(), libc::SIGKILL)?;
    cluster.kill_node(primary.as_str());
    let live = watch
        .until(
            &format!("{app}: the standby live on {standby}"),
            Duration::from_secs(30),
            |w, _, _| w.status.get(&standby).is_some_and(|s| live_on(s, app)),
        )
        .await?;
    tokio::time::sleep(WATCH_AFTER).await;
    let takeover = seen.finish(PERIOD_NS).map(|o| (o.pause_us, o.missed));

    cluster.start_node(&NodeSpec::new(primary.as_str()).max_processes(16))?;
    watch
        .until(
            &format!("{primary} back"),
            Duration::from_secs(30),
            |w, _, _| w.alive.contains(&primary) && w.status.contains_key(&primary),
        )
        .await?;
    watch.remove(app).await?;
    Ok(Round {
        takeover,
        idle,
        live_after: live - killed,
    })
}

/// The deploy request: the stateful process with a hot standby, kept off
/// the consumer's node, and the consumer on `c`.
fn deploy(ctx: &Ctx, app: &str) -> Result<DeployBundle> {
    let spec = checkpoint::spec(ctx, STATE_BYTES, PERIOD)?;
    let weft_manifest::ModuleRef::Path(path) = &spec.module else {
        anyhow::bail!("the benchmark's module is a file");
    };
    let module = std::fs::read(path)?;
    let text = format!(
        "[[process]]\nname = \"{PROCESS}\"\nmodule = \"STATE_WASM\"\nclass = \"rt\"\nperiod = \"{}ms\"\n\
         fuel_per_tick = {FUEL_PER_CALL}\nmemory = {STATE_BYTES}\nstandby = \"hot\"\n\
         capabilities = [\"ports\"]\noutputs = [\"out\"]\nplacement = {{ anti_affinity = [\"{SINK}\"] }}\n\n\
         [[process]]\nname = \"{SINK}\"\nmodule = \"SINK_WASM\"\ncapabilities = [\"ports\"]\ninputs = [\"in\"]\n\
         placement = {{ node = \"{SINK_NODE}\" }}\n\n\
         [[connection]]\nfrom = \"{PROCESS}.out\"\nto = \"{SINK}.in\"\n",
        PERIOD.as_millis()
    );
    Ok(deploy_modules(
        app,
        &[
            ("STATE_WASM", &module),
            ("SINK_WASM", COUNT_MESSAGES.as_bytes()),
        ],
        &text,
    ))
}

/// (node running the process live, node running its standby), once both
/// report it running.
fn placement(w: &Watch, app: &str) -> Option<(NodeName, NodeName)> {
    let find = |replica: bool| {
        w.status
            .values()
            .filter(|s| w.alive.contains(&s.name))
            .find(|s| {
                s.processes.iter().any(|p| {
                    p.app == app
                        && p.name == PROCESS
                        && p.state == ProcessState::Running
                        && p.replica == replica
                })
            })
            .map(|s| s.name.clone())
    };
    Some((find(false)?, find(true)?))
}

fn live_on(s: &NodeStatus, app: &str) -> bool {
    s.processes.iter().any(|p| {
        p.app == app && p.name == PROCESS && p.state == ProcessState::Running && !p.replica
    })
}

async fn watch_for(watch: &Watch, app: &str, window: Duration) -> Result<Option<(f64, u64)>> {
    let outputs = watch_outputs(watch, app).await?;
    tokio::time::sleep(window).await;
    Ok(outputs.finish(PERIOD_NS).map(|o| (o.pause_us, o.missed)))
}

async fn watch_outputs(watch: &Watch, app: &str) -> Result<OutputWatch> {
    let who = ProcessRef::new(app.parse()?, PROCESS.parse()?);
    Ok(OutputWatch::start(watch.session(), watch.keys(), &who).await?)
}

const MISSED_ID: &str = "takeover-missed-tags";
const MISSED_TITLE: &str = "Tags missed at hot-standby takeover after kill -9 (10 ms loop)";
const MISSED_GOAL: &str = "zero in every takeover (p99 = 0)";
const PAUSE_ID: &str = "takeover-output-pause";
const PAUSE_TITLE: &str = "Output pause at hot-standby takeover after kill -9 (10 ms loop)";

fn figures(rounds: &[Round]) -> Vec<Figure> {
    let observed: Vec<&Round> = rounds.iter().filter(|r| r.takeover.is_some()).collect();
    if observed.is_empty() {
        return skipped("no output of the process reached the fabric during any takeover".into());
    }
    let missed: Vec<u64> = observed.iter().map(|r| r.takeover.unwrap().1).collect();
    let idle_missed: Vec<u64> = observed
        .iter()
        .filter_map(|r| r.idle.map(|i| i.1))
        .collect();
    let pause: Vec<u64> = observed
        .iter()
        .map(|r| (r.takeover.unwrap().0 * 1e3) as u64)
        .collect();
    let idle_pause: Vec<u64> = observed
        .iter()
        .filter_map(|r| r.idle.map(|i| (i.0 * 1e3) as u64))
        .collect();
    let per_round: Vec<String> = observed
        .iter()
        .map(|r| {
            let (p, m) = r.takeover.unwrap();
            format!(
                "{m} missed / {:.1} ms pause / live after {:.0} ms",
                p / 1e3,
                r.live_after.as_secs_f64() * 1e3
            )
        })
        .collect();
    let setup = format!(
        "{} rounds on a real local cluster (controller and nodes a, b, d, c as OS processes on loopback): a 10 ms rt \
         process with 64 KiB of state and `standby = \"hot\"`, its consumer pinned to c; once the standby was in \
         step, the process's node was killed with SIGKILL and its outputs watched by a client session until 500 ms \
         after the standby's node reported it live. Per round: {}.",
        observed.len(),
        per_round.join("; ")
    );
    vec![
        Figure::new(
            MISSED_ID,
            MISSED_TITLE,
            Unit::Ticks,
            Summary::of_values("output tags between the first and last seen that never arrived", &missed),
            Summary::of_values("the same watch for 1 s just before, no kill", &idle_missed),
            Some(Goal::ValueAtMost {
                stat: Stat::P99,
                max: 0.0,
            }),
            MISSED_GOAL,
        )
        .note(setup.clone()),
        Figure::new(
            PAUSE_ID,
            PAUSE_TITLE,
            Unit::Nanoseconds,
            Summary::of_values(
                "longest pause between first arrivals of successive tags, beyond one period",
                &pause,
            ),
            Summary::of_values("the same watch for 1 s just before, no kill", &idle_pause),
            None,
            "none (context): the pause is detection (liveliness) + the controller's sync + the promotion",
        )
        .note(setup),
    ]
}

fn skipped(reason: String) -> Vec<Figure> {
    vec![
        Figure::skipped(
            MISSED_ID,
            MISSED_TITLE,
            Unit::Ticks,
            MISSED_GOAL,
            reason.clone(),
        ),
        Figure::skipped(
            PAUSE_ID,
            PAUSE_TITLE,
            Unit::Nanoseconds,
            "none (context)",
            reason,
        ),
    ]
}
