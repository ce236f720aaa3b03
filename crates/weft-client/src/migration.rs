//! Moving a running process live, and measuring what its consumers saw.
//!
//! `weft migrate` prints this report and `weft bench` measures with it, so
//! downtime, total time and missed ticks are defined in one place.
//!
//! The controller starts a replica on the target from a checkpoint, lets it
//! catch up and run in step (outputs held), then promotes it and stops the
//! process on its old node (see `docs/design.md`). This measures the move
//! from the outside, the way a consumer would: it subscribes to the
//! process's output ports before asking for the move and, from the messages
//! it sees, reports the longest pause between new tags beyond the process's
//! period (`downtime_us`) and every tag that never arrived
//! (`missed_ticks`). Outputs with no receivers on other nodes never reach
//! the fabric; then those two figures are unknown (`None`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use weft_fabric::Keys;
use weft_fabric::codec::PortMessage;
use weft_fabric::proto::PsEntry;
use weft_types::{AppName, NodeName, ProcessName, ProcessRef, ProcessState};

use crate::{Client, ClientError};

/// How long to keep watching the outputs after the switch.
pub const WATCH_AFTER: Duration = Duration::from_millis(300);
/// How often to ask the controller whether the process runs on its target.
const POLL_EVERY: Duration = Duration::from_millis(20);
/// How memory written during the move reaches the target.
pub const DIRTY_TRACKING: &str = "none needed: state sent once, then kept in step by re-execution";

/// What `weft migrate --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct MigrationReport {
    pub app: AppName,
    pub process: ProcessName,
    pub from: NodeName,
    pub to: NodeName,
    /// The longest pause between new output tags, beyond the process's
    /// period, seen on its output ports during the move.
    pub downtime_us: Option<f64>,
    /// From the request until the target reported the process live.
    pub total_us: f64,
    /// Size of the state the replica started from.
    pub state_bytes: u64,
    /// Output tags, between the first and the last seen, that never arrived.
    pub missed_ticks: Option<u64>,
    /// When the longest pause began, from the request (µs), and the last
    /// tag seen before it: where in the move to look for its cause.
    pub pause_began_us: Option<f64>,
    pub pause_after_tag_ns: Option<u64>,
    /// How memory written during the move reaches the target.
    pub dirty_tracking: &'static str,
}

/// A finished move: the report, and the process's `ps` entry as first
/// seen running on its target.
#[derive(Debug, Clone)]
pub struct Moved {
    pub report: MigrationReport,
    pub entry: PsEntry,
}

/// One output message seen on the fabric: (arrival, tag, seq).
pub type Seen = (Instant, u64, u64);

/// What a watch of a process's outputs showed.
#[derive(Debug, Clone, Copy)]
pub struct Observed {
    /// The longest pause between the first arrivals of successive tags,
    /// beyond one period (µs).
    pub pause_us: f64,
    /// When that pause began, and the last tag that arrived before it.
    pub pause_began: Instant,
    pub pause_after_tag: u64,
    /// Tags between the first and the last seen that never arrived.
    pub missed: u64,
}

/// A subscription to a process's output ports that notes every arrival.
pub struct OutputWatch {
    seen: Arc<Mutex<Vec<Seen>>>,
    _subscriber: zenoh::pubsub::Subscriber<()>,
}

impl OutputWatch {
    pub async fn start(
        session: &zenoh::Session,
        keys: &Keys,
        who: &ProcessRef,
    ) -> Result<OutputWatch, ClientError> {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let sink = seen.clone();
        let subscriber = session
            .declare_subscriber(keys.ports_of(&who.app, &who.process))
            .callback(move |sample| {
                if let Ok(m) = PortMessage::decode(&sample.payload().to_bytes()) {
                    sink.lock().unwrap().push((Instant::now(), m.tag, m.seq));
                }
            })
            .await
            .map_err(|e| anyhow::anyhow!("cannot watch the outputs: {e}"))?;
        Ok(OutputWatch {
            seen,
            _subscriber: subscriber,
        })
    }

    /// Stops watching; see [`pause_and_gaps`] for what it returns.
    pub fn finish(self, period_ns: u64) -> Option<Observed> {
        let seen = std::mem::take(&mut *self.seen.lock().unwrap());
        pause_and_gaps(&seen, period_ns)
    }
}

/// A move the controller accepted, with the process's outputs watched.
pub struct Migration<'a> {
    client: &'a Client,
    who: ProcessRef,
    pub from: NodeName,
    pub to: NodeName,
    started: Instant,
    outputs: OutputWatch,
}

/// Moves `who` to node `to`, waits (up to `timeout`) until it runs live
/// there, and reports what its outputs showed.
pub async fn migrate(
    client: &Client,
    who: &ProcessRef,
    to: &NodeName,
    timeout: Duration,
) -> Result<Moved, ClientError> {
    Migration::begin(client, who, to)
        .await?
        .finish(timeout)
        .await
}

