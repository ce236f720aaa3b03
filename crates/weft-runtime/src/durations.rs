//! A histogram of durations small enough to keep two per process.
//!
//! Every process keeps the distribution of its wake-up jitter and of its
//! call times, to report their median, 99th percentile and maximum. A
//! dense histogram (`hdrhistogram`, which weft used before) holds a count
//! for every bucket between its lowest value and the largest it has seen:
//! at two significant digits and a range grown to the odd slow call, that
//! was about 12 KiB each, a third of a small process's footprint on its
//! node. A process's durations fall into few buckets, so this one keeps
//! only the buckets seen, in order: the same log-linear buckets (128 per
//! power of two, so a value is reported within 0.8 % of itself, and
//! exactly below 256 ns), at a few hundred bytes for a typical process.
//!
//! Recording is a binary search and an increment; a bucket seen for the
//! first time is inserted, which allocates only when the list outgrows its
//! capacity (a handful of times in a process's life).

use std::time::Duration;

/// Sub-buckets per power of two, as bits.
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
/// Buckets kept room for from the start.
const INITIAL_BUCKETS: usize = 16;

/// Counts of durations in nanoseconds, by log-linear bucket.
#[derive(Debug, Clone, Default)]
pub(crate) struct Durations {
    /// (bucket, count), in ascending bucket order; only buckets seen.
    buckets: Vec<(u16, u32)>,
    samples: u64,
    max_ns: u64,
    /// Meaningful once `samples > 0`.
    min_ns: u64,
    last_ns: u64,
    sum_ns: u64,
}

/// The bucket of `ns`: the value itself below `2 * SUB`, then `SUB`
/// buckets per power of two.
fn bucket_of(ns: u64) -> u16 {
    if ns < 2 * SUB {
        return ns as u16;
    }
    let shift = 63 - ns.leading_zeros() - SUB_BITS;
    let mantissa = (ns >> shift) - SUB;
    ((shift as u64 + 1) * SUB + mantissa) as u16
}

/// The largest value in `bucket`.
fn highest_in(bucket: u16) -> u64 {
    let bucket = bucket as u64;
    if bucket < 2 * SUB {
        return bucket;
    }
    let shift = bucket / SUB - 1;
    let lowest = (SUB + bucket % SUB) << shift;
    lowest + ((1 << shift) - 1)
}

