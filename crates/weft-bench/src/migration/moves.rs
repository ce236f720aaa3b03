//! The moves on a real cluster: each case's app deployed, its process
//! moved back and forth between nodes `a` and `b` with the code `weft
//! migrate` runs, each move preceded by a watch of the outputs of the same
//! length with no move.

use std::time::Duration;

use anyhow::{Context, Result};
use weft_client::Client;
use weft_client::migration::{self, OutputWatch};
use weft_fabric::codec::DeployBundle;
use weft_fabric::proto::NodeStatus;
use weft_types::{NodeName, ProcessRef, ProcessState};

use super::{MOVE_TIMEOUT, MOVERS, PROCESS, SINK, SINK_NODE, SIZES};
use crate::Ctx;
use crate::checkpoint::{self, FUEL_PER_CALL};
use crate::cluster::{Watch, deploy_modules, runs, start_cluster};
use crate::modules::COUNT_MESSAGES;

/// An app to move: its state size and its process's period.
#[derive(Clone, Copy)]
pub(super) struct Case {
    pub(super) bytes: u64,
    pub(super) name: &'static str,
    pub(super) period: Duration,
}

impl Case {
    fn app(&self) -> String {
        format!("mig-{}-{}ms", self.bytes, self.period.as_millis())
    }

    pub(super) fn period_ns(&self) -> u64 {
        self.period.as_nanos() as u64
    }
}

/// One move, and what the same watch saw with no move just before it.
pub(super) struct Sample {
    pub(super) moved: migration::Moved,
    /// (longest pause beyond one period in µs, missed tags) over a window
    /// as long as the move's watch, with the process left where it was.
    pub(super) idle: Option<(f64, u64)>,
}

/// Every move of one case, and why the moves stopped if not all were made.
pub(super) struct Moved {
    pub(super) case: Case,
    pub(super) samples: Vec<Sample>,
    pub(super) wanted: usize,
    pub(super) failure: Option<String>,
}

/// Every size with a 10 ms loop, then 1 MiB with a 1 ms loop.
fn cases() -> Vec<Case> {
    let ms = Duration::from_millis;
    let mut v: Vec<Case> = SIZES
        .iter()
        .map(|&(bytes, name, _)| Case {
            bytes,
            name,
            period: ms(10),
        })
        .collect();
    v.push(Case {
        bytes: 1 << 20,
        name: "1 MiB",
        period: ms(1),
    });
    v
}

pub(super) async fn moves(ctx: &Ctx, n: usize) -> Result<Vec<Moved>> {
    let nodes = [MOVERS[0], MOVERS[1], SINK_NODE];
    let (cluster, mut watch) = start_cluster(ctx, "migration", 16, &nodes).await?;
    let mut moved = Vec::new();
    for case in cases() {
        eprintln!(
            "[bench]   {n} moves of {} of state, {} ms loop ...",
            case.name,
            case.period.as_millis()
        );
        let mut samples = Vec::with_capacity(n);
        let failure = match back_and_forth(ctx, &mut watch, case, n, &mut samples).await {
            Ok(()) => None,
            Err(e) => {
                let logs: Vec<String> = ["controller", "a", "b"]
                    .iter()
                    .map(|c| format!("{c}: {}", cluster.tail(c, 8)))
                    .collect();
                eprintln!(
                    "[bench]   moving {} failed: {e:#}\n[bench]   logs end:\n{}",
                    case.app(),
                    logs.join("\n")
                );
                Some(format!(
                    "{e:#}{}",
                    checkpoint_held(&watch, &case.app()).await
                ))
            }
        };
        // Whatever happened, the app goes before the next one comes.
        watch.remove_and_wait(&case.app()).await?;
        moved.push(Moved {
            case,
            samples,
            wanted: n,
            failure,
        });
    }
    watch.client.close().await;
    drop(cluster);
    Ok(moved)
}

/// The deploy request of `case`'s app: the stateful rt process, which
/// sends its tick count every tick, and its consumer on node `c`.
fn deploy(ctx: &Ctx, case: Case) -> Result<DeployBundle> {
    let spec = checkpoint::spec(ctx, case.bytes, case.period)?;
    let weft_manifest::ModuleRef::Path(path) = &spec.module else {
        anyhow::bail!("the benchmark's module is a file");
    };
    let module = std::fs::read(path)?;
    let text = format!(
        "[[process]]\nname = \"{PROCESS}\"\nmodule = \"STATE_WASM\"\nclass = \"rt\"\nperiod = \"{}ms\"\n\
         fuel_per_tick = {FUEL_PER_CALL}\nmemory = {}\nrestart = \"on-failure\"\n\
         capabilities = [\"ports\"]\noutputs = [\"out\"]\nplacement = {{ anti_affinity = [\"{SINK}\"] }}\n\n\
         [[process]]\nname = \"{SINK}\"\nmodule = \"SINK_WASM\"\ncapabilities = [\"ports\"]\ninputs = [\"in\"]\n\
         placement = {{ node = \"{SINK_NODE}\" }}\n\n\
         [[connection]]\nfrom = \"{PROCESS}.out\"\nto = \"{SINK}.in\"\n",
        case.period.as_millis(),
        case.bytes
    );
    Ok(deploy_modules(
        &case.app(),
        &[
            ("STATE_WASM", &module),
            ("SINK_WASM", COUNT_MESSAGES.as_bytes()),
        ],
        &text,
    ))
}

