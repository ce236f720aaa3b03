//! The process image of one device: what its bridge read, when, and the
//! sample each tag was given.
//!
//! A bridge task pushes every scan (and every time the link goes down)
//! into the [`Latch`]. A process reading at tag `t` gets the newest scan
//! that arrived before `t`'s release, frozen the first time anyone asks
//! for `t`: every process and every read in one tick see the same bytes,
//! and a process catching up on past tags gets what was there then (for
//! [`HISTORY`]; older tags read `unavailable`). A read copies bytes under a
//! short lock and never waits for the network.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use weft_abi::sample::{Quality, Sample};

/// How far back the latch answers for: a restored process catches up at
/// most this far (`weft_runtime`'s `MAX_CATCH_UP`), so it always finds the
/// samples its tags were given.
pub const HISTORY: Duration = Duration::from_millis(2_500);

/// What the bridge saw at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Scan {
    /// Monotonic ns it took effect: when it arrived, or when the link went
    /// down.
    pub at_ns: u64,
    /// Monotonic ns its values arrived (a sample's age counts from here).
    pub values_ns: u64,
    /// ns since the Unix epoch its values arrived (the source time).
    pub unix_ns: u64,
    pub seq: u32,
    /// `Good`, `Exception` (with `code`) or `Disconnected` (the values are
    /// then the last ones read).
    pub quality: Quality,
    pub code: u8,
    pub values: Arc<[f64]>,
}

pub struct Latch {
    stale_after_ns: u64,
    width: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Oldest first.
    scans: VecDeque<Scan>,
    /// The sample given to each release instant read so far.
    latched: BTreeMap<u64, Bytes>,
}

impl Latch {
    /// A latch for samples of `width` values.
    pub fn new(width: usize, stale_after: Duration) -> Latch {
        Latch {
            stale_after_ns: u64::try_from(stale_after.as_nanos()).unwrap_or(u64::MAX),
            width,
            inner: Mutex::default(),
        }
    }

    /// Values per sample.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Adds what the bridge just saw.
    pub fn push(&self, scan: Scan) {
        let mut inner = self.inner.lock().unwrap();
        let horizon = scan.at_ns.saturating_sub(HISTORY.as_nanos() as u64);
        // Keep the newest scan before the horizon: it is what tags just
        // inside the horizon were given.
        while inner.scans.len() > 1 && inner.scans[1].at_ns <= horizon {
            inner.scans.pop_front();
        }
        inner.scans.push_back(scan);
        while inner
            .latched
            .first_key_value()
            .is_some_and(|(at, _)| *at < horizon)
        {
            inner.latched.pop_first();
        }
    }

    /// The newest scan pushed, if any.
    pub fn newest(&self) -> Option<Scan> {
        self.inner.lock().unwrap().scans.back().cloned()
    }

    /// The sample for the tag released at monotonic `release_ns`.
    pub fn read(&self, release_ns: u64) -> Bytes {
        let mut inner = self.inner.lock().unwrap();
        if let Some(bytes) = inner.latched.get(&release_ns) {
            return bytes.clone();
        }
        let bytes = self.encode(&inner.scans, release_ns);
        if inner.scans.front().is_some_and(|s| s.at_ns <= release_ns) {
            inner.latched.insert(release_ns, bytes.clone());
        }
        bytes
    }

    /// The sample the newest scan before `release_ns` gives, encoded in
    /// one allocation.
    fn encode(&self, scans: &VecDeque<Scan>, release_ns: u64) -> Bytes {
        let before = scans.partition_point(|s| s.at_ns <= release_ns);
        let Some(scan) = before.checked_sub(1).map(|i| &scans[i]) else {
            let nothing = Sample {
                quality: Quality::Unavailable,
                ..Sample::good(&[])
            };
            return nothing.encode_with(&vec![0.0; self.width]).into();
        };
        let age_ns = release_ns.saturating_sub(scan.values_ns);
        let quality = match scan.quality {
            Quality::Good if age_ns > self.stale_after_ns => Quality::Stale,
            q => q,
        };
        let head = Sample {
            quality,
            code: scan.code,
            seq: scan.seq,
            age_ns,
            source_ns: scan.unix_ns,
            values: Vec::new(),
        };
        head.encode_with(&scan.values).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn scan(at_ms: u64, seq: u32, quality: Quality, value: f64) -> Scan {
        Scan {
            at_ns: at_ms * MS,
            values_ns: at_ms * MS,
            unix_ns: 1_000 + at_ms,
            seq,
            quality,
            code: 0,
            values: Arc::from([value]),
        }
    }

    fn read(latch: &Latch, at_ms: u64) -> Sample {
        Sample::decode(&latch.read(at_ms * MS)).unwrap()
    }

    #[test]
    fn a_tag_gets_the_newest_scan_before_it_and_keeps_it() {
        let latch = Latch::new(1, Duration::from_millis(50));
        assert_eq!(read(&latch, 5).quality, Quality::Unavailable);
        latch.push(scan(10, 1, Quality::Good, 20.0));
        latch.push(scan(20, 2, Quality::Good, 21.0));
        let at_25 = read(&latch, 25);
        assert_eq!(
            (at_25.seq, at_25.values[0], at_25.age_ns),
            (2, 21.0, 5 * MS)
        );
        assert_eq!(at_25.source_ns, 1_020);
        // A scan arriving later does not change what tag 25 was given...
        latch.push(scan(24, 3, Quality::Good, 22.0));
        assert_eq!(read(&latch, 25).seq, 2);
        // ...and a tag read for the first time now gets what was there.
        assert_eq!(read(&latch, 15).seq, 1);
        assert_eq!(read(&latch, 30).seq, 3);
    }

    #[test]
    fn old_values_turn_stale_and_a_down_link_says_disconnected() {
        let latch = Latch::new(1, Duration::from_millis(50));
        latch.push(scan(10, 1, Quality::Good, 20.0));
        assert_eq!(read(&latch, 60).quality, Quality::Good);
        assert_eq!(read(&latch, 61).quality, Quality::Stale);
        latch.push(Scan {
            values_ns: 10 * MS,
            ..scan(70, 1, Quality::Disconnected, 20.0)
        });
        let down = read(&latch, 75);
        assert_eq!(
            (down.quality, down.values[0]),
            (Quality::Disconnected, 20.0)
        );
        assert_eq!(down.age_ns, 65 * MS, "the values' age, not the outage's");
    }

    #[test]
    fn history_is_bounded_and_older_tags_are_unavailable() {
        let latch = Latch::new(1, Duration::from_millis(50));
        for i in 0..1_000u64 {
            latch.push(scan(i * 10, i as u32, Quality::Good, i as f64));
            latch.read(i * 10 * MS + MS);
        }
        let inner = latch.inner.lock().unwrap();
        let kept_ms = HISTORY.as_millis() as usize / 10;
        assert!(inner.scans.len() <= kept_ms + 2, "{}", inner.scans.len());
        assert!(
            inner.latched.len() <= kept_ms + 2,
            "{}",
            inner.latched.len()
        );
        drop(inner);
        assert_eq!(read(&latch, 1).quality, Quality::Unavailable);
        assert_eq!(read(&latch, 9_985).seq, 998);
    }
}
