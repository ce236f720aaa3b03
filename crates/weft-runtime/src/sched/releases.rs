//! The release grid of a periodic process, and where an incarnation
//! stands on it.
//!
//! A process with period P and offset O is released at tags `O + k·P`,
//! each at wall time `start + O + k·P` (monotonic clock). Two policies
//! decide which release runs next when the process is behind:
//!
//! * **Catch-up.** An incarnation that starts late runs every release it
//!   missed, back to back: the first one from the app's first release (a
//!   slow start, say compiling, changes nothing), a restored one from the
//!   release after its snapshot. Those calls are late by construction, so
//!   they are neither deadline misses nor jitter. A fresh start after a
//!   fault begins at the next release: the faulted incarnation's tags are
//!   gone.
//! * **Skip-ahead.** A running process that finds its next release more
//!   than [`MAX_CATCH_UP`] in the past (the node was stopped or the VM
//!   paused) does not run every missed release back to back: it skips to
//!   the first release not in the past, and the skip is counted and
//!   recorded. A gap up to that long is caught up like a restore, and those
//!   late calls are deadline misses.
//!
//! [`MAX_CATCH_UP`] also bounds the catch-up of a starting incarnation.

use std::time::Duration;

use weft_types::Tag;

/// The longest gap caught up on instead of skipped.
pub const MAX_CATCH_UP: Duration = Duration::from_secs(2);

/// The grid, and the index of the next release.
#[derive(Debug, Clone)]
pub(crate) struct Releases {
    period: u64,
    offset: u64,
    /// Monotonic time of tag 0.
    start_ns: u64,
    next: u64,
    /// This incarnation has reached a release in the future.
    caught_up: bool,
}

/// One release to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Release {
    pub tag: Tag,
    /// Monotonic time it is due.
    pub at_ns: u64,
    /// Run while catching up: late by construction.
    pub catching_up: bool,
}

/// Releases skipped after a stall: `count` of them, from `from` on; the
/// process resumes at `resume`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Skip {
    pub from: Tag,
    pub resume: Tag,
    pub count: u64,
}

impl Releases {
    pub fn new(period: Duration, offset: Duration, start_ns: u64) -> Releases {
        Releases {
            period: (period.as_nanos() as u64).max(1),
            offset: offset.as_nanos() as u64,
            start_ns,
            next: 0,
            caught_up: false,
        }
    }

    pub fn tag(&self, k: u64) -> Tag {
        Tag(self.offset + k * self.period)
    }

    /// The index of the release at `tag` (or the last one before it).
    pub fn index(&self, tag: Tag) -> u64 {
        tag.0.saturating_sub(self.offset) / self.period
    }

    /// The first release index whose release time is not in the past.
    fn due(&self, now_ns: u64) -> u64 {
        let first = self.start_ns + self.offset;
        if now_ns <= first {
            0
        } else {
            (now_ns - first).div_ceil(self.period)
        }
    }

    /// Places a new incarnation on the grid (see the module documentation):
    /// `last` is the tag its snapshot was taken at, `first` whether it is the
    /// process's first incarnation. Returns its first release's tag.
    pub fn start(&mut self, last: Option<Tag>, first: bool, now_ns: u64) -> Tag {
        let due = self.due(now_ns);
        let from = match last {
            Some(t) => self.index(t) + 1,
            None if first => 0,
            None => due,
        };
        let behind = due.saturating_sub(from).saturating_mul(self.period);
        let k = if behind <= MAX_CATCH_UP.as_nanos() as u64 {
            from
        } else {
            due
        };
        self.next = self.next.max(k);
        self.caught_up = false;
        self.tag(self.next)
    }

    /// The next release to run, skipping ahead first if a running process
    /// fell more than [`MAX_CATCH_UP`] behind.
    pub fn next(&mut self, now_ns: u64) -> (Release, Option<Skip>) {
        let mut skip = None;
        let due = self.due(now_ns);
        let behind = due.saturating_sub(self.next).saturating_mul(self.period);
        if self.caught_up && behind > MAX_CATCH_UP.as_nanos() as u64 {
            skip = Some(Skip {
                from: self.tag(self.next),
                resume: self.tag(due),
                count: due - self.next,
            });
            self.next = due;
        }
        let tag = self.tag(self.next);
        let at_ns = self.start_ns + tag.0;
        self.caught_up |= at_ns > now_ns;
        let release = Release {
            tag,
            at_ns,
            catching_up: !self.caught_up,
        };
        (release, skip)
    }

    /// The release returned by [`Releases::next`] ran.
    pub fn advance(&mut self) {
        self.next += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn grid() -> Releases {
        Releases::new(Duration::from_millis(10), Duration::ZERO, 1_000 * MS)
    }

    #[test]
    fn a_late_first_incarnation_catches_up_from_the_first_release() {
        let mut r = grid();
        let now = 1_000 * MS + 35 * MS;
        assert_eq!(r.start(None, true, now), Tag(0));
        let (first, skip) = r.next(now);
        assert_eq!((first.tag, first.catching_up, skip), (Tag(0), true, None));
        for _ in 0..4 {
            r.advance();
        }
        let (fifth, _) = r.next(now);
        assert_eq!(fifth.tag, Tag(40 * MS));
        assert!(!fifth.catching_up, "its release is in the future");
    }

    #[test]
    fn a_restored_incarnation_resumes_after_its_snapshot_within_the_bound() {
        let mut r = grid();
        let now = 1_000 * MS + 500 * MS;
        assert_eq!(r.start(Some(Tag(200 * MS)), false, now), Tag(210 * MS));
        let mut far = grid();
        let late = 1_000 * MS + 5_000 * MS;
        assert_eq!(
            far.start(Some(Tag(200 * MS)), false, late),
            Tag(5_000 * MS),
            "more than 2 s behind: skipped"
        );
        let mut fresh = grid();
        assert_eq!(
            fresh.start(None, false, now),
            Tag(500 * MS),
            "after a fault"
        );
    }

    #[test]
    fn a_long_stall_skips_ahead_and_a_short_one_is_caught_up() {
        let mut r = grid();
        let t0 = 1_000 * MS;
        r.start(None, true, t0 - MS);
        let (release, _) = r.next(t0 - MS);
        assert!(!release.catching_up);
        r.advance();
        // Stalled 50 ms: the five missed releases run, late.
        let (late, skip) = r.next(t0 + 60 * MS);
        assert_eq!((late.tag, skip), (Tag(10 * MS), None));
        assert!(!late.catching_up, "late calls of a running process count");
        r.advance();
        // Stalled 10 s: skip to the first release not in the past.
        let (resumed, skip) = r.next(t0 + 10_005 * MS);
        assert_eq!(
            skip,
            Some(Skip {
                from: Tag(20 * MS),
                resume: Tag(10_010 * MS),
                count: 999
            })
        );
        assert_eq!(resumed.tag, Tag(10_010 * MS));
    }
}