/// Deploys `case` and moves its process `n` times between nodes `a` and
/// `b`, each move after a watch of the same length without one.
async fn back_and_forth(
    ctx: &Ctx,
    watch: &mut Watch,
    case: Case,
    n: usize,
    samples: &mut Vec<Sample>,
) -> Result<()> {
    let app = case.app();
    watch.deploy(&deploy(ctx, case)?).await?;
    // Moves are measured in a steady state: after a second of ticks, by
    // which time the node has sent periodic checkpoints too.
    let settled = (Duration::from_secs(1).as_nanos() / case.period.as_nanos()) as u64;
    let mut host: Option<NodeName> = None;
    watch
        .until(
            &format!("{app} running for {settled} ticks, its consumer on {SINK_NODE}"),
            Duration::from_secs(60),
            |w, _, _| {
                let consumer = w.status.get(SINK_NODE).is_some_and(|s| runs(s, &app, SINK));
                let producer = w.status.values().find(|s| ticked(s, &app, settled));
                match producer {
                    Some(s) if consumer => {
                        host = Some(s.name.clone());
                        true
                    }
                    _ => false,
                }
            },
        )
        .await?;
    // The first idle watch is as long as a move's wait would be, roughly;
    // later ones as long as the previous move's whole watch.
    let mut window = Duration::from_secs(1);
    let mut host = host.expect("the process runs somewhere");
    let who = ProcessRef::new(app.parse()?, PROCESS.parse()?);
    for k in 0..n {
        let to: NodeName = if host == MOVERS[0] {
            MOVERS[1]
        } else {
            MOVERS[0]
        }
        .parse()?;
        let idle = watch_outputs(&watch.client, &who, case, window).await?;
        let moved = migration::migrate(&watch.client, &who, &to, MOVE_TIMEOUT)
            .await
            .with_context(|| format!("move {} of {n}, {host} → {to}", k + 1))?;
        if moved.entry.status.restored_from_tag.is_none() {
            // A replica only starts from a checkpoint; anything else would
            // not be a move of the state, and its figures would mean nothing.
            anyhow::bail!(
                "move {} of {n}, {host} → {to}: the process on {to} was not restored from a checkpoint",
                k + 1
            );
        }
        window = Duration::from_secs_f64(moved.report.total_us / 1e6) + migration::WATCH_AFTER;
        samples.push(Sample { moved, idle });
        settle(watch, &app, host.as_str(), to.as_str()).await?;
        host = to;
    }
    Ok(())
}

/// Waits until only `to` lists the process: the old node has stopped it,
/// so the next move starts from a cluster at rest.
async fn settle(watch: &mut Watch, app: &str, from: &str, to: &str) -> Result<()> {
    let only_on_to = |w: &Watch| {
        let lists = |node: &str| {
            w.status.get(node).is_some_and(|s| {
                s.processes
                    .iter()
                    .any(|p| p.app == app && p.name == PROCESS)
            })
        };
        !lists(from)
            && w.status.get(to).is_some_and(|s| {
                s.processes.iter().any(|p| {
                    p.app == app
                        && p.name == PROCESS
                        && p.state == ProcessState::Running
                        && !p.replica
                })
            })
    };
    if only_on_to(watch) {
        return Ok(());
    }
    watch
        .until(
            &format!("{app}/{PROCESS} gone from {from}, live on {to}"),
            Duration::from_secs(30),
            |w, _, _| only_on_to(w),
        )
        .await?;
    Ok(())
}

/// What the process's outputs showed over `window` on the fabric, as
/// `weft migrate` computes it: (longest pause beyond one period in µs,
/// missed tags); `None` when nothing arrived.
async fn watch_outputs(
    client: &Client,
    who: &ProcessRef,
    case: Case,
    window: Duration,
) -> Result<Option<(f64, u64)>> {
    let outputs = OutputWatch::start(client.session(), client.keys(), who).await?;
    tokio::time::sleep(window).await;
    Ok(outputs
        .finish(case.period_ns())
        .map(|o| (o.pause_us, o.missed)))
}

/// For a failed move's reason: whether the nodes hold a checkpoint
/// of the process (a replica starts only from one, and waits for it).
async fn checkpoint_held(watch: &Watch, app: &str) -> String {
    let who = match (app.parse(), PROCESS.parse()) {
        (Ok(app), Ok(process)) => ProcessRef::new(app, process),
        _ => return String::new(),
    };
    match watch.client.checkpoint_info(&who).await {
        Ok((None, _)) => format!(
            " (no node holds a checkpoint of {who}, though the process ran all along and is \
             checkpointed every 500 ms; its replica on the target waits for one)"
        ),
        Ok((Some(tag), bytes)) => {
            format!(" (the nodes hold a checkpoint of {who} at tag {tag}, {bytes} bytes)")
        }
        Err(e) => format!(" (asking for its checkpoint: {e:#})"),
    }
}

fn ticked(s: &NodeStatus, app: &str, ticks: u64) -> bool {
    s.processes.iter().any(|p| {
        p.app == app && p.name == PROCESS && p.state == ProcessState::Running && p.ticks >= ticks
    })
}
