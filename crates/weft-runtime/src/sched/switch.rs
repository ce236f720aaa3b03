//! The output switch of a process run under a controller: live, or held.
//!
//! A hot standby (or a move's target) starts held as a replica: it runs
//! exactly like its primary (same inputs, same state, so the same outputs)
//! but publishes nothing until it is promoted; then it re-sends what it
//! held (receivers drop the copies they already had from the primary) and
//! publishes live from its next tag on.
//!
//! A live process is held when it skips ahead after a stall (see
//! `releases`): its node was probably stopped long enough to be declared
//! dead and the process replaced elsewhere, and after the skip its outputs
//! are no longer copies of its successor's, so receivers could not drop
//! them. It publishes again once the controller, having heard from the
//! node since, confirms that the process still runs here; if it runs
//! elsewhere now, the node stops it instead, and nothing it computed
//! meanwhile reached anyone.

use std::sync::atomic::{AtomicU8, Ordering};

const LIVE: u8 = 0;
const REPLICA: u8 = 1;
const STALLED: u8 = 2;

/// Where a process's outputs go; shared by its driver and its node.
pub struct Switch {
    state: AtomicU8,
}

impl Switch {
    /// The switch of a process that publishes from the start.
    pub fn live() -> Switch {
        Switch {
            state: AtomicU8::new(LIVE),
        }
    }

    /// The switch of a replica, held until promoted.
    pub fn replica() -> Switch {
        Switch {
            state: AtomicU8::new(REPLICA),
        }
    }

    /// The switch of a live process that starts held, as after a stall:
    /// it was held when its share restarted, not confirmed yet.
    pub fn stalled() -> Switch {
        Switch {
            state: AtomicU8::new(STALLED),
        }
    }

    /// Publishes from now on (re-sending what was held).
    pub fn promote(&self) {
        self.state.store(LIVE, Ordering::SeqCst);
    }

    /// Holds a live process's outputs after a stall, until the next
    /// [`Switch::promote`]. A replica stays a replica.
    pub fn hold_after_stall(&self) {
        let _ = self
            .state
            .compare_exchange(LIVE, STALLED, Ordering::SeqCst, Ordering::SeqCst);
    }

    pub fn is_live(&self) -> bool {
        self.state.load(Ordering::SeqCst) == LIVE
    }

    /// A replica not promoted yet (what `weft ps` shows as a standby).
    pub fn is_replica(&self) -> bool {
        self.state.load(Ordering::SeqCst) == REPLICA
    }

    /// Held after a stall, waiting for the controller.
    pub fn is_stalled(&self) -> bool {
        self.state.load(Ordering::SeqCst) == STALLED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_holds_a_live_process_until_promoted() {
        let s = Switch::live();
        s.hold_after_stall();
        assert!(s.is_stalled() && !s.is_live());
        s.promote();
        assert!(s.is_live());
    }

    #[test]
    fn a_process_restarted_while_held_starts_held() {
        let s = Switch::stalled();
        assert!(s.is_stalled() && !s.is_replica());
        s.promote();
        assert!(s.is_live());
    }

    #[test]
    fn a_stall_leaves_a_replica_a_replica() {
        let s = Switch::replica();
        s.hold_after_stall();
        assert!(s.is_replica());
        s.promote();
        s.hold_after_stall();
        assert!(s.is_stalled());
    }
}
