//! Step 4 of the plan: placing every process and replica, and handing a
//! process over when placement moves it off a node that is still alive.

use std::collections::{BTreeMap, BTreeSet};

use weft_fabric::proto::NodeStatus;
use weft_manifest::ProcessSpec;
use weft_types::{AppName, NodeName, ProcessRef, Role, StandbyMode};

use super::{Event, HANDOVER_TIMEOUT, Planner, elapsed, who};
use crate::model::{App, Handover, MoveIntent, Placed, Unit};
use crate::placement::{self, Candidate, NodeView};

impl Planner<'_> {
    /// The app's units to place; a process prefers the node holding its
    /// newest checkpoint.
    pub(super) fn candidates<'s>(&self, app: &AppName, a: &'s App) -> Vec<Candidate<'s>> {
        let mut list = candidates(app, a, &self.plan.current.moves);
        for c in list.iter_mut().filter(|c| c.unit.role == Role::Primary) {
            let who = ProcessRef::new(app.clone(), c.unit.process.clone());
            c.prefer = self.seen.holders(&who).first().map(|(n, _)| (*n).clone());
        }
        list
    }

    /// The nodes `app` can be placed on, with the slots the other apps
    /// leave it (`used`: units of all apps per node, as placed so far).
    pub(super) fn views(&self, app: &AppName, used: &BTreeMap<NodeName, u32>) -> Vec<NodeView> {
        let mine = |node: &NodeName| {
            self.plan
                .current
                .placed
                .get(app)
                .map_or(0, |p| p.values().filter(|n| *n == node).count() as u32)
        };
        let mut views: Vec<NodeView> = self
            .seen
            .nodes
            .iter()
            .filter(|(_, n)| n.alive)
            .map(|(name, n)| match &n.status {
                Some(s) => {
                    let others = used
                        .get(name)
                        .copied()
                        .unwrap_or(0)
                        .saturating_sub(mine(name));
                    reported_view(name, s, others)
                }
                None => unreported(name),
            })
            .collect();
        if self.seen.presume_unseen {
            let named: BTreeSet<&NodeName> = self
                .plan
                .current
                .placed
                .values()
                .flat_map(|p| p.values())
                .filter(|n| !self.seen.nodes.contains_key(*n))
                .collect();
            views.extend(named.into_iter().map(unreported));
        }
        views
    }

    /// Units of every app per node, as placed now.
    pub(super) fn used(&self) -> BTreeMap<NodeName, u32> {
        let mut used: BTreeMap<NodeName, u32> = BTreeMap::new();
        for node in self.plan.current.placed.values().flat_map(|p| p.values()) {
            *used.entry(node.clone()).or_default() += 1;
        }
        used
    }

    /// Step 4: every app in name order; slots one app takes are gone for
    /// the next.
    pub(super) fn place_all(&mut self) {
        let mut used = self.used();
        for (app, a) in &self.spec.apps {
            let before = self.placed_now(app);
            let candidates = self.candidates(app, a);
            let views = self.views(app, &used);
            let outcome = placement::place(&candidates, &views, &self.spec.drained, &before);
            for node in before.values() {
                if let Some(u) = used.get_mut(node) {
                    *u = u.saturating_sub(1);
                }
            }
            for node in outcome.assignment.values() {
                *used.entry(node.clone()).or_default() += 1;
            }
            self.report_changes(app, a, &before, &outcome);
            self.plan
                .current
                .placed
                .insert(app.clone(), outcome.assignment);
            self.plan.pending.insert(app.clone(), outcome.pending);
        }
    }

    /// Logs what placement changed and starts the handovers it needs.
    pub(super) fn report_changes(
        &mut self,
        app: &AppName,
        a: &App,
        before: &Placed,
        outcome: &placement::Outcome,
    ) {
        let previous = self.plan.pending.get(app).cloned().unwrap_or_default();
        let units: BTreeSet<&Unit> = before
            .keys()
            .chain(outcome.assignment.keys())
            .chain(outcome.pending.keys())
            .collect();
        for unit in units {
            let (old, new) = (before.get(unit), outcome.assignment.get(unit));
            let (app, unit) = (app.clone(), unit.clone());
            match (old, new) {
                (None, Some(node)) => self.event(Event::Placed {
                    app,
                    unit,
                    node: node.clone(),
                }),
                (Some(from), Some(to)) if from != to => {
                    self.handover(&app, a, &unit, from);
                    self.event(Event::Moved {
                        app,
                        unit,
                        from: from.clone(),
                        to: to.clone(),
                    });
                }
                (Some(from), None) => {
                    let reason = outcome.pending.get(&unit).cloned().unwrap_or_default();
                    self.event(Event::Lost {
                        app,
                        unit,
                        from: from.clone(),
                        reason,
                    });
                }
                (None, None) if previous.get(&unit) != outcome.pending.get(&unit) => {
                    let reason = outcome.pending.get(&unit).cloned().unwrap_or_default();
                    self.event(Event::Pending { app, unit, reason });
                }
                _ => {}
            }
        }
    }

    /// A process placement moved off `from`: if `from` is alive and the
    /// process has state to hand over, the new node waits for it.
    pub(super) fn handover(&mut self, app: &AppName, a: &App, unit: &Unit, from: &NodeName) {
        let seen_alive = self.seen.nodes.get(from).is_some_and(|n| n.alive);
        let snapshottable = a
            .spec(unit.process.as_str())
            .is_some_and(ProcessSpec::snapshottable);
        if unit.role != Role::Primary || !seen_alive || !snapshottable {
            return;
        }
        let who = ProcessRef::new(app.clone(), unit.process.clone());
        if self.plan.current.handovers.contains_key(&who) {
            return;
        }
        self.event(Event::HandoverStarted {
            who: who.clone(),
            from: from.clone(),
        });
        self.plan.current.handovers.insert(
            who,
            Handover {
                from: from.clone(),
                since_ms: self.now_ms,
            },
        );
    }

    /// A handover completes once its old node has stopped the process and
    /// its final checkpoint has arrived; it is dropped if that node dies.
    pub(super) fn settle_handovers(&mut self) {
        let handovers = std::mem::take(&mut self.plan.current.handovers);
        for (who, h) in handovers {
            if self
                .plan
                .current
                .node(&who.app, &Unit::primary(&who.process))
                == Some(&h.from)
            {
                continue;
            }
            if !self.seen.nodes.get(&h.from).is_some_and(|n| n.alive) {
                self.event(Event::HandoverGivenUp {
                    who,
                    from: h.from,
                    why: "its old node is gone",
                });
                continue;
            }
            match self.handed_over(&who, &h.from) {
                Some(true) => self.event(Event::HandedOver { who, from: h.from }),
                _ if elapsed(h.since_ms, self.now_ms, HANDOVER_TIMEOUT) => {
                    self.event(Event::HandoverGivenUp {
                        who,
                        from: h.from,
                        why: "its final checkpoint did not arrive in time",
                    })
                }
                _ => {
                    self.plan.current.handovers.insert(who, h);
                }
            }
        }
    }

    /// Whether `from` has stopped `who` and its final checkpoint is in;
    /// `None` while `from` has not reported.
    pub(super) fn handed_over(&self, who: &ProcessRef, from: &NodeName) -> Option<bool> {
        let status = self.seen.status(from)?;
        if status.runs(&who.app, &who.process) {
            return Some(false);
        }
        let final_tag = status
            .handed_over
            .iter()
            .filter(|h| h.app == who.app && h.process == who.process)
            .map(|h| h.tag)
            .max();
        Some(match final_tag {
            None => true,
            Some(tag) => self.seen.checkpoint_tag(who).is_some_and(|t| t >= tag),
        })
    }
}

