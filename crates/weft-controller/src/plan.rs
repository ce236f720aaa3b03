//! The plan: from what is asked ([`Spec`]), what is seen ([`Observed`])
//! and what was decided ([`Current`]), the next decisions. A pure function
//! of those and the time, so every rule below is tested by tables
//! (`plan/tests.rs`), and the controller around it only does I/O.
//!
//! In order, each step seeing the one before:
//!
//! 1. **Takeover.** A process whose node is dead is promoted onto a replica
//!    on an alive node: its hot standby first, else the target of its move.
//! 2. **Moves.** A move whose target holds the process's standby swaps the
//!    two at once. A move whose replica has caught up with the process
//!    (within [`CAUGHT_UP`] of the process's last tag, both as their nodes
//!    report them) completes: the replica becomes the process. A move whose
//!    target died, or that did not complete within [`MOVE_TIMEOUT`], is
//!    abandoned: the process stays where it runs.
//! 3. **Drain.** A process on a drained node swaps with its standby if it
//!    has one elsewhere, else starts a move to where placement would put it
//!    (a process that cannot be snapshotted is left to placement).
//! 4. **Placement** of every process and replica (`placement`). A process
//!    that placement moves off a node that is still alive is *handed over*:
//!    the other nodes are told it still runs there until that node has
//!    stopped it and its final checkpoint has arrived (or
//!    [`HANDOVER_TIMEOUT`] passed), so its new node resumes from exactly
//!    where it stopped.
//! 5. **Warnings**: connections between nodes with a delay too small for a
//!    network.

use std::collections::BTreeMap;
use std::time::Duration;

use weft_manifest::ProcessSpec;
use weft_types::{AppName, NodeName, ProcessRef};

use crate::model::{App, Current, Observed, Placed, Spec, Unit};
mod moves;
mod place;

pub(crate) use place::{candidates, reported_view};

/// How close to its process a moving replica must be before it takes over.
pub const CAUGHT_UP: Duration = Duration::from_millis(600);
/// A move that has not completed after this long is abandoned.
pub const MOVE_TIMEOUT: Duration = Duration::from_secs(60);
/// A handover whose final checkpoint has not arrived after this long
/// completes anyway, from the latest checkpoint there is.
pub const HANDOVER_TIMEOUT: Duration = Duration::from_secs(10);
/// The smallest logical delay a connection between two nodes should have:
/// below it, ordinary network latency makes its messages tardy.
pub const MIN_REMOTE_DELAY: Duration = Duration::from_millis(1);

/// The next decisions, and what happened on the way there.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub current: Current,
    /// Why each unplaced unit waits, per app.
    pub pending: BTreeMap<AppName, BTreeMap<Unit, String>>,
    pub warnings: BTreeMap<AppName, Vec<String>>,
    pub events: Vec<Event>,
}

/// Something the plan decided, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Placed {
        app: AppName,
        unit: Unit,
        node: NodeName,
    },
    Moved {
        app: AppName,
        unit: Unit,
        from: NodeName,
        to: NodeName,
    },
    Lost {
        app: AppName,
        unit: Unit,
        from: NodeName,
        reason: String,
    },
    Pending {
        app: AppName,
        unit: Unit,
        reason: String,
    },
    TookOver {
        who: ProcessRef,
        from: NodeName,
        to: NodeName,
    },
    SwappedWithStandby {
        who: ProcessRef,
        from: NodeName,
        to: NodeName,
    },
    MoveStarted {
        who: ProcessRef,
        from: NodeName,
        to: NodeName,
    },
    MoveFinished {
        who: ProcessRef,
        from: NodeName,
        to: NodeName,
        /// From the request to the takeover.
        took_ms: u64,
    },
    MoveAbandoned {
        who: ProcessRef,
        to: NodeName,
        why: &'static str,
    },
    HandoverStarted {
        who: ProcessRef,
        from: NodeName,
    },
    HandedOver {
        who: ProcessRef,
        from: NodeName,
    },
    HandoverGivenUp {
        who: ProcessRef,
        from: NodeName,
        why: &'static str,
    },
    DelayWarning {
        app: AppName,
        warning: String,
    },
}

