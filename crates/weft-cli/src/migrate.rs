//! `weft migrate APP/PROCESS --to NODE`: moves a running process live and
//! reports what its consumers saw.
//!
//! The controller starts a replica on the target from a checkpoint, lets it
//! catch up and run in step (outputs held), then promotes it and stops the
//! process on its old node (see `docs/design.md`). This command measures
//! the move from the outside, the way a consumer would: it subscribes to
//! the process's output ports before asking for the move and, from the
//! messages it sees, reports the longest pause between new tags beyond the
//! process's period (`downtime_us`) and every tag that never arrived
//! (`missed_ticks`). Outputs with no receivers on other nodes never reach
//! the fabric; then those two figures are unknown (`null`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use weft_fabric::codec::PortMessage;
use weft_fabric::proto::{ControlRequest, ControlResponse, PsEntry};

use crate::cluster::{ClientArgs, fetch_ps};

/// How long to wait for the process to run live on its target.
const MOVE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to keep watching the outputs after the switch.
const WATCH_AFTER: Duration = Duration::from_millis(300);

/// What `weft migrate --json` prints.
#[derive(serde::Serialize)]
struct MigrationReport {
    app: String,
    process: String,
    from: String,
    to: String,
    /// The longest pause between new output tags, beyond the process's
    /// period, seen on its output ports during the move.
    downtime_us: Option<f64>,
    /// From the request until the target reported the process live.
    total_us: f64,
    /// Size of the state the replica started from.
    state_bytes: usize,
    /// Output tags, between the first and the last seen, that never arrived.
    missed_ticks: Option<u64>,
    /// How memory written during the move reaches the target.
    dirty_tracking: &'static str,
}

/// One output message seen on the fabric: (arrival, tag, seq).
type Seen = (Instant, u64, u64);

pub async fn migrate(client: ClientArgs, target: String, to: String) -> Result<()> {
    let (app, process) = target.split_once('/').context("write APP/PROCESS")?;
    let (session, keys) = client.session().await?;
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let sink = seen.clone();
    let watcher = session
        .declare_subscriber(keys.port(app, process, "*"))
        .callback(move |sample| {
            if let Ok(m) = PortMessage::decode(&sample.payload().to_bytes()) {
                sink.lock().unwrap().push((Instant::now(), m.tag, m.seq));
            }
        })
        .await
        .map_err(|e| anyhow::anyhow!("cannot watch the outputs: {e}"))?;

    let started = Instant::now();
    let request = ControlRequest::Migrate {
        app: app.into(),
        process: process.into(),
        to: to.clone(),
    };
    let (from, to) = match client.call(request).await? {
        ControlResponse::Migrating { from, to, .. } => (from, to),
        ControlResponse::NotFound { what } => bail!("no such {what}"),
        other => bail!("unexpected answer: {other:?}"),
    };
    if !client.json {
        eprintln!("moving {app}/{process} from {from} to {to}: a replica catches up there first");
    }
    let entry = wait_live(&client, app, process, &to).await?;
    let total_us = started.elapsed().as_secs_f64() * 1e6;
    tokio::time::sleep(WATCH_AFTER).await;
    drop(watcher);
    let _ = session.close().await;

    let state_bytes = match client
        .call(ControlRequest::GetCheckpoint {
            app: app.into(),
            process: process.into(),
        })
        .await?
    {
        ControlResponse::Checkpoint { bytes, .. } => bytes.0.len(),
        _ => 0,
    };
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let (downtime_us, missed_ticks) = match entry.period_ns.filter(|p| *p > 0) {
        Some(period) => pause_and_gaps(&seen, period).unzip(),
        None => (None, None),
    };
    let report = MigrationReport {
        app: app.into(),
        process: process.into(),
        from,
        to,
        downtime_us,
        total_us,
        state_bytes,
        missed_ticks,
        dirty_tracking: "none needed: state sent once, then kept in step by re-execution",
    };
    if client.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

/// Polls `weft ps` until `process` runs live (not as a replica) on `to`.
async fn wait_live(client: &ClientArgs, app: &str, process: &str, to: &str) -> Result<PsEntry> {
    let deadline = Instant::now() + MOVE_TIMEOUT;
    loop {
        let entry = fetch_ps(client)
            .await?
            .into_iter()
            .find(|p| p.app == app && p.name == process);
        if let Some(p) = entry.filter(|p| p.node.as_deref() == Some(to) && p.state == "running") {
            return Ok(p);
        }
        if Instant::now() > deadline {
            bail!("{app}/{process} is not running on {to} after {MOVE_TIMEOUT:?}; see `weft ps`");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// From the output messages seen: the longest pause between the first
/// arrivals of successive tags, beyond one period (µs), and how many tags
/// between the first and the last seen never arrived.
fn pause_and_gaps(seen: &[Seen], period: u64) -> Option<(f64, u64)> {
    let mut first_arrival: BTreeMap<u64, Instant> = BTreeMap::new();
    for (at, tag, _) in seen {
        first_arrival.entry(*tag).or_insert(*at);
    }
    let (&first, &last) = (first_arrival.keys().next()?, first_arrival.keys().last()?);
    let expected = (last - first) / period + 1;
    let missed = expected.saturating_sub(first_arrival.len() as u64);
    let mut arrivals: Vec<Instant> = first_arrival.values().copied().collect();
    arrivals.sort();
    let pause = arrivals
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
        .saturating_sub(Duration::from_nanos(period));
    Some((pause.as_secs_f64() * 1e6, missed))
}

fn print_report(r: &MigrationReport) {
    let unknown = || "? (no receivers on other nodes to observe)".to_string();
    println!(
        "migrated {}/{} from {} to {}: {} bytes of state, total {:.0} ms",
        r.app,
        r.process,
        r.from,
        r.to,
        r.state_bytes,
        r.total_us / 1e3
    );
    println!(
        "  missed ticks: {}; longest output pause beyond one period: {}",
        r.missed_ticks.map_or_else(unknown, |m| m.to_string()),
        r.downtime_us
            .map_or_else(unknown, |d| format!("{:.2} ms", d / 1e3))
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_and_gaps_come_from_first_arrivals() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let period = 10_000_000;
        // Tags 0..=5 every 10 ms, tag 3 never arrives, tag 4 late, tag 2 twice.
        let seen = [
            (ms(0), 0, 1),
            (ms(10), 10_000_000, 2),
            (ms(20), 20_000_000, 3),
            (ms(25), 20_000_000, 3),
            (ms(70), 40_000_000, 5),
            (ms(71), 50_000_000, 6),
        ];
        let (pause_us, missed) = pause_and_gaps(&seen, period).unwrap();
        assert_eq!(missed, 1);
        assert!((pause_us - 40_000.0).abs() < 1.0, "{pause_us}");
        assert!(pause_and_gaps(&[], period).is_none());
    }
}
