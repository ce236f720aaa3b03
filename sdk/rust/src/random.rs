//! Deterministic randomness (capability `random`).
//!
//! Values come from the process's seeded ChaCha8 PRNG on the host: the same
//! app, process name (or manifest `seed`) and call sequence give the same
//! values on every run and every node.

use crate::sys;

/// The next 64 random bits.
pub fn u64() -> u64 {
    unsafe { sys::random() as u64 }
}

/// The next 64 random bits as a signed integer.
pub fn i64() -> i64 {
    unsafe { sys::random() }
}

/// The next 32 random bits.
pub fn u32() -> u32 {
    (u64() >> 32) as u32
}

/// A uniform `f64` in `[0, 1)` (53 random bits).
pub fn f64() -> f64 {
    (u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A uniform integer in `[0, n)` (`n > 0`; returns 0 for `n == 0`).
/// Uses Lemire's multiply-shift method, with negligible bias for small `n`.
pub fn below(n: u64) -> u64 {
    ((u64() as u128 * n as u128) >> 64) as u64
}

/// Fills `buf` with random bytes.
pub fn fill(buf: &mut [u8]) {
    for chunk in buf.chunks_mut(8) {
        let bytes = u64().to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}
