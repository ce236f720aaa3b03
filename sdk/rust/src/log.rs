//! Logging to the host (capability `log`).
//!
//! Plain functions take a `&str`; the crate-root macros [`error!`](crate::error!),
//! [`warn!`](crate::warn!), [`info!`](crate::info!), [`debug!`](crate::debug!)
//! and [`trace!`](crate::trace!) take `format!` arguments.
//!
//! Log sparingly from rt processes: every call is a host call and a log
//! record. Using anything in this module makes the module import `weft.log`.

use crate::sys;

/// Log levels of the ABI (`log(level, ptr, len)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(i32)]
pub enum Level {
    Error = sys::log_level::ERROR,
    Warn = sys::log_level::WARN,
    Info = sys::log_level::INFO,
    Debug = sys::log_level::DEBUG,
    Trace = sys::log_level::TRACE,
}

/// Logs `msg` at `level`.
#[inline]
pub fn log(level: Level, msg: &str) {
    unsafe { sys::log(level as i32, msg.as_ptr(), sys::len_i32(msg.len())) }
}

/// Logs `msg` at error level.
pub fn error(msg: &str) {
    log(Level::Error, msg)
}

/// Logs `msg` at warn level.
pub fn warn(msg: &str) {
    log(Level::Warn, msg)
}

/// Logs `msg` at info level.
pub fn info(msg: &str) {
    log(Level::Info, msg)
}

/// Logs `msg` at debug level.
pub fn debug(msg: &str) {
    log(Level::Debug, msg)
}

/// Logs `msg` at trace level.
pub fn trace(msg: &str) {
    log(Level::Trace, msg)
}

/// Makes panics log their message (and location) at error level before the
/// process traps. Opt-in because it makes the module import `weft.log`, which
/// needs the `log` capability. Call it first thing in `init`.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info.to_string();
        log(Level::Error, &msg);
    }));
}

/// Panics with `prefix` + `detail` (kept out of line so callers stay small).
#[cold]
#[inline(never)]
#[track_caller]
pub(crate) fn fail(prefix: &str, detail: &str) -> ! {
    panic!("{prefix}{detail}")
}

/// Logs a `format!`-style message at the given [`Level`](crate::log::Level).
#[macro_export]
macro_rules! log {
    ($level:expr, $($arg:tt)+) => {
        $crate::log::log($level, &::std::format!($($arg)+))
    };
}

/// Logs a `format!`-style message at error level.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log!($crate::log::Level::Error, $($arg)+) };
}

/// Logs a `format!`-style message at warn level.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log!($crate::log::Level::Warn, $($arg)+) };
}

/// Logs a `format!`-style message at info level.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log!($crate::log::Level::Info, $($arg)+) };
}

/// Logs a `format!`-style message at debug level.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log!($crate::log::Level::Debug, $($arg)+) };
}

/// Logs a `format!`-style message at trace level.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::log!($crate::log::Level::Trace, $($arg)+) };
}
