//! Where a call's outputs and log lines go.
//!
//! A live process publishes both. A hot standby computes exactly what its
//! primary computes but publishes neither: it holds its outputs (the last
//! [`HOLD_FOR`] of them) and drops its log lines, which are its primary's.
//! Promoted, it first re-sends what it held, covering what its primary
//! computed but never delivered before it died (receivers drop the copies
//! they already have), then publishes live. A process held after a stall
//! (see `switch`) does the same once confirmed. A restored incarnation that is
//! catching up re-runs tags its predecessor ran, so its log lines for them
//! are not published again.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use weft_manifest::MissPolicy;
use weft_types::Tag;

use super::Switch;
use crate::process::Process;
use crate::router::Router;
use crate::types::{DeviceWrite, LogLine, LogSink, Output, ProcessId};

/// How far back a standby keeps the outputs it holds.
pub const HOLD_FOR: Duration = Duration::from_secs(2);

pub(crate) struct OutputGate {
    id: ProcessId,
    router: Arc<Router>,
    log_sink: Option<LogSink>,
    /// The switch of a process run under a controller (`None`: always live).
    switch: Option<Arc<Switch>>,
    /// What a standby computed, with the sequence numbers it had.
    held: VecDeque<(Tag, u64, Output)>,
    /// Routes nowhere: what a held standby publishes through (its sequence
    /// numbers and hash chain advance as its primary's do).
    nowhere: Router,
}

impl OutputGate {
    pub fn new(
        id: ProcessId,
        router: Arc<Router>,
        log_sink: Option<LogSink>,
        switch: Option<Arc<Switch>>,
    ) -> OutputGate {
        OutputGate {
            id,
            router,
            log_sink,
            switch,
            held: VecDeque::new(),
            nowhere: Router::default(),
        }
    }

    pub fn is_held(&self) -> bool {
        self.switch.as_ref().is_some_and(|s| !s.is_live())
    }

    /// A replica that has not been promoted yet.
    pub fn is_replica(&self) -> bool {
        self.switch.as_ref().is_some_and(|s| s.is_replica())
    }

    /// Holds the outputs after a skip-ahead, if a controller can confirm
    /// the process later; true if it does.
    pub fn hold_after_stall(&self) -> bool {
        match &self.switch {
            Some(switch) => {
                switch.hold_after_stall();
                switch.is_stalled()
            }
            None => false,
        }
    }

    /// Publishes a call's outputs, or holds them back while a standby.
    /// Returns (sent, refused by full mailboxes).
    pub fn publish(&mut self, process: &mut Process, tag: Tag, outputs: Vec<Output>) -> (u64, u64) {
        if self.switch.is_none() {
            return process.publish(&self.router, tag, outputs);
        }
        if !self.is_held() {
            for (tag, seq, output) in self.held.drain(..) {
                self.router.publish(self.id, tag, seq, &output);
            }
            return process.publish(&self.router, tag, outputs);
        }
        let first_seq = process.seq + 1;
        self.held.extend(
            outputs
                .iter()
                .enumerate()
                .map(|(i, o)| (tag, first_seq + i as u64, o.clone())),
        );
        let horizon = tag.0.saturating_sub(HOLD_FOR.as_nanos() as u64);
        while self.held.front().is_some_and(|(t, _, _)| t.0 < horizon) {
            self.held.pop_front();
        }
        process.publish(&self.nowhere, tag, outputs);
        (0, 0)
    }

    /// Applies a call's writes to fenced devices, unless they are not the
    /// process's to make: a held standby's (its primary drives the device),
    /// or those of a tag being run again (`rerun`: the device already got
    /// them, and a stale command must never reach an actuator). Returns
    /// how many were held back.
    pub fn actuate(&self, tag: Tag, writes: Vec<DeviceWrite>, rerun: bool) -> u64 {
        if self.is_held() || rerun {
            return writes.len() as u64;
        }
        for write in &writes {
            if let Err(reason) = write.device.write(tag, &write.data) {
                tracing::warn!(process = ?self.id, "device write refused: {reason}");
            }
        }
        // After all of them, so a device's writes of this call go out as one.
        for write in &writes {
            write.device.flush();
        }
        0
    }

    /// Hands a call's log lines to the log sink unless they are not the
    /// process's to publish: a held standby's, or those of a tag being run
    /// again (`rerun`).
    pub fn logs(&self, process: &Process, tag: Tag, logs: Vec<LogLine>, rerun: bool) {
        let Some(sink) = &self.log_sink else {
            return;
        };
        if self.is_held() || rerun {
            return;
        }
        for line in logs {
            sink(process.name(), line.level, tag, &line.text);
        }
    }
}

/// The outputs a call publishes: its own, or, when it missed its deadline,
/// what the process's miss policy says (the last outputs again, or none).
pub(crate) fn apply_miss_policy(
    process: &Process,
    outputs: Vec<Output>,
    missed: bool,
) -> Vec<Output> {
    if !missed {
        return outputs;
    }
    match process.spec().on_deadline_miss {
        MissPolicy::Hold => process.last_outputs().to_vec(),
        MissPolicy::Skip => Vec::new(),
    }
}
