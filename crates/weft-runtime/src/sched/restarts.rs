//! The restart policy of a process as a small state machine: after each
//! fault, fail, park or restart after a backoff that doubles with every
//! fault in a row; a process that ran long enough without a fault starts
//! counting afresh.

use std::time::Duration;

use weft_manifest::RestartPolicy;

/// A process that ran this long without a fault has its fault count reset.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// Longest restart backoff.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What to do after a fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Restart policy `never`: stays failed.
    Fail,
    /// Crash loop: more faults in a row than `max_restarts`.
    Park { faults: u32, max_restarts: u32 },
    /// Start again at this monotonic time.
    RetryAt(u64),
}

pub(crate) struct Restarts {
    policy: RestartPolicy,
    /// Faults in a row.
    consecutive: u32,
    /// When the current incarnation started (monotonic ns).
    started_ns: u64,
}

impl Restarts {
    pub fn new(policy: RestartPolicy) -> Restarts {
        Restarts {
            policy,
            consecutive: 0,
            started_ns: 0,
        }
    }

    pub fn started(&mut self, now_ns: u64) {
        self.started_ns = now_ns;
    }

    /// A call completed: a process healthy for [`HEALTHY_AFTER`] is
    /// forgiven its earlier faults.
    pub fn ran(&mut self, now_ns: u64) {
        if self.consecutive > 0
            && now_ns.saturating_sub(self.started_ns) > HEALTHY_AFTER.as_nanos() as u64
        {
            self.consecutive = 0;
        }
    }

    pub fn fault(&mut self, now_ns: u64) -> Decision {
        let RestartPolicy::OnFailure {
            max_restarts,
            backoff,
        } = self.policy
        else {
            return Decision::Fail;
        };
        self.consecutive += 1;
        if self.consecutive > max_restarts {
            return Decision::Park {
                faults: self.consecutive,
                max_restarts,
            };
        }
        let delay = backoff
            .saturating_mul(1 << (self.consecutive - 1).min(16))
            .min(MAX_BACKOFF);
        Decision::RetryAt(now_ns + delay.as_nanos() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn on_failure(max_restarts: u32) -> Restarts {
        Restarts::new(RestartPolicy::OnFailure {
            max_restarts,
            backoff: Duration::from_millis(100),
        })
    }

    #[test]
    fn never_means_failed() {
        assert_eq!(Restarts::new(RestartPolicy::Never).fault(0), Decision::Fail);
    }

    #[test]
    fn backoff_doubles_then_a_crash_loop_parks() {
        let mut r = on_failure(3);
        assert_eq!(r.fault(0), Decision::RetryAt(100 * MS));
        assert_eq!(r.fault(0), Decision::RetryAt(200 * MS));
        assert_eq!(r.fault(0), Decision::RetryAt(400 * MS));
        assert_eq!(
            r.fault(0),
            Decision::Park {
                faults: 4,
                max_restarts: 3
            }
        );
    }

    #[test]
    fn backoff_is_capped() {
        let mut r = on_failure(100);
        let mut last = Decision::Fail;
        for _ in 0..20 {
            last = r.fault(0);
        }
        assert_eq!(last, Decision::RetryAt(MAX_BACKOFF.as_nanos() as u64));
    }

    #[test]
    fn a_healthy_run_forgives_earlier_faults() {
        let mut r = on_failure(2);
        r.fault(0);
        r.fault(0);
        r.started(1_000 * MS);
        r.ran(1_000 * MS + HEALTHY_AFTER.as_nanos() as u64 / 2);
        assert!(
            matches!(r.fault(0), Decision::Park { .. }),
            "not yet healthy"
        );
        let mut r = on_failure(2);
        r.fault(0);
        r.fault(0);
        r.started(1_000 * MS);
        r.ran(1_000 * MS + HEALTHY_AFTER.as_nanos() as u64 + 1);
        assert_eq!(r.fault(5), Decision::RetryAt(5 + 100 * MS));
    }
}
