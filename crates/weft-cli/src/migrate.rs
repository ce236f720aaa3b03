//! `weft migrate APP/PROCESS --to NODE`: moves a running process live and
//! reports what its consumers saw.
//!
//! The move and its measurement are `weft_client::migration` (shared with
//! `weft bench`): a replica on the target catches up from a checkpoint and
//! runs in step, then takes over; the report comes from the process's
//! output ports as watched on the fabric during the move. Outputs with no
//! receivers on other nodes never reach the fabric; then downtime and
//! missed ticks are unknown (`null`).

use std::time::Duration;

use anyhow::Result;
use weft_client::migration::{Migration, MigrationReport};
use weft_types::{NodeName, ProcessRef, Tag};

use crate::cluster::ClientArgs;
use crate::out::outln;

/// How long to wait for the process to run live on its target.
const MOVE_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn migrate(args: ClientArgs, who: ProcessRef, to: NodeName) -> Result<()> {
    let client = args.client().await?;
    let moved = async {
        let migration = Migration::begin(&client, &who, &to).await?;
        if !args.json {
            eprintln!(
                "moving {who} from {} to {}: a replica catches up there first",
                migration.from, migration.to
            );
        }
        migration.finish(MOVE_TIMEOUT).await
    }
    .await;
    client.close().await;
    let report = moved?.report;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report)?;
    }
    Ok(())
}

fn print_report(r: &MigrationReport) -> Result<()> {
    let unknown = || "? (no receivers on other nodes to observe)".to_string();
    outln!(
        "migrated {}/{} from {} to {}: {} bytes of state, total {:.0} ms",
        r.app,
        r.process,
        r.from,
        r.to,
        r.state_bytes,
        r.total_us / 1e3
    );
    outln!(
        "  missed ticks: {}; longest output pause beyond one period: {}",
        r.missed_ticks.map_or_else(unknown, |m| m.to_string()),
        r.downtime_us
            .map_or_else(unknown, |d| format!("{:.2} ms", d / 1e3))
    );
    if let (Some(began), Some(tag)) = (r.pause_began_us, r.pause_after_tag_ns) {
        outln!(
            "  that pause began {:.0} ms after the request, after tag {}",
            began / 1e3,
            Tag(tag)
        );
    }
    Ok(())
}