/// The units of `app` to place: every process, then the standbys of those
/// that want one, then the targets of moves (pinned there; a moving
/// process stays where it runs meanwhile). Processes come first so a
/// replica never takes a slot or a spread its process needs.
pub(crate) fn candidates<'s>(
    app: &AppName,
    a: &'s App,
    moves: &BTreeMap<ProcessRef, MoveIntent>,
) -> Vec<Candidate<'s>> {
    let processes = &a.manifest.processes;
    let primaries = processes.iter().map(|spec| Candidate {
        unit: Unit::primary(&spec.name),
        spec,
        apart_from: Vec::new(),
        node: None,
        keep: moves.contains_key(&who(app, spec)),
        prefer: None,
    });
    let standbys = processes
        .iter()
        .filter(|spec| spec.standby == Some(StandbyMode::Hot) && spec.snapshottable())
        .map(|spec| Candidate {
            unit: Unit::standby(&spec.name),
            spec,
            apart_from: vec![Unit::primary(&spec.name), Unit::moving(&spec.name)],
            node: None,
            keep: false,
            prefer: None,
        });
    let targets = processes.iter().filter_map(|spec| {
        let mv = moves.get(&who(app, spec))?;
        Some(Candidate {
            unit: Unit::moving(&spec.name),
            spec,
            apart_from: vec![Unit::primary(&spec.name), Unit::standby(&spec.name)],
            node: Some(mv.to.clone()),
            keep: false,
            prefer: None,
        })
    });
    primaries.chain(standbys).chain(targets).collect()
}

/// A node that reported its status, with `others` of its slots taken by
/// other apps.
pub(crate) fn reported_view(name: &NodeName, s: &NodeStatus, others: u32) -> NodeView {
    let capacity = match s.slots {
        0 => s.free_slots.saturating_add(s.processes.len() as u32),
        slots => slots,
    };
    NodeView {
        name: name.clone(),
        labels: s.labels.clone(),
        devices: s.devices.clone(),
        rt_class: Some(s.rt_class),
        free_slots: capacity.saturating_sub(others),
        reported: true,
    }
}

fn unreported(name: &NodeName) -> NodeView {
    NodeView {
        name: name.clone(),
        labels: BTreeMap::new(),
        devices: Vec::new(),
        rt_class: None,
        free_slots: 0,
        reported: false,
    }
}
