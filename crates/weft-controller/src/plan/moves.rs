//! Steps 1 to 3 of the plan: takeover of processes whose node died, moves
//! that complete or are abandoned, and drained nodes emptied.

use weft_types::{AppName, NodeName, ProcessRef, ProcessState, Role};

use super::{CAUGHT_UP, Event, MOVE_TIMEOUT, Planner, elapsed, who};
use crate::model::{App, MoveIntent, Placed, Unit};
use crate::placement;

impl Planner<'_> {
    /// Step 1: a process whose node is dead goes to a live replica.
    pub(super) fn take_over(&mut self) {
        for (app, a) in &self.spec.apps {
            for spec in &a.manifest.processes {
                let primary = Unit::primary(&spec.name);
                let Some(from) = self.placed(app).get(&primary).cloned() else {
                    continue;
                };
                if self.seen.alive(&from) {
                    continue;
                }
                for role in [Role::Standby, Role::Moving] {
                    let replica = Unit {
                        process: spec.name.clone(),
                        role,
                    };
                    let Some(to) = self.placed(app).get(&replica).cloned() else {
                        continue;
                    };
                    if self.seen.alive(&to) {
                        let placed = self.placed(app);
                        placed.remove(&replica);
                        placed.insert(primary.clone(), to.clone());
                        self.event(Event::TookOver {
                            who: who(app, spec),
                            from: from.clone(),
                            to,
                        });
                        break;
                    }
                }
            }
        }
    }

    /// Step 2: moves complete, swap with a standby, or are abandoned.
    pub(super) fn settle_moves(&mut self) {
        let moves = std::mem::take(&mut self.plan.current.moves);
        for (who, mv) in moves {
            let a = &self.spec.apps[&who.app];
            let primary = Unit::primary(&who.process);
            let moving = Unit::moving(&who.process);
            let standby = Unit::standby(&who.process);
            let placed = self.placed(&who.app).clone();
            let Some(from) = placed.get(&primary).cloned() else {
                self.abandon(&who, &mv, "the process has no node any more");
                continue;
            };
            if from == mv.to {
                // Its old node died and the replica took over already.
                self.placed(&who.app).remove(&moving);
            } else if !self.seen.alive(&mv.to) {
                self.abandon(&who, &mv, "its target is gone");
            } else if placed.get(&standby) == Some(&mv.to) {
                let placed = self.placed(&who.app);
                placed.insert(primary, mv.to.clone());
                placed.insert(standby, from.clone());
                placed.remove(&moving);
                self.event(Event::SwappedWithStandby {
                    who,
                    from,
                    to: mv.to,
                });
            } else if self.caught_up(a, &who, &from, &mv.to) {
                let placed = self.placed(&who.app);
                placed.insert(primary, mv.to.clone());
                placed.remove(&moving);
                self.event(Event::MoveFinished {
                    who,
                    from,
                    to: mv.to,
                    took_ms: self.now_ms.saturating_sub(mv.since_ms),
                });
            } else if elapsed(mv.since_ms, self.now_ms, MOVE_TIMEOUT) {
                self.abandon(&who, &mv, "its replica did not catch up in time");
            } else {
                self.plan.current.moves.insert(who, mv);
            }
        }
    }

    pub(super) fn abandon(&mut self, who: &ProcessRef, mv: &MoveIntent, why: &'static str) {
        self.placed(&who.app).remove(&Unit::moving(&who.process));
        self.event(Event::MoveAbandoned {
            who: who.clone(),
            to: mv.to.clone(),
            why,
        });
    }

    /// Whether the replica on `to` has caught up with the process on
    /// `from`, both as their nodes report them (a process its node does not
    /// report has nothing to be caught up with).
    pub(super) fn caught_up(
        &self,
        app: &App,
        who: &ProcessRef,
        from: &NodeName,
        to: &NodeName,
    ) -> bool {
        let Some(replica) = self
            .seen
            .reported(to, app, &who.process, true)
            .filter(|r| r.state == ProcessState::Running)
        else {
            return false;
        };
        let process = self.seen.reported(from, app, &who.process, false);
        match (process.and_then(|p| p.last_tag_ns), replica.last_tag_ns) {
            (Some(theirs), Some(mine)) => mine + CAUGHT_UP.as_nanos() as u64 >= theirs,
            (Some(_), None) => false,
            (None, _) => true,
        }
    }

    /// Step 3: processes on drained nodes leave live.
    pub(super) fn drain(&mut self) {
        for (app, a) in &self.spec.apps {
            for spec in &a.manifest.processes {
                let who = who(app, spec);
                let primary = Unit::primary(&spec.name);
                let Some(from) = self.placed(app).get(&primary).cloned() else {
                    continue;
                };
                let from = &from;
                let draining = self.spec.drained.contains(from) && self.seen.alive(from);
                if !draining || self.plan.current.moves.contains_key(&who) {
                    continue;
                }
                // Copied only for a process that must leave (copying the
                // app's placements for every process made planning a
                // 2,000-process app take seconds).
                let placed = self.placed(app).clone();
                let standby = Unit::standby(&spec.name);
                let heir = placed
                    .get(&standby)
                    .filter(|s| self.seen.alive(s) && !self.spec.drained.contains(*s));
                if let Some(heir) = heir {
                    let placed = self.placed(app);
                    placed.remove(&standby);
                    placed.insert(primary, heir.clone());
                    self.event(Event::SwappedWithStandby {
                        who,
                        from: from.clone(),
                        to: heir.clone(),
                    });
                } else if spec.snapshottable()
                    && let Some(to) = self.destination(app, a, &primary, &placed)
                {
                    self.event(Event::MoveStarted {
                        who: who.clone(),
                        from: from.clone(),
                        to: to.clone(),
                    });
                    let since_ms = self.now_ms;
                    self.plan
                        .current
                        .moves
                        .insert(who, MoveIntent { to, since_ms });
                }
            }
        }
    }

    /// Where placement would put `unit` if it had to leave its node.
    pub(super) fn destination(
        &self,
        app: &AppName,
        a: &App,
        unit: &Unit,
        placed: &Placed,
    ) -> Option<NodeName> {
        let mut without = placed.clone();
        without.remove(unit);
        let candidates = self.candidates(app, a);
        let views = self.views(app, &self.used());
        placement::place(&candidates, &views, &self.spec.drained, &without)
            .assignment
            .get(unit)
            .cloned()
    }
}
