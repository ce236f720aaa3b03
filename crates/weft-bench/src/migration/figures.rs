//! The move figures: output downtime and total time per state size, and
//! ticks missed by a 10 ms and a 1 ms loop, each with its baseline from the
//! same run; or skipped figures saying why the moves were not made.

use weft_client::migration;

use super::SIZES;
use super::moves::Moved;
use crate::checkpoint::LocalCosts;
use crate::stats::{Figure, Goal, Stat, Summary, Unit};

/// Downtime and total-time figures of every 10 ms case, then missed ticks.
pub(super) fn move_figures(moved: &[Moved], local: &[LocalCosts]) -> Vec<Figure> {
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
         migrate --json` runs (weft_client::migration). Transfer: the controller starts a replica on the target from the \
         process's latest checkpoint taken after the target subscribed to its inputs (taken every 500 ms as the pages \
         written since the one before, kept whole by the process's node and its checkpoint peer; the target fetches it \
         from one of them, never through the controller; it was {state} bytes); the replica catches up and \
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
                "{}→{} {} ms{} / {} / {:.0} ms",
                r.from,
                r.to,
                show(r.downtime_us.map(|d| format!("{:.2}", d / 1e3))),
                r.pause_began_us
                    .map_or_else(String::new, |b| format!(" (at +{:.0} ms)", b / 1e3)),
                show(r.missed_ticks.map(|t| t.to_string())),
                r.total_us / 1e3,
            )
        })
        .collect();
    format!(
        "Per move, downtime (when its pause began) / missed ticks / total time: {}.",
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
         baseline shows the pauses without a move. The replica's start (instantiating the module and restoring the \
         state) runs at normal priority, off the rt CPU: at SCHED_FIFO a 64 MiB restore kept the other rt processes of \
         that CPU (here the moving process itself, on the same machine) from running for 85 ms. Where each move's \
         longest pause began, from the request, is in the per-move list. {} of {} moves saw outputs.",
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
    .note(missed_note(m, missed.len(), &idle_missed))
    .note(per_move(m))
}

/// What the missed-ticks figure's moves were, and what the same watches
/// missed with no move: `seen` of the moves saw outputs.
fn missed_note(m: &Moved, seen: usize, idle_missed: &[u64]) -> String {
    format!(
        "{} moves between nodes a and b, as for the downtime figures, watched by a client session on the process's \
         output ports. Tags are counted once however often they arrive (the old process and the promoted replica may \
         both send one around the switch). {} of {} moves saw outputs. In the watches of the same length \
         just before each move, with no move, {} tags were missed in all ({} of {} watches missed any): tags the \
         watching client did not get with no move at all. Whether the consumer on node c got the tags the client \
         missed is not checked here.",
        m.samples.len(),
        seen,
        m.samples.len(),
        idle_missed.iter().sum::<u64>(),
        idle_missed.iter().filter(|&&t| t > 0).count(),
        idle_missed.len()
    )
}

/// What the move figures become when the cluster could not be run.
pub(super) fn skipped_moves(reason: &str) -> Vec<Figure> {
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
