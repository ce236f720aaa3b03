//! Migration figures: what the consumers of a process see while `weft
//! migrate` moves it (output downtime, missed ticks), how long a move takes
//! against state size, and weft's checkpoint and restore against CRIU's
//! dump and restore of a native process holding the same memory.
//!
//! Moves run on a real local cluster (a controller and nodes `a`, `b` and
//! `c` as OS processes, as in the `cluster` group). Each app is one rt
//! process holding 64 KiB to 64 MiB of patterned state that sends a small
//! message every tick, and a consumer of those messages pinned to node
//! `c`, so the producer's outputs travel on the fabric, where a move's
//! effect on them is visible. The producer is moved back and forth between
//! `a` and `b` with the code `weft migrate` runs
//! (`weft_fabric::migration`): live, by re-execution: a replica on the
//! target starts from a checkpoint, catches up and runs in step (outputs
//! held back), then takes over; so the figures are the ones its report
//! gives.
//!
//! Baselines come from the same run: the same watch of the outputs for the
//! same length of time with no move (downtime), the in-process cost of
//! snapshot → encode → decode → restore of the same state (total time; the
//! floor under moving the state at all), and CRIU (see `criu`) for the
//! checkpoint figures.

use std::time::Duration;

use anyhow::{Context, Result};
use weft_fabric::Keys;
use weft_fabric::migration::{self, OutputWatch};
use weft_fabric::proto::{ControlRequest, ControlResponse, NodeStatus};

use crate::checkpoint::{self, FUEL_PER_CALL, LocalCosts};
use crate::cluster::{Watch, deploy_modules, runs, start_cluster};
use crate::criu::{self, Criu, CriuCosts};
use crate::modules::COUNT_MESSAGES;
use crate::stats::{Figure, Goal, Stat, Summary, Unit};
use crate::{Ctx, progress};

/// The state sizes of every figure here, with their names in ids.
const SIZES: [(u64, &str, &str); 4] = [
    (64 << 10, "64 KiB", "64k"),
    (1 << 20, "1 MiB", "1m"),
    (16 << 20, "16 MiB", "16m"),
    (64 << 20, "64 MiB", "64m"),
];
/// The process every migration app moves, and its consumer.
const PROCESS: &str = "state";
const SINK: &str = "sink";
/// The nodes the process moves between, and the consumer's node.
const MOVERS: [&str; 2] = ["a", "b"];
const SINK_NODE: &str = "c";
/// How long one move may take before its size is given up.
const MOVE_TIMEOUT: Duration = Duration::from_secs(60);

/// How many samples of each kind a run takes.
struct Reps {
    local: usize,
    criu: usize,
    moves: usize,
}

impl Reps {
    fn of(ctx: &Ctx) -> Reps {
        if ctx.quick {
            Reps {
                local: 5,
                criu: 3,
                moves: 4,
            }
        } else {
            Reps {
                local: 20,
                criu: 10,
                moves: 10,
            }
        }
    }
}

pub fn migration(ctx: &Ctx) -> Result<Vec<Figure>> {
    let reps = Reps::of(ctx);
    let mut local = Vec::new();
    for (bytes, name, _) in SIZES {
        eprintln!("[bench]   in-process snapshot → restore of {name} ...");
        local.push(checkpoint::measure(ctx, bytes, reps.local)?);
    }
    // CRIU runs before the cluster starts, on a machine as quiet as for
    // the in-process figures; its figures are listed last.
    let criu = criu_figures(ctx, &local, reps.criu);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut figures = match runtime.block_on(moves(ctx, reps.moves)) {
        Ok(moved) => move_figures(&moved, &local),
        Err(e) => {
            eprintln!("[bench]   migrations failed: {e:#}");
            skipped_moves(&format!("failed: {e:#}"))
        }
    };
    figures.extend(crate::takeover::takeover(ctx, &runtime));
    figures.extend(criu);
    for f in &figures {
        progress(f);
    }
    Ok(figures)
}