impl Event {
    /// Its name in the `weft_controller_events_total` metric.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Placed { .. } => "placed",
            Event::Moved { .. } => "moved",
            Event::Lost { .. } => "lost",
            Event::Pending { .. } => "pending",
            Event::TookOver { .. } => "took_over",
            Event::SwappedWithStandby { .. } => "swapped_with_standby",
            Event::MoveStarted { .. } => "move_started",
            Event::MoveFinished { .. } => "move_finished",
            Event::MoveAbandoned { .. } => "move_abandoned",
            Event::HandoverStarted { .. } => "handover_started",
            Event::HandedOver { .. } => "handed_over",
            Event::HandoverGivenUp { .. } => "handover_given_up",
            Event::DelayWarning { .. } => "delay_warning",
        }
    }
}

/// The next decisions. See the module documentation.
pub fn plan(spec: &Spec, seen: &Observed, current: &Current, now_ms: u64) -> Plan {
    let mut p = Planner {
        spec,
        seen,
        now_ms,
        plan: Plan {
            current: current.clone(),
            ..Plan::default()
        },
    };
    p.forget_removed();
    p.take_over();
    p.settle_moves();
    p.drain();
    p.place_all();
    p.settle_handovers();
    p.warn();
    p.plan
}

struct Planner<'a> {
    spec: &'a Spec,
    seen: &'a Observed,
    now_ms: u64,
    plan: Plan,
}

fn who(app: &AppName, spec: &ProcessSpec) -> ProcessRef {
    ProcessRef::new(app.clone(), spec.name.clone())
}

fn elapsed(since_ms: u64, now_ms: u64, limit: Duration) -> bool {
    now_ms.saturating_sub(since_ms) > limit.as_millis() as u64
}

impl Planner<'_> {
    fn event(&mut self, event: Event) {
        self.plan.events.push(event);
    }

    fn placed(&mut self, app: &AppName) -> &mut Placed {
        self.plan.current.placed.entry(app.clone()).or_default()
    }

    /// Drops decisions about apps and processes that no longer exist.
    fn forget_removed(&mut self) {
        let spec = self.spec;
        let exists = |who: &ProcessRef| {
            spec.apps
                .get(&who.app)
                .is_some_and(|a| a.spec(who.process.as_str()).is_some())
        };
        let current = &mut self.plan.current;
        current.placed.retain(|app, _| spec.apps.contains_key(app));
        current.moves.retain(|who, _| exists(who));
        current.handovers.retain(|who, _| exists(who));
    }

    /// What is placed of `app` so far (nothing, if it is new).
    fn placed_now(&self, app: &AppName) -> Placed {
        self.plan
            .current
            .placed
            .get(app)
            .cloned()
            .unwrap_or_default()
    }

    /// Step 5.
    fn warn(&mut self) {
        for (app, a) in &self.spec.apps {
            let warnings = delay_warnings(a, &self.placed_now(app));
            let changed = self.plan.events.iter().any(|e| matches!(e, Event::Placed { app: x, .. } | Event::Moved { app: x, .. } if x == app));
            if changed {
                for warning in &warnings {
                    self.event(Event::DelayWarning {
                        app: app.clone(),
                        warning: warning.clone(),
                    });
                }
            }
            self.plan.warnings.insert(app.clone(), warnings);
        }
    }
}

/// Connections whose ends `placed` puts on different nodes but whose Δ is
/// too small for a network to deliver within.
pub fn delay_warnings(app: &App, placed: &Placed) -> Vec<String> {
    app.manifest
        .connections
        .iter()
        .filter(|c| c.delay < MIN_REMOTE_DELAY)
        .filter_map(|c| {
            let from = placed.get(&Unit::primary(&c.from.process))?;
            let to = placed.get(&Unit::primary(&c.to.process))?;
            (from != to).then(|| {
                format!(
                    "connection {} -> {} has delay {:?} but runs from {from} to {to}: \
                     messages will be tardy; give it a delay of at least {MIN_REMOTE_DELAY:?} \
                     (more than the link's latency) or place both ends on one node",
                    c.from, c.to, c.delay
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
