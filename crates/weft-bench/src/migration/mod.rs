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
//! (`weft_client::migration`): live, by re-execution: a replica on the
//! target starts from a checkpoint, catches up and runs in step (outputs
//! held back), then takes over; so the figures are the ones its report
//! gives.
//!
//! Baselines come from the same run: the same watch of the outputs for the
//! same length of time with no move (downtime), the in-process cost of
//! snapshot → encode → decode → restore of the same state (total time; the
//! floor under moving the state at all), and CRIU (see `criu`) for the
//! checkpoint figures.
//!
//! This module owns the group's entry point and its shared constants;
//! `moves` runs the moves, `figures` turns them into figures, and
//! `vs_criu` compares checkpoints with CRIU's.

mod figures;
mod moves;
mod vs_criu;

use std::time::Duration;

use anyhow::Result;

use crate::checkpoint;
use crate::stats::Figure;
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
    let criu = vs_criu::criu_figures(ctx, &local, reps.criu);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut figures = match runtime.block_on(moves::moves(ctx, reps.moves)) {
        Ok(moved) => figures::move_figures(&moved, &local),
        Err(e) => {
            eprintln!("[bench]   migrations failed: {e:#}");
            figures::skipped_moves(&format!("failed: {e:#}"))
        }
    };
    figures.extend(crate::takeover::takeover(ctx, &runtime));
    figures.extend(criu);
    for f in &figures {
        progress(f);
    }
    Ok(figures)
}
