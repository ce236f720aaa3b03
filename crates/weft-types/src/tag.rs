//! Logical time.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A logical instant in nanoseconds since the app's epoch (its tag 0).
/// Processes never see wall-clock time, only tags, which is what makes
/// them replayable.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Tag(pub u64);

impl Tag {
    pub const ZERO: Tag = Tag(0);

    pub fn from_duration(d: Duration) -> Tag {
        Tag(d.as_nanos() as u64)
    }

    pub fn as_duration(self) -> Duration {
        Duration::from_nanos(self.0)
    }

    /// This tag plus `delay` (saturating).
    pub fn after(self, delay: Duration) -> Tag {
        Tag(self.0.saturating_add(delay.as_nanos() as u64))
    }

    /// Nanoseconds since the app's epoch.
    pub fn ns(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({:?})", self.as_duration())
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_duration())
    }
}