// ---------------------------------------------------------------------------
// Moves on a real cluster.

/// An app to move: its state size and its process's period.
#[derive(Clone, Copy)]
struct Case {
    bytes: u64,
    name: &'static str,
    period: Duration,
}

impl Case {
    fn app(&self) -> String {
        format!("mig-{}-{}ms", self.bytes, self.period.as_millis())
    }

    fn period_ns(&self) -> u64 {
        self.period.as_nanos() as u64
    }
}

/// One move, and what the same watch saw with no move just before it.
struct Sample {
    moved: migration::Moved,
    /// (longest pause beyond one period in µs, missed tags) over a window
    /// as long as the move's watch, with the process left where it was.
    idle: Option<(f64, u64)>,
}

/// Every move of one case, and why the moves stopped if not all were made.
struct Moved {
    case: Case,
    samples: Vec<Sample>,
    wanted: usize,
    failure: Option<String>,
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

async fn moves(ctx: &Ctx, n: usize) -> Result<Vec<Moved>> {
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
                    .map(|c| format!("{c}: {}", cluster.tail(c)))
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
        remove(&mut watch, &case.app()).await?;
        moved.push(Moved {
            case,
            samples,
            wanted: n,
            failure,
        });
    }
    let _ = watch.session.close().await;
    drop(cluster);
    Ok(moved)
}

