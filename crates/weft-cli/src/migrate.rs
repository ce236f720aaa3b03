//! `weft migrate APP/PROCESS --to NODE`: moves a running process live and
//! reports what its consumers saw.
//!
//! The move and its measurement are `weft_fabric::migration` (shared with
//! `weft bench`): a replica on the target catches up from a checkpoint and
//! runs in step, then takes over; the report comes from the process's
//! output ports as watched on the fabric during the move. Outputs with no
//! receivers on other nodes never reach the fabric; then downtime and
//! missed ticks are unknown (`null`).

use std::time::Duration;

use anyhow::{Context, Result};
use weft_fabric::migration::{Migration, MigrationReport};

use crate::cluster::ClientArgs;

/// How long to wait for the process to run live on its target.
const MOVE_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn migrate(client: ClientArgs, target: String, to: String) -> Result<()> {
    let (app, process) = target.split_once('/').context("write APP/PROCESS")?;
    let (session, keys) = client.session().await?;
    let moved = async {
        let migration = Migration::begin(&session, &keys, app, process, &to).await?;
        if !client.json {
            eprintln!(
                "moving {app}/{process} from {} to {}: a replica catches up there first",
                migration.from, migration.to
            );
        }
        migration.finish(MOVE_TIMEOUT).await
    }
    .await;
    let _ = session.close().await;
    let report = moved?.report;
    if client.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
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
