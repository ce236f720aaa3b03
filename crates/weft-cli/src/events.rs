//! `weft events`: the controller's event stream, printed once or followed.
//!
//! Following asks the controller for the events after the last one seen,
//! waiting on its side for the next, so an event shows within a round
//! trip. When the controller goes away, the command says so once and asks
//! again until it answers, from where it was: the controller numbers and
//! stores its events, so a restarted one carries on the same stream.

use std::time::Duration;

use anyhow::Result;
use tokio::time::Instant;
use weft_client::{Client, EventFilter, Events};
use weft_fabric::proto::EventEntry;

use crate::cluster::ClientArgs;
use crate::out::outln;

/// How long the controller holds a follower's request open.
const WAIT: Duration = Duration::from_secs(4);
/// Between two attempts to reach a controller that does not answer.
const RETRY: Duration = Duration::from_millis(500);

/// What to print and for how long.
pub struct EventsArgs {
    pub filter: EventFilter,
    pub after: Option<u64>,
    pub follow: bool,
    pub duration: Option<Duration>,
}

pub async fn events(client: ClientArgs, args: EventsArgs) -> Result<()> {
    let c = client.client().await?;
    let batch = c.events(args.after, &args.filter, None).await;
    let printed = batch.map_err(anyhow::Error::from).and_then(|batch| {
        say_missed(args.after, &batch);
        print(&batch, client.json)
    });
    let after = match (printed, args.follow) {
        (Ok(after), true) => after.max(args.after.unwrap_or(0)),
        (result, _) => {
            c.close().await;
            return result.map(|_| ());
        }
    };
    eprintln!("following events; Ctrl-C to stop");
    let deadline = args.duration.map(|d| Instant::now() + d);
    tokio::select! {
        r = follow(c, &client, &args.filter, after) => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = until(deadline) => Ok(()),
    }
}

/// Prints every event after `after` as it comes. A controller that stops
/// answering is asked again, over a new session, until one answers.
async fn follow(
    mut c: Client,
    client: &ClientArgs,
    filter: &EventFilter,
    mut after: u64,
) -> Result<()> {
    loop {
        match c.events(Some(after), filter, Some(WAIT)).await {
            Ok(batch) => {
                say_missed(Some(after), &batch);
                after = print(&batch, client.json)?.max(after);
            }
            Err(e) => {
                eprintln!("{e}; trying again");
                c.close().await;
                c = reconnect(client).await;
                eprintln!("connected again; carrying on after event {after}");
            }
        }
    }
}

async fn reconnect(client: &ClientArgs) -> Client {
    loop {
        tokio::time::sleep(RETRY).await;
        if let Ok(c) = client.client().await {
            return c;
        }
    }
}

async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Prints a batch; returns the sequence number to read after next.
fn print(batch: &Events, json: bool) -> Result<u64> {
    for e in &batch.events {
        if json {
            outln!("{}", serde_json::to_string(e)?);
        } else {
            outln!("{}", line(e));
        }
    }
    // Events that did not pass the filter are behind `last` too.
    Ok(batch.last)
}

/// Says so when the controller no longer keeps events the reader has not
/// seen (it keeps the newest 10,000).
fn say_missed(after: Option<u64>, batch: &Events) {
    let Some(after) = after else { return };
    if batch.oldest > after + 1 && batch.last > after {
        eprintln!(
            "events {} to {} are gone (the controller keeps the newest {})",
            after + 1,
            batch.oldest - 1,
            weft_fabric::proto::EVENTS_KEPT
        );
    }
}

/// `2026-12-04T20:51:03.123Z  fault            cell/pid faulted ...`
fn line(e: &EventEntry) -> String {
    let at = humantime::format_rfc3339_millis(e.at());
    format!("{at}  {:<18} {}", e.kind, e.message)
}