/// The deploy request of `case`'s app: the stateful rt process, which
/// sends its tick count every tick, and its consumer on node `c`.
fn deploy(ctx: &Ctx, case: Case) -> Result<ControlRequest> {
    let spec = checkpoint::spec(ctx, case.bytes, case.period)?;
    let module = std::fs::read(&spec.module)?;
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
    watch.control(&deploy(ctx, case)?).await?;
    // Moves are measured in a steady state: after a second of ticks, by
    // which time the node has sent periodic checkpoints too.
    let settled = (Duration::from_secs(1).as_nanos() / case.period.as_nanos()) as u64;
    let mut host = String::new();
    watch
        .until(
            &format!("{app} running for {settled} ticks, its consumer on {SINK_NODE}"),
            Duration::from_secs(60),
            |w, _, _| {
                let consumer = w.status.get(SINK_NODE).is_some_and(|s| runs(s, &app, SINK));
                let producer = w.status.values().find(|s| ticked(s, &app, settled));
                match producer {
                    Some(s) if consumer => {
                        host = s.name.clone();
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
    for k in 0..n {
        let to = if host == MOVERS[0] {
            MOVERS[1]
        } else {
            MOVERS[0]
        };
        let idle = watch_outputs(&watch.session, &watch.keys, &app, case, window).await?;
        let moved =
            migration::migrate(&watch.session, &watch.keys, &app, PROCESS, to, MOVE_TIMEOUT)
                .await
                .with_context(|| format!("move {} of {n}, {host} → {to}", k + 1))?;
        if moved.entry.restored_from_tag.is_none() {
            // A replica only starts from a checkpoint; anything else would
            // not be a move of the state, and its figures would mean nothing.
            anyhow::bail!(
                "move {} of {n}, {host} → {to}: the process on {to} was not restored from a checkpoint",
                k + 1
            );
        }
        window = Duration::from_secs_f64(moved.report.total_us / 1e6) + migration::WATCH_AFTER;
        samples.push(Sample { moved, idle });
        settle(watch, &app, &host, to).await?;
        host = to.to_string();
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
                    p.app == app && p.name == PROCESS && p.state == "running" && !p.standby
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
    session: &zenoh::Session,
    keys: &Keys,
    app: &str,
    case: Case,
    window: Duration,
) -> Result<Option<(f64, u64)>> {
    let outputs = OutputWatch::start(session, keys, app, PROCESS).await?;
    tokio::time::sleep(window).await;
    Ok(outputs.finish(case.period_ns()))
}

/// For a failed move's reason: whether the controller holds a checkpoint
/// of the process (a replica starts only from one, and waits for it).
async fn checkpoint_held(watch: &Watch, app: &str) -> String {
    let request = ControlRequest::GetCheckpoint {
        app: app.into(),
        process: PROCESS.into(),
    };
    match watch.control(&request).await {
        Ok(ControlResponse::Checkpoint { tag: None, .. }) => format!(
            " (the controller holds no checkpoint of {app}/{PROCESS}, though the process ran all along and is \
             checkpointed every 500 ms; its replica on the target waits for one)"
        ),
        Ok(ControlResponse::Checkpoint {
            tag: Some(tag),
            bytes,
        }) => format!(
            " (the controller holds a checkpoint of {app}/{PROCESS} at tag {tag}, {} bytes)",
            bytes.0.len()
        ),
        Ok(other) => format!(" (asking for its checkpoint: {other:?})"),
        Err(e) => format!(" (asking for its checkpoint: {e:#})"),
    }
}

/// Removes `app` and waits until no node lists it.
async fn remove(watch: &mut Watch, app: &str) -> Result<()> {
    watch
        .control(&ControlRequest::Remove { app: app.into() })
        .await?;
    watch
        .until(
            &format!("{app} removed"),
            Duration::from_secs(60),
            |w, _, _| w.listed(app) == 0,
        )
        .await?;
    Ok(())
}

fn ticked(s: &NodeStatus, app: &str, ticks: u64) -> bool {
    s.processes
        .iter()
        .any(|p| p.app == app && p.name == PROCESS && p.state == "running" && p.ticks >= ticks)
}

// ---------------------------------------------------------------------------
// Figures.

/// Downtime and total-time figures of every 10 ms case, then missed ticks.
fn move_figures(moved: &[Moved], local: &[LocalCosts]) -> Vec<Figure> {
    let mut figures = Vec::new();
    for (i, (_, _, id)) in SIZES.iter().enumerate() {
        let m = &moved[i];
        figures.push(downtime_figure(m, &local[i], id));
        figures.push(total_figure(m, &local[i], id));
    }
    let one_mib_10ms = &moved[1];
    let one_mib_1ms = &moved[SIZES.len()];
    figures.push(missed_figure(one_mib_10ms, "10ms"));
    figures.push(missed_figure(one_mib_1ms, "1ms"));
    figures
}

/// The note every move figure carries: what was moved and how.
fn moves_note(m: &Moved) -> String {
    let state = m
        .samples
        .iter()
        .map(|s| s.moved.report.state_bytes)
        .max()
        .unwrap_or(0);
    format!(
        "{} moves of one rt process ({} ms period, {} of linear memory written with a pattern in weft_init, four pages \
         rewritten per tick, its tick count sent on an output port every tick) back and forth between nodes a and b; its \
         consumer (a message-driven process counting messages) runs on node c, so every output crosses the fabric. \
         Three `weft node` processes joined to a `weft controller` over TCP on loopback; each move is the code `weft \
         migrate --json` runs (weft_fabric::migration). Transfer: the controller starts a replica on the target from the \
         process's latest checkpoint taken after the target subscribed to its inputs (checkpoints come every 500 ms, \
         base64 inside JSON control messages through the controller; it was {state} bytes); the replica catches up and \
         runs in step with its outputs held back, and once it reports being within 600 ms of the present the controller \
         promotes it in place and stops the old one. Dirty tracking: {}.",
        m.samples.len(),
        m.case.period.as_millis(),
        m.case.name,
        migration::DIRTY_TRACKING,
    )
}

/// Every move's downtime, missed ticks and total time, for figures of few
/// samples.
fn per_move(m: &Moved) -> String {
    let show = |v: Option<String>| v.unwrap_or_else(|| "?".into());
    let moves: Vec<String> = m
        .samples
        .iter()
        .map(|s| {
            let r = &s.moved.report;
            format!(
                "{}→{} {} ms / {} / {:.0} ms",
                r.from,
                r.to,
                show(r.downtime_us.map(|d| format!("{:.2}", d / 1e3))),
                show(r.missed_ticks.map(|t| t.to_string())),
                r.total_us / 1e3,
            )
        })
        .collect();
    format!(
        "Per move, downtime / missed ticks / total time: {}.",
        moves.join(", ")
    )
}

/// The skipped figure for a case that did not complete its moves, or
/// `None` if it did.
fn failed(m: &Moved, id: &str, title: &str, unit: Unit, goal_text: &str) -> Option<Figure> {
    let why = m.failure.as_ref()?;
    let mut fig = Figure::skipped(
        id,
        title,
        unit,
        goal_text,
        format!(
            "not measured: {} of {} moves completed, then: {why}",
            m.samples.len(),
            m.wanted
        ),
    );
    if !m.samples.is_empty() {
        fig = fig.note(per_move(m));
    }
    Some(fig)
}

fn downtime_figure(m: &Moved, local: &LocalCosts, id: &str) -> Figure {
    let (goal, goal_text) = match m.case.bytes {
        b if b == 1 << 20 => (Some(1e6), "p99 ≤ 1 ms"),
        b if b == 64 << 20 => (Some(20e6), "p99 ≤ 20 ms"),
        _ => (None, "none (context)"),
    };
    let id = format!("migration-downtime-{id}");
    let title = format!("Migration downtime, {} of state (live)", m.case.name);
    if let Some(fig) = failed(m, &id, &title, Unit::Nanoseconds, goal_text) {
        return fig;
    }
    let ns = |us: f64| (us * 1e3).round() as u64;
    let downtime: Vec<u64> = m
        .samples
        .iter()
        .filter_map(|s| s.moved.report.downtime_us.map(ns))
        .collect();
    let idle: Vec<u64> = m
        .samples
        .iter()
        .filter_map(|s| s.idle.map(|(us, _)| ns(us)))
        .collect();
    if downtime.is_empty() {
        return Figure::skipped(
            &id,
            &title,
            Unit::Nanoseconds,
            goal_text,
            "no output of the process reached the fabric during any move, so downtime is unknown"
                .into(),
        )
        .note(moves_note(m));
    }
    Figure::new(
        &id,
        &title,
        Unit::Nanoseconds,
        Summary::of_values(
            "weft migrate: downtime_us — the longest pause between first arrivals of successive output tags beyond one \
             period, seen on the fabric from before the request until 300 ms after the process runs on the target",
            &downtime,
        ),
        Summary::of_values(
            "the same watch of the same outputs for as long, just before the move, with no move",
            &idle,
        ),
        goal.map(|max| Goal::ValueAtMost { stat: Stat::P99, max }),
        goal_text,
    )
    .note(moves_note(m))
    .note(format!(
        "The state is not on the critical path: it is sent once, before the switch, and the replica computes what the \
         process computes meanwhile. For scale, the in-process snapshot → encode → decode → restore of this state takes \
         median {} (what a stop-and-copy move would have to pause for at the least). Downtime is measured by a client \
         session subscribed to the process's output ports, so it includes every pause of the outputs, moved or not; the \
         baseline shows the pauses without a move. Those grow with the state with or without a move: every 500 ms \
         the node snapshots the process on its own thread (weft-runtime's maybe_checkpoint), then the agent's one \
         outbox task encodes the checkpoint and publishes it, and the process's port messages queue behind it in that \
         task. {} of {} moves saw outputs.",
        Unit::Nanoseconds.show(local.in_memory.value_at_quantile(0.5) as f64),
        downtime.len(),
        m.samples.len()
    ))
    .note(per_move(m))
}

fn total_figure(m: &Moved, local: &LocalCosts, id: &str) -> Figure {
    let id = format!("migration-total-{id}");
    let title = format!("Migration total time, {} of state", m.case.name);
    if let Some(fig) = failed(m, &id, &title, Unit::Nanoseconds, "none (context)") {
        return fig;
    }
    let total: Vec<u64> = m
        .samples
        .iter()
        .map(|s| (s.moved.report.total_us * 1e3).round() as u64)
        .collect();
    Figure::new(
        &id,
        &title,
        Unit::Nanoseconds,
        Summary::of_values(
            "weft migrate: total_us — Migrate request → the controller's ps shows the process running on the target",
            &total,
        ),
        Summary::of(
            "in-process, no network: snapshot → encode → decode → restore of the same state (weft-runtime directly)",
            &local.in_memory,
        ),
        None,
        "none (context)",
    )
    .note(moves_note(m))
    .note(
        "Most of this is waiting, not copying: the target waits for a checkpoint taken at least 200 ms after it \
         subscribed (checkpoints every 500 ms, up to 1.5 s), the replica reports its progress in node statuses every \
         250 ms, the controller promotes it once it is within 600 ms of the present, and the client asks the controller \
         every 20 ms. The process keeps running on its old node all that time, so this is not downtime.",
    )
    .note(per_move(m))
}

fn missed_figure(m: &Moved, id: &str) -> Figure {
    let id = format!("migration-missed-ticks-{id}");
    let title = format!(
        "Ticks missed while migrating a {} ms loop ({} of state)",
        m.case.period.as_millis(),
        m.case.name
    );
    let goal_text = "zero in every move (p99 = 0)";
    if let Some(fig) = failed(m, &id, &title, Unit::Ticks, goal_text) {
        return fig;
    }
    let missed: Vec<u64> = m
        .samples
        .iter()
        .filter_map(|s| s.moved.report.missed_ticks)
        .collect();
    if missed.is_empty() {
        return Figure::skipped(
            &id,
            &title,
            Unit::Ticks,
            goal_text,
            "no output of the process reached the fabric during any move, so missed ticks are unknown".into(),
        )
        .note(moves_note(m));
    }
    let idle_missed: Vec<u64> = m
        .samples
        .iter()
        .filter_map(|s| s.idle.map(|(_, t)| t))
        .collect();
    let period = m.case.period_ns();
    let passed: Vec<u64> = m
        .samples
        .iter()
        .map(|s| (s.moved.report.total_us * 1e3) as u64 / period)
        .collect();
    Figure::new(
        &id,
        &title,
        Unit::Ticks,
        Summary::of_values(
            "weft migrate: missed_ticks — output tags between the first and the last seen on the fabric that never arrived",
            &missed,
        ),
        Summary::of_values(
            "periods that passed during the whole move (total / period): what a process stopped for the move would skip \
             or run late",
            &passed,
        ),
        Some(Goal::ValueAtMost {
            stat: Stat::P99,
            max: 0.0,
        }),
        goal_text,
    )
    .note(format!(
        "{} moves between nodes a and b, as for the downtime figures, watched by a client session on the process's \
         output ports. Tags are counted once however often they arrive (the old process and the promoted replica may \
         both send one around the switch). {} of {} moves saw outputs. In the watches of the same length \
         just before each move, with no move, {} tags were missed in all ({} of {} watches missed any): tags the \
         watching client did not get with no move at all. Whether the consumer on node c got the tags the client \
         missed is not checked here.",
        m.samples.len(),
        missed.len(),
        m.samples.len(),
        idle_missed.iter().sum::<u64>(),
        idle_missed.iter().filter(|&&t| t > 0).count(),
        idle_missed.len()
    ))
    .note(per_move(m))
}

/// What the move figures become when the cluster could not be run.
fn skipped_moves(reason: &str) -> Vec<Figure> {
    let mut v = Vec::new();
    for (_, name, id) in SIZES {
        let goal = match id {
            "1m" => "p99 ≤ 1 ms",
            "64m" => "p99 ≤ 20 ms",
            _ => "none (context)",
        };
        v.push(Figure::skipped(
            &format!("migration-downtime-{id}"),
            &format!("Migration downtime, {name} of state (live)"),
            Unit::Nanoseconds,
            goal,
            reason.to_string(),
        ));
        v.push(Figure::skipped(
            &format!("migration-total-{id}"),
            &format!("Migration total time, {name} of state"),
            Unit::Nanoseconds,
            "none (context)",
            reason.to_string(),
        ));
    }
    for id in ["10ms", "1ms"] {
        v.push(Figure::skipped(
            &format!("migration-missed-ticks-{id}"),
            &format!("Ticks missed while migrating a {id} loop"),
            Unit::Ticks,
            "zero in every move (p99 = 0)",
            reason.to_string(),
        ));
    }
    v
}

// ---------------------------------------------------------------------------
// Checkpoint and restore against CRIU.

/// One figure per size: weft's checkpoint to a file and restore from it
/// against CRIU's dump and restore. Where CRIU cannot run, the figure is
/// skipped with CRIU's error, and keeps weft's own numbers.
fn criu_figures(ctx: &Ctx, local: &[LocalCosts], reps: usize) -> Vec<Figure> {
    eprintln!("[bench]   CRIU dump and restore of a native process ...");
    let criu = Criu::prepare(&ctx.scratch.path().join("criu"));
    let (mut failure, mut criu_check) = (None::<String>, None::<String>);
    let mut figures = Vec::new();
    for (i, (bytes, name, id)) in SIZES.iter().enumerate() {
        let measured = match (&criu, &failure) {
            (Ok(c), None) => c.measure(*bytes, reps).map_err(|e| format!("{e:#}")),
            (Err(e), _) => Err(format!("{e:#}")),
            (_, Some(f)) => Err(f.clone()),
        };
        let measured = measured.map_err(|e| {
            // Asked once, at the first failure: what CRIU says about this kernel.
            let check = criu_check.get_or_insert_with(criu::check).clone();
            failure.get_or_insert_with(|| e.clone());
            (e, check)
        });
        figures.push(criu_figure(&local[i], name, id, measured, reps));
    }
    figures
}

fn criu_figure(
    local: &LocalCosts,
    name: &str,
    id: &str,
    criu: Result<CriuCosts, (String, String)>,
    reps: usize,
) -> Figure {
    let id = format!("checkpoint-restore-vs-criu-{id}");
    let title = format!("Checkpoint + restore of {name} of state vs CRIU");
    let goal_text = "median ≥ 10× faster than CRIU";
    let weft = Summary::of(
        "weft: snapshot → encode → write a file; read it → decode → restore into a fresh instance (in process)",
        &local.via_file,
    );
    let how = format!(
        "{reps} samples each. weft's state is an rt process's {name} of linear memory written with a 64-bit LCG pattern; \
         the native process is a small C program (built here with cc) that mallocs {name} and writes the same pattern. \
         Neither side fsyncs its files. weft's encoded snapshot was {} bytes.",
        local.snapshot_bytes
    );
    match criu {
        Ok(c) => Figure::new(
            &id,
            &title,
            Unit::Nanoseconds,
            weft,
            Summary::of(
                "CRIU: `criu dump -t PID --shell-job` + `criu restore --shell-job -d` of the native process",
                &c.total,
            ),
            Some(Goal::SpeedupAtLeast {
                stat: Stat::Median,
                min: 10.0,
            }),
            goal_text,
        )
        .note(how)
        .note(format!(
            "CRIU dump median {}, restore median {}; the native process's RSS before the dump was {} (C runtime included).",
            Unit::Nanoseconds.show(c.dump.value_at_quantile(0.5) as f64),
            Unit::Nanoseconds.show(c.restore.value_at_quantile(0.5) as f64),
            Unit::Bytes.show(c.helper_rss as f64)
        )),
        Err((e, check)) => {
            let mut fig = Figure::skipped(
                &id,
                &title,
                Unit::Nanoseconds,
                goal_text,
                format!("CRIU cannot run on this machine, so there is no baseline: {e}"),
            )
            .note(format!("`criu check`: {check}"))
            .note(how);
            fig.weft = weft;
            fig
        }
    }
}