impl Durations {
    pub fn new() -> Durations {
        Durations {
            buckets: Vec::with_capacity(INITIAL_BUCKETS),
            ..Durations::default()
        }
    }

    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let bucket = bucket_of(ns);
        match self.buckets.binary_search_by_key(&bucket, |b| b.0) {
            Ok(i) => self.buckets[i].1 = self.buckets[i].1.saturating_add(1),
            Err(i) => self.buckets.insert(i, (bucket, 1)),
        }
        self.min_ns = if self.samples == 0 {
            ns
        } else {
            self.min_ns.min(ns)
        };
        self.last_ns = ns;
        self.samples += 1;
        self.max_ns = self.max_ns.max(ns);
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }

    pub fn sum_ns(&self) -> u64 {
        self.sum_ns
    }

    /// How many samples fall at or below each of `bounds_ns` (ascending)
    /// and not below the one before it; the last count is of samples above
    /// every bound. A bucket that straddles a bound counts above it, so a
    /// sample within a bucket's width (1/128) of a bound may count in the
    /// next one up: a sample is never shown faster than it was.
    pub fn counts_by_bound(&self, bounds_ns: &[u64], counts: &mut [u64]) {
        debug_assert_eq!(counts.len(), bounds_ns.len() + 1);
        counts.fill(0);
        let mut at = 0;
        for &(bucket, count) in &self.buckets {
            let highest = highest_in(bucket).min(self.max_ns);
            while at < bounds_ns.len() && highest > bounds_ns[at] {
                at += 1;
            }
            counts[at] += count as u64;
        }
    }

    pub fn samples(&self) -> u64 {
        self.samples
    }

    pub fn max_ns(&self) -> u64 {
        self.max_ns
    }

    /// The shortest recorded (0 when nothing was).
    pub fn min_ns(&self) -> u64 {
        self.min_ns
    }

    /// The latest recorded (0 when nothing was).
    pub fn last_ns(&self) -> u64 {
        self.last_ns
    }

    /// The mean (0 when nothing was recorded).
    pub fn mean_ns(&self) -> u64 {
        self.sum_ns.checked_div(self.samples).unwrap_or(0)
    }

    /// The value at quantile `q` (0 to 1): the largest value of the bucket
    /// that holds the sample of that rank, never above the maximum seen.
    /// Zero when nothing was recorded.
    pub fn quantile_ns(&self, q: f64) -> u64 {
        let rank = ((q.clamp(0.0, 1.0) * self.samples as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for &(bucket, count) in &self.buckets {
            seen += count as u64;
            if seen >= rank {
                return highest_in(bucket).min(self.max_ns);
            }
        }
        self.max_ns
    }

    /// Bytes held beyond the struct itself.
    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<(u16, u32)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_bound_split_the_samples_at_each_bound() {
        let mut d = Durations::new();
        for ns in [100, 200, 999, 1_000, 5_000, 2_000_000] {
            d.record(Duration::from_nanos(ns));
        }
        let mut counts = [0; 4];
        d.counts_by_bound(&[200, 1_000, 10_000], &mut counts);
        // 1_000 is in the bucket 1_000..=1_003, which reaches above the
        // bound: it counts above it (a sample is never shown faster than
        // it was), while 999 ends its bucket and counts at or below.
        assert_eq!(counts, [2, 1, 2, 1]);
        assert_eq!(d.sum_ns(), 2_007_299);
        assert_eq!((d.min_ns(), d.last_ns()), (100, 2_000_000));
        assert_eq!(d.mean_ns(), 2_007_299 / 6);
        assert_eq!(Durations::new().mean_ns(), 0);
    }

    #[test]
    fn buckets_are_exact_below_256_ns_then_128_per_power_of_two() {
        for (ns, bucket, highest) in [
            (0, 0, 0),
            (1, 1, 1),
            (255, 255, 255),
            (256, 256, 257),
            (257, 256, 257),
            (258, 257, 259),
            (511, 383, 511),
            (512, 384, 515),
            (u64::MAX, 7423, u64::MAX),
        ] {
            assert_eq!(bucket_of(ns), bucket, "bucket of {ns}");
            assert_eq!(highest_in(bucket), highest, "highest of bucket {bucket}");
        }
    }

    /// Against the exact quantiles of the samples themselves: never below,
    /// and above by at most a bucket's width (1/128 of the value).
    #[test]
    fn quantiles_are_within_a_bucket_of_the_exact_ones() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let spreads: [fn(u64) -> u64; 3] = [
            |r| 50_000 + r % 2_000,             // a steady loop's jitter
            |r| 1 << (r % 36),                  // every power of two to a minute
            |r| (r % 1_000) * (r >> 60).max(1), // a long tail
        ];
        for spread in spreads {
            let mut d = Durations::new();
            let mut exact: Vec<u64> = (0..20_000).map(|_| spread(next())).collect();
            for &ns in &exact {
                d.record(Duration::from_nanos(ns));
            }
            exact.sort_unstable();
            for q in [0.0, 0.5, 0.9, 0.99, 0.999, 1.0] {
                let rank = ((q * exact.len() as f64).ceil() as usize).max(1);
                let want = exact[rank - 1];
                let got = d.quantile_ns(q);
                assert!(
                    got >= want && got - want <= want / 128,
                    "q {q}: got {got}, exact {want}"
                );
            }
            assert_eq!(d.max_ns(), *exact.last().unwrap());
            assert_eq!(d.samples(), exact.len() as u64);
        }
    }

    #[test]
    fn a_steady_process_keeps_a_few_hundred_bytes() {
        let mut d = Durations::new();
        for i in 0..1_000_000u64 {
            d.record(Duration::from_nanos(48_000 + (i * 7919) % 4_000));
        }
        assert!(d.heap_bytes() <= 1024, "{} bytes", d.heap_bytes());
        assert_eq!(Durations::new().quantile_ns(0.99), 0);
    }
}
