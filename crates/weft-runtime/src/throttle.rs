//! Rate limits for the warnings a guest can trigger.
//!
//! A module can do something refused on every call (send an oversized
//! message, open a device it was not granted, overflow a mailbox): each
//! refusal is counted in its metrics, but the node's log gets at most one
//! line per [`WINDOW`] and kind, carrying how many were suppressed since the
//! previous one. A hostile module hurts only itself, not the node's log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::rt::monotonic_ns;

/// At most one warning of a kind per this much time.
pub const WINDOW: Duration = Duration::from_secs(10);

/// The state of one kind of warning: when the next may be logged, and how
/// many were suppressed since the last one.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    next_ns: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttle {
    /// `Some(n)` when a warning may be logged now (`n` were suppressed
    /// since the last one); `None` when this one is suppressed.
    pub fn allow(&self) -> Option<u64> {
        let now = monotonic_ns();
        let next = self.next_ns.load(Ordering::Relaxed);
        let open = now >= next
            && self
                .next_ns
                .compare_exchange(
                    next,
                    now + WINDOW.as_nanos() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok();
        if open {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_per_window_with_the_count_of_the_rest() {
        let t = Throttle::default();
        assert_eq!(t.allow(), Some(0));
        for _ in 0..99 {
            assert_eq!(t.allow(), None);
        }
        // The window has passed: the next warning says 99 were suppressed.
        t.next_ns.store(0, Ordering::Relaxed);
        assert_eq!(t.allow(), Some(99));
    }
}
