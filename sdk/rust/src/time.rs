//! Logical time (capability `time`).
//!
//! [`now`] returns the tag of the current call. Inside `tick` and `message`
//! the tag is also passed as an argument, so `now` is only needed in code
//! that does not have it at hand (and importing it needs `time`).

use crate::sys;
use crate::tag::Tag;

/// The current logical tag.
pub fn now() -> Tag {
    Tag(unsafe { sys::now() })
}
