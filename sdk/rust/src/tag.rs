//! [`Tag`]: logical time in nanoseconds since the start of the app.
//!
//! A periodic process with period `P` and offset `O` is released at tags
//! `O + k·P`; a message sent at tag `t` on a connection with delay `Δ` is
//! delivered at tag `t + Δ`. Tags are the only time a module sees.

use core::fmt;
use core::ops::{Add, AddAssign, Sub, SubAssign};
use core::time::Duration;

/// A logical tag: nanoseconds since the start of the app (`i64`, as in the ABI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Tag(pub i64);

impl Tag {
    /// Tag 0: the start of the app.
    pub const ZERO: Tag = Tag(0);

    /// A tag `ns` nanoseconds after the start.
    pub const fn from_nanos(ns: i64) -> Tag {
        Tag(ns)
    }
    /// A tag `us` microseconds after the start.
    pub const fn from_micros(us: i64) -> Tag {
        Tag(us * 1_000)
    }
    /// A tag `ms` milliseconds after the start.
    pub const fn from_millis(ms: i64) -> Tag {
        Tag(ms * 1_000_000)
    }
    /// A tag `s` seconds after the start.
    pub const fn from_secs(s: i64) -> Tag {
        Tag(s * 1_000_000_000)
    }
    /// A tag `s` seconds after the start, rounded to the nearest nanosecond.
    pub fn from_secs_f64(s: f64) -> Tag {
        Tag((s * 1e9).round() as i64)
    }

    /// Nanoseconds since the start.
    pub const fn as_nanos(self) -> i64 {
        self.0
    }
    /// Whole microseconds since the start.
    pub const fn as_micros(self) -> i64 {
        self.0 / 1_000
    }
    /// Whole milliseconds since the start.
    pub const fn as_millis(self) -> i64 {
        self.0 / 1_000_000
    }
    /// Whole seconds since the start.
    pub const fn as_secs(self) -> i64 {
        self.0 / 1_000_000_000
    }
    /// Seconds since the start as a float.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 * 1e-9
    }
    /// Milliseconds since the start as a float.
    pub fn as_millis_f64(self) -> f64 {
        self.0 as f64 * 1e-6
    }
    /// The tag as a [`Duration`] since the start (zero for negative tags).
    pub fn as_duration(self) -> Duration {
        Duration::from_nanos(self.0.max(0) as u64)
    }
    /// `self - earlier` as a [`Duration`] (zero if `earlier` is later).
    pub fn since(self, earlier: Tag) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0).max(0) as u64)
    }
    /// Position within a cycle of length `period`: `self mod period`, in `[0, period)`.
    pub const fn phase(self, period: Tag) -> Tag {
        Tag(self.0.rem_euclid(period.0))
    }
}

impl From<Duration> for Tag {
    fn from(d: Duration) -> Tag {
        Tag(d.as_nanos().min(i64::MAX as u128) as i64)
    }
}

impl Add<Duration> for Tag {
    type Output = Tag;
    fn add(self, d: Duration) -> Tag {
        Tag(self.0.saturating_add(Tag::from(d).0))
    }
}

impl AddAssign<Duration> for Tag {
    fn add_assign(&mut self, d: Duration) {
        *self = *self + d;
    }
}

impl Sub<Duration> for Tag {
    type Output = Tag;
    fn sub(self, d: Duration) -> Tag {
        Tag(self.0.saturating_sub(Tag::from(d).0))
    }
}

impl SubAssign<Duration> for Tag {
    fn sub_assign(&mut self, d: Duration) {
        *self = *self - d;
    }
}

impl Sub<Tag> for Tag {
    type Output = Duration;
    /// The duration between two tags (zero if `rhs` is later).
    fn sub(self, rhs: Tag) -> Duration {
        self.since(rhs)
    }
}

impl fmt::Display for Tag {
    /// Formats as seconds with nanosecond precision, e.g. `1.250000000s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:09}s", abs / 1_000_000_000, abs % 1_000_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        let t = Tag::from_millis(1_250);
        assert_eq!(t.as_nanos(), 1_250_000_000);
        assert_eq!(t.as_secs(), 1);
        assert_eq!(t.as_millis(), 1_250);
        assert!((t.as_secs_f64() - 1.25).abs() < 1e-12);
        assert_eq!(Tag::from_secs_f64(1.25), t);
        assert_eq!(t.to_string(), "1.250000000s");
        assert_eq!(Tag(-5).to_string(), "-0.000000005s");
        assert_eq!(Tag::from_secs(13).phase(Tag::from_secs(12)), Tag::from_secs(1));
        assert_eq!(t - Tag::from_secs(1), Duration::from_millis(250));
        assert_eq!(Tag::ZERO - t, Duration::ZERO);
        assert_eq!(Tag::ZERO + Duration::from_micros(3), Tag::from_micros(3));
    }
}