impl<'a> Migration<'a> {
    /// Subscribes to the process's output ports, then asks the controller
    /// to move it; returns once the controller has accepted the move.
    pub async fn begin(
        client: &'a Client,
        who: &ProcessRef,
        to: &NodeName,
    ) -> Result<Migration<'a>, ClientError> {
        let outputs = OutputWatch::start(client.session(), client.keys(), who).await?;
        let started = Instant::now();
        let from = client.migrate(who, to).await?;
        Ok(Migration {
            client,
            who: who.clone(),
            from,
            to: to.clone(),
            started,
            outputs,
        })
    }

    /// Waits (up to `timeout`) until the process runs live on its target,
    /// keeps watching its outputs for [`WATCH_AFTER`], and reports.
    pub async fn finish(self, timeout: Duration) -> Result<Moved, ClientError> {
        let entry = wait_live(self.client, &self.who, &self.to, timeout).await?;
        let total_us = self.started.elapsed().as_secs_f64() * 1e6;
        tokio::time::sleep(WATCH_AFTER).await;
        let period = entry.period_ns.filter(|p| *p > 0);
        let observed = period.and_then(|p| self.outputs.finish(p));
        let (_, state_bytes) = self.client.checkpoint_info(&self.who).await?;
        let since_request =
            |at: Instant| at.saturating_duration_since(self.started).as_secs_f64() * 1e6;
        let report = MigrationReport {
            app: self.who.app,
            process: self.who.process,
            from: self.from,
            to: self.to,
            downtime_us: observed.map(|o| o.pause_us),
            total_us,
            state_bytes,
            missed_ticks: observed.map(|o| o.missed),
            pause_began_us: observed.map(|o| since_request(o.pause_began)),
            pause_after_tag_ns: observed.map(|o| o.pause_after_tag),
            dirty_tracking: DIRTY_TRACKING,
        };
        Ok(Moved { report, entry })
    }
}

/// Polls `ps` until `who` runs live (not as a replica) on `to`.
async fn wait_live(
    client: &Client,
    who: &ProcessRef,
    to: &NodeName,
    timeout: Duration,
) -> Result<PsEntry, ClientError> {
    let deadline = Instant::now() + timeout;
    loop {
        let entry = client.process(&who.app, &who.process).await?;
        let live =
            |p: &PsEntry| p.node.as_ref() == Some(to) && p.status.state == ProcessState::Running;
        if let Some(p) = entry.filter(live) {
            return Ok(p);
        }
        if Instant::now() > deadline {
            return Err(ClientError::Timeout(format!(
                "{who} is not running on {to} after {timeout:?}; it keeps running where it was. \
                 Its replica on {to} starts from a checkpoint of the process: see that node's log \
                 (\"waits for one\" means no fresh enough one has been taken yet) and `weft ps`"
            )));
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// From the output messages seen: the longest pause between the first
/// arrivals of successive tags, beyond one period, where it began, and how
/// many tags between the first and the last seen never arrived.
pub fn pause_and_gaps(seen: &[Seen], period: u64) -> Option<Observed> {
    let mut first_arrival: BTreeMap<u64, Instant> = BTreeMap::new();
    for (at, tag, _) in seen {
        first_arrival.entry(*tag).or_insert(*at);
    }
    let (&first, &last) = (first_arrival.keys().next()?, first_arrival.keys().last()?);
    let expected = (last - first) / period + 1;
    let missed = expected.saturating_sub(first_arrival.len() as u64);
    let mut arrivals: Vec<(Instant, u64)> =
        first_arrival.into_iter().map(|(t, at)| (at, t)).collect();
    arrivals.sort();
    let (gap, (began, after_tag)) = arrivals
        .windows(2)
        .map(|w| (w[1].0 - w[0].0, w[0]))
        .max_by_key(|(gap, _)| *gap)
        .unwrap_or((Duration::ZERO, arrivals[0]));
    Some(Observed {
        pause_us: gap
            .saturating_sub(Duration::from_nanos(period))
            .as_secs_f64()
            * 1e6,
        pause_began: began,
        pause_after_tag: after_tag,
        missed,
    })
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
        let seen = pause_and_gaps(&seen, period).unwrap();
        assert_eq!(seen.missed, 1);
        assert!((seen.pause_us - 40_000.0).abs() < 1.0, "{}", seen.pause_us);
        assert_eq!(
            seen.pause_began,
            ms(20),
            "the pause began after tag 2's first arrival"
        );
        assert_eq!(seen.pause_after_tag, 20_000_000);
        assert!(pause_and_gaps(&[], period).is_none());
    }
}
