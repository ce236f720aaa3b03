//! How far a deploy has got, as `weft ps` shows it: of an app's processes
//! at the deployed generation, how many are placed, running, or given up
//! on, and why the others wait.

use std::fmt;
use std::time::{Duration, Instant};

use weft_fabric::proto::PsEntry;
use weft_types::{AppName, ProcessState};

use crate::{Client, ClientError};

/// Counts of one app's processes at one generation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub total: usize,
    /// On a node (running or not yet).
    pub placed: usize,
    pub running: usize,
    /// Failed or parked: they will not run without a change.
    pub given_up: usize,
    /// No node can take them (the reason says why); they run when one can.
    pub unplaced: usize,
    /// The first few that are not running, with why.
    pub waiting: Vec<(String, String)>,
}

/// How many waiting processes a progress names.
const NAMED: usize = 5;

impl Progress {
    /// The progress of `app` at `generation` in the entries of `weft ps`.
    /// A process still reported at an older generation counts as placed
    /// only (its node has not started the new one yet).
    pub fn of(entries: &[PsEntry], app: &AppName, generation: u64) -> Progress {
        let mut p = Progress::default();
        for e in entries.iter().filter(|e| &e.status.app == app) {
            p.total += 1;
            let current = e.status.generation == generation;
            p.placed += e.node.is_some() as usize;
            match e.status.state {
                ProcessState::Running if current => p.running += 1,
                ProcessState::Failed | ProcessState::Parked if current => p.given_up += 1,
                state => {
                    let unplaced = state == ProcessState::Pending
                        && e.node.is_none()
                        && e.status.reason.is_some();
                    p.unplaced += unplaced as usize;
                    if p.waiting.len() < NAMED {
                        let why = e.status.reason.clone().unwrap_or_else(|| state.to_string());
                        p.waiting.push((e.status.name.to_string(), why));
                    }
                }
            }
        }
        p
    }

    /// Every process runs, or the ones that do not will not until
    /// something changes (they failed, or no node can take them).
    pub fn settled(&self) -> bool {
        self.total > 0 && self.running + self.given_up + self.unplaced == self.total
    }
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} placed, {}/{} running",
            self.placed, self.total, self.running, self.total
        )?;
        if self.given_up > 0 {
            write!(f, ", {} failed or parked", self.given_up)?;
        }
        if self.unplaced > 0 {
            write!(f, ", {} no node can take", self.unplaced)?;
        }
        Ok(())
    }
}

impl Client {
    /// Waits until every process of `app` at `generation` runs (or has
    /// been given up on), calling `report` whenever the counts change.
    /// Fails with [`ClientError::Timeout`] after `timeout`, naming what
    /// still waits.
    pub async fn wait_deployed(
        &self,
        app: &AppName,
        generation: u64,
        timeout: Duration,
        mut report: impl FnMut(&Progress),
    ) -> Result<Progress, ClientError> {
        let end = Instant::now() + timeout;
        let mut last = None;
        loop {
            // A controller busy placing thousands of processes may let one
            // `ps` time out: that is no answer yet, not the deploy's end.
            let entries = match self.ps().await {
                Ok(entries) => entries,
                Err(e @ (ClientError::NotFound(_) | ClientError::Unexpected { .. })) => {
                    return Err(e);
                }
                Err(e) if Instant::now() >= end => return Err(e),
                Err(e) => {
                    tracing::debug!("no progress this time: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let progress = Progress::of(&entries, app, generation);
            if last.as_ref() != Some(&progress) {
                report(&progress);
            }
            // Processes no node can take end the wait only once the same
            // counts are seen twice: right after a deploy, a process may
            // be pending for a moment before it is placed.
            let stable = progress.unplaced == 0 || last.as_ref() == Some(&progress);
            if progress.settled() && stable {
                return Ok(progress);
            }
            if Instant::now() >= end {
                let waiting: Vec<String> = progress
                    .waiting
                    .iter()
                    .map(|(name, why)| format!("{name}: {why}"))
                    .collect();
                return Err(ClientError::Timeout(format!(
                    "{app} is not all running after {timeout:?} ({progress}); waiting: {}",
                    waiting.join("; ")
                )));
            }
            last = Some(progress);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use weft_fabric::proto::ProcessStatus;

    use super::*;

    fn entry(app: &str, name: &str, generation: u64, state: ProcessState, node: bool) -> PsEntry {
        PsEntry {
            status: ProcessStatus {
                reason: (state == ProcessState::Pending).then(|| "no node has room".into()),
                ..ProcessStatus::unreported(
                    app.parse().unwrap(),
                    name.parse().unwrap(),
                    generation,
                    state,
                )
            },
            node: node.then(|| "a".parse().unwrap()),
            period_ns: None,
            standby: None,
            lost_checkpoint: None,
        }
    }

    #[test]
    fn progress_counts_one_app_at_one_generation() {
        use ProcessState::*;
        let app: AppName = "cell".parse().unwrap();
        let entries = [
            entry("cell", "a", 2, Running, true),
            entry("cell", "b", 1, Running, true),
            entry("cell", "c", 2, Starting, true),
            entry("cell", "d", 2, Pending, false),
            entry("cell", "e", 2, Failed, true),
            entry("other", "x", 2, Running, true),
        ];
        let p = Progress::of(&entries, &app, 2);
        assert_eq!(
            (p.total, p.placed, p.running, p.given_up, p.unplaced),
            (5, 4, 1, 1, 1)
        );
        assert_eq!(
            p.waiting,
            vec![
                ("b".to_string(), "running".to_string()),
                ("c".to_string(), "starting".to_string()),
                ("d".to_string(), "no node has room".to_string()),
            ]
        );
        assert!(!p.settled());
        assert_eq!(
            p.to_string(),
            "4/5 placed, 1/5 running, 1 failed or parked, 1 no node can take"
        );
        assert!(Progress::of(&entries[..1], &app, 2).settled());
        let unplaceable = [entries[0].clone(), entries[3].clone()];
        assert!(
            Progress::of(&unplaceable, &app, 2).settled(),
            "it waits for a node"
        );
    }
}
