//! weft's checkpoint to a file and restore from it against CRIU dumping
//! and restoring a native process holding the same memory.

use super::SIZES;
use crate::Ctx;
use crate::checkpoint::LocalCosts;
use crate::criu::{self, Criu, CriuCosts};
use crate::stats::{Figure, Goal, Stat, Summary, Unit};

/// One figure per size: weft's checkpoint to a file and restore from it
/// against CRIU's dump and restore. Where CRIU cannot run, the figure is
/// skipped with CRIU's error, and keeps weft's own numbers.
pub(super) fn criu_figures(ctx: &Ctx, local: &[LocalCosts], reps: usize) -> Vec<Figure> {
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
