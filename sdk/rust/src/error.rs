//! The [`Error`] type: the host's negative status codes as an enum.

use core::fmt;

use crate::sys::status;

/// A failed host call, decoded from the ABI status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    /// `NOT_FOUND` (-1): nothing there (empty mailbox, missing key).
    NotFound,
    /// `BUFFER_TOO_SMALL` (-2): the guest buffer is too small; the item stays queued.
    BufferTooSmall,
    /// `TOO_LARGE` (-3): over the process's `max_message` limit; refused.
    TooLarge,
    /// `UNKNOWN` (-4): unknown port/device name or handle, or a port used in the wrong direction.
    Unknown,
    /// `DENIED` (-5): the device exists but was not granted to this process.
    Denied,
    /// `FULL` (-6): the outbox is full.
    Full,
    /// Any other negative status (a newer host than this SDK).
    Other(i32),
}

impl Error {
    /// The error for a negative status code (`OK` and lengths are not errors).
    pub const fn from_code(code: i32) -> Error {
        match code {
            status::NOT_FOUND => Error::NotFound,
            status::BUFFER_TOO_SMALL => Error::BufferTooSmall,
            status::TOO_LARGE => Error::TooLarge,
            status::UNKNOWN => Error::Unknown,
            status::DENIED => Error::Denied,
            status::FULL => Error::Full,
            other => Error::Other(other),
        }
    }

    /// The ABI status code of this error.
    pub const fn code(self) -> i32 {
        match self {
            Error::NotFound => status::NOT_FOUND,
            Error::BufferTooSmall => status::BUFFER_TOO_SMALL,
            Error::TooLarge => status::TOO_LARGE,
            Error::Unknown => status::UNKNOWN,
            Error::Denied => status::DENIED,
            Error::Full => status::FULL,
            Error::Other(code) => code,
        }
    }

    /// Splits a host result: non-negative values are `Ok`, negative ones errors.
    #[inline]
    pub const fn check(code: i32) -> Result<u32, Error> {
        if code >= 0 { Ok(code as u32) } else { Err(Error::from_code(code)) }
    }

    /// A short description of the status.
    pub const fn as_str(self) -> &'static str {
        match self {
            Error::NotFound => "not found",
            Error::BufferTooSmall => "buffer too small",
            Error::TooLarge => "too large",
            Error::Unknown => "unknown name or handle",
            Error::Denied => "denied",
            Error::Full => "full",
            Error::Other(_) => "unexpected status",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.as_str(), self.code())
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in -7..0 {
            assert_eq!(Error::from_code(code).code(), code);
        }
        assert_eq!(Error::check(3), Ok(3));
        assert_eq!(Error::check(status::OK), Ok(0));
        assert_eq!(Error::check(-6), Err(Error::Full));
        assert_eq!(Error::from_code(-5), Error::Denied);
    }
}
