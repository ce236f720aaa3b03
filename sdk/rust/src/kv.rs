//! Process-local durable key/value store (capability `kv`).
//!
//! Keys and values are bytes (`&str` works for keys via `AsRef<[u8]>`). The
//! store survives restarts and migrations of the process. Key plus value
//! must fit within the process's `max_message` limit.

use crate::error::Error;
use crate::sys;

/// Reads `key` into `buf`: `Ok(Some(len))`, `Ok(None)` if the key is missing,
/// or `Err(Error::BufferTooSmall)`.
pub fn get_into(key: impl AsRef<[u8]>, buf: &mut [u8]) -> Result<Option<usize>, Error> {
    let key = key.as_ref();
    let code = unsafe {
        sys::kv_get(key.as_ptr(), sys::len_i32(key.len()), buf.as_mut_ptr(), sys::len_i32(buf.len()))
    };
    match Error::check(code) {
        Ok(len) => Ok(Some(len as usize)),
        Err(Error::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads the value of `key`, or `None` if it is missing.
pub fn get(key: impl AsRef<[u8]>) -> Option<Vec<u8>> {
    let key = key.as_ref();
    let mut buf = vec![0u8; 64];
    loop {
        match get_into(key, &mut buf) {
            Ok(Some(len)) => {
                buf.truncate(len);
                return Some(buf);
            }
            Ok(None) => return None,
            Err(Error::BufferTooSmall) if buf.len() < (64 << 20) => {
                let bigger = buf.len() * 4;
                buf.resize(bigger, 0);
            }
            Err(_) => return None,
        }
    }
}

/// Stores `value` under `key`. `Err(Error::TooLarge)` if key + value exceed `max_message`.
pub fn set(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<(), Error> {
    let (key, value) = (key.as_ref(), value.as_ref());
    let code = unsafe {
        sys::kv_set(key.as_ptr(), sys::len_i32(key.len()), value.as_ptr(), sys::len_i32(value.len()))
    };
    Error::check(code).map(|_| ())
}

/// Deletes `key`. Returns whether it existed.
pub fn delete(key: impl AsRef<[u8]>) -> bool {
    let key = key.as_ref();
    unsafe { sys::kv_delete(key.as_ptr(), sys::len_i32(key.len())) == sys::status::OK }
}

/// Reads a `u64` stored little-endian under `key` (as written by [`set_u64`]).
pub fn get_u64(key: impl AsRef<[u8]>) -> Option<u64> {
    let mut buf = [0u8; 8];
    match get_into(key, &mut buf) {
        Ok(Some(8)) => Some(u64::from_le_bytes(buf)),
        _ => None,
    }
}

/// Stores a `u64` little-endian under `key`.
pub fn set_u64(key: impl AsRef<[u8]>, value: u64) -> Result<(), Error> {
    set(key, value.to_le_bytes())
}

/// Reads an `f64` stored little-endian under `key` (as written by [`set_f64`]).
pub fn get_f64(key: impl AsRef<[u8]>) -> Option<f64> {
    let mut buf = [0u8; 8];
    match get_into(key, &mut buf) {
        Ok(Some(8)) => Some(f64::from_le_bytes(buf)),
        _ => None,
    }
}

/// Stores an `f64` little-endian under `key`.
pub fn set_f64(key: impl AsRef<[u8]>, value: f64) -> Result<(), Error> {
    set(key, value.to_le_bytes())
}
