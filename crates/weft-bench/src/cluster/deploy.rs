//! Deploy bundles as `weft deploy` builds them (the counter of the failure
//! figures, fleets of idle processes), and the deploy-time figures.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use weft_fabric::codec::DeployBundle;
use weft_manifest::module;

use super::Watch;
use crate::Ctx;
use crate::modules::TINY;
use crate::stats::{Figure, Summary, Unit, histogram, record};

/// A deploy bundle as `weft deploy` builds it: modules named by digest
/// (`sha256:<hex>`), their binary uploaded alongside. `MODULE` in the
/// processes' text names `module`.
fn deploy_request(app: &str, module: &[u8], processes: &[String]) -> DeployBundle {
    deploy_modules(app, &[("MODULE", module)], &processes.concat())
}

/// The same for several modules: each `(placeholder, bytes)` of `modules`
/// is named by its placeholder in `text` (the manifest after its name).
pub(crate) fn deploy_modules(app: &str, modules: &[(&str, &[u8])], text: &str) -> DeployBundle {
    let mut manifest = format!("name = \"{app}\"\n{text}");
    let mut blobs = BTreeMap::new();
    for (placeholder, bytes) in modules {
        let binary = module::binary(bytes)
            .expect("the benchmarks' modules are valid")
            .into_owned();
        let digest = module::digest(&binary);
        manifest = manifest.replace(placeholder, &format!("sha256:{digest}"));
        blobs.insert(digest, binary);
    }
    DeployBundle {
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

pub(super) fn counter_request() -> DeployBundle {
    let process = "[[process]]\nname = \"counter\"\nmodule = \"MODULE\"\nclass = \"rt\"\nperiod = \"10ms\"\n\
                   capabilities = [\"ports\"]\noutputs = [\"n\"]\nrestart = \"on-failure\"\n";
    deploy_request("count", COUNTER.as_bytes(), &[process.to_string()])
}

fn fleet_request(app: &str, n: usize) -> DeployBundle {
    let processes: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "[[process]]\nname = \"p{i}\"\nmodule = \"MODULE\"\nclass = \"be\"\nperiod = \"1s\"\n"
            )
        })
        .collect();
    deploy_request(app, TINY.as_bytes(), &processes)
}

pub(super) async fn deploy_times(ctx: &Ctx, watch: &mut Watch) -> Result<Vec<Figure>> {
    let sizes: &[(usize, usize)] = if ctx.quick {
        &[(1, 3), (100, 2)]
    } else {
        &[(1, 5), (100, 3), (1000, 1)]
    };
    let mut figures = Vec::new();
    for &(n, reps) in sizes {
        let (mut weft, mut native) = (histogram(), histogram());
        for rep in 0..reps {
            let deployed = deploy_fleet(watch, &format!("fleet{n}-{rep}"), n).await?;
            record(&mut weft, deployed.as_nanos() as u64);
            record(&mut native, spawn_true(n)?.as_nanos() as u64);
        }
        figures.push(deploy_figure(n, reps, &weft, &native));
    }
    Ok(figures)
}

/// The time from the deploy request of an app of `n` processes until the
/// node statuses show all of them running; the app is removed again so
/// every deploy starts from an empty cluster.
async fn deploy_fleet(watch: &mut Watch, app: &str, n: usize) -> Result<Duration> {
    let request = fleet_request(app, n);
    let t = Instant::now();
    watch.deploy(&request).await?;
    let done = watch
        .until(
            &format!("{n} processes of {app} running"),
            Duration::from_secs(120),
            |w, _, _| w.running(app) >= n,
        )
        .await?;
    watch.remove_and_wait(app).await?;
    Ok(done.duration_since(t))
}

/// The time to spawn and wait for `n` × `/bin/true`, one after another.
pub(crate) fn spawn_true(n: usize) -> Result<Duration> {
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
    Ok(t.elapsed())
}

fn deploy_figure(n: usize, reps: usize, weft: &Histogram<u64>, native: &Histogram<u64>) -> Figure {
    Figure::new(
    &format!("deploy-{n}"),
    &format!("Deploy an app of {n} process{} on 2 nodes", if n == 1 { "" } else { "es" }),
    Unit::Nanoseconds,
    Summary::of(
        "weft: Deploy request to the controller → every process reported running in node statuses",
        weft,
    ),
    Summary::of(format!("native: spawn and wait for {n} × /bin/true, one after another"), native),
    None,
    "none (context)",
)
.note(format!(
    "{reps} deploys of a fresh app of {n} be processes (a one-page module ticking once a second), removed again after each. \
     Nodes publish their status every 250 ms, so the weft figure includes up to 250 ms of waiting for the next status; and the \
     controller sets a new app's tag 0 200 ms after the deploy (EPOCH_LEAD, so every node releases it on the same grid), \
     which is a floor for this figure. \
     The baseline is not the same work (no placement, no network, no Wasm) and only gives a sense of scale: no goal is set."
))
}
