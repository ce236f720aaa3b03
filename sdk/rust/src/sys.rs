//! Raw host imports of the `weft` module and the ABI constants.
//!
//! These mirror `crates/weft-abi` and `docs/abi.md` one to one. Pointers
//! and lengths are `i32` offsets into this module's linear memory. Prefer
//! the safe wrappers in the rest of the crate; use these only for what they
//! do not cover.
//!
//! Each function is a separate wasm import, and the linker keeps only those
//! the module calls, so a module never imports (and never needs the
//! capability for) a function it does not use.

/// Wasm import module of every weft host function.
pub const IMPORT_MODULE: &str = "weft";

/// Export names the host calls.
pub mod exports {
    /// `weft_init()`.
    pub const INIT: &str = "weft_init";
    /// `weft_tick(tag: i64)`.
    pub const TICK: &str = "weft_tick";
    /// `weft_message(port: i32, ptr: i32, len: i32, tag: i64)`.
    pub const MESSAGE: &str = "weft_message";
    /// `weft_alloc(len: i32) -> i32`.
    pub const ALLOC: &str = "weft_alloc";
}

/// Status codes returned by host functions (negative results).
pub mod status {
    pub const OK: i32 = 0;
    /// Nothing there: empty mailbox, missing key.
    pub const NOT_FOUND: i32 = -1;
    /// The guest buffer is too small; the item stays where it was.
    pub const BUFFER_TOO_SMALL: i32 = -2;
    /// The message exceeds the process's `max_message` limit and was refused.
    pub const TOO_LARGE: i32 = -3;
    /// Unknown port or device handle or name, or a port used in the wrong direction.
    pub const UNKNOWN: i32 = -4;
    /// The device exists but this process was not granted it.
    pub const DENIED: i32 = -5;
    /// The outbox for this call is full (more than the mailbox depth).
    pub const FULL: i32 = -6;
}

/// Log levels accepted by [`log`].
pub mod log_level {
    pub const ERROR: i32 = 0;
    pub const WARN: i32 = 1;
    pub const INFO: i32 = 2;
    pub const DEBUG: i32 = 3;
    pub const TRACE: i32 = 4;
}

#[link(wasm_import_module = "weft")]
unsafe extern "C" {
    /// `log(level, ptr, len)` — capability `log`.
    #[link_name = "log"]
    pub fn log(level: i32, ptr: *const u8, len: i32);
    /// `now() -> i64` — capability `time`: the current logical tag in ns.
    #[link_name = "now"]
    pub fn now() -> i64;
    /// `random() -> i64` — capability `random`: next value of the seeded PRNG.
    #[link_name = "random"]
    pub fn random() -> i64;
    /// `port(name_ptr, name_len) -> handle | UNKNOWN` — capability `ports`.
    #[link_name = "port"]
    pub fn port(name_ptr: *const u8, name_len: i32) -> i32;
    /// `send(port, ptr, len) -> OK | TOO_LARGE | UNKNOWN | FULL` — capability `ports`.
    #[link_name = "send"]
    pub fn send(port: i32, ptr: *const u8, len: i32) -> i32;
    /// `recv(port, ptr, cap) -> len | NOT_FOUND | BUFFER_TOO_SMALL` — capability `ports`.
    #[link_name = "recv"]
    pub fn recv(port: i32, ptr: *mut u8, cap: i32) -> i32;
    /// `kv_get(key_ptr, key_len, val_ptr, val_cap) -> len | NOT_FOUND | BUFFER_TOO_SMALL` — capability `kv`.
    #[link_name = "kv_get"]
    pub fn kv_get(key_ptr: *const u8, key_len: i32, val_ptr: *mut u8, val_cap: i32) -> i32;
    /// `kv_set(key_ptr, key_len, val_ptr, val_len) -> OK | TOO_LARGE` — capability `kv`.
    #[link_name = "kv_set"]
    pub fn kv_set(key_ptr: *const u8, key_len: i32, val_ptr: *const u8, val_len: i32) -> i32;
    /// `kv_delete(key_ptr, key_len) -> OK | NOT_FOUND` — capability `kv`.
    #[link_name = "kv_delete"]
    pub fn kv_delete(key_ptr: *const u8, key_len: i32) -> i32;
    /// `device_open(name_ptr, name_len) -> handle | UNKNOWN | DENIED` — capability `device:<name>`.
    #[link_name = "device_open"]
    pub fn device_open(name_ptr: *const u8, name_len: i32) -> i32;
    /// `device_read(dev, ptr, cap) -> len | UNKNOWN | BUFFER_TOO_SMALL` — capability `device:<name>`.
    #[link_name = "device_read"]
    pub fn device_read(dev: i32, ptr: *mut u8, cap: i32) -> i32;
    /// `device_write(dev, ptr, len) -> OK | UNKNOWN` — capability `device:<name>`.
    #[link_name = "device_write"]
    pub fn device_write(dev: i32, ptr: *const u8, len: i32) -> i32;
}

/// Converts a buffer length to the ABI's `i32`, saturating (wasm32 memories
/// are below 4 GiB and the host bounds-checks every range anyway).
#[inline]
pub(crate) fn len_i32(len: usize) -> i32 {
    if len > i32::MAX as usize { i32::MAX } else { len as i32 }
}
