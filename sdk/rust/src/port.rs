//! [`Port`]: the process's declared input and output ports (capability `ports`).
//!
//! Resolve ports by name once, in [`Reactor::init`](crate::Reactor::init),
//! and keep the handles. Outputs are written with [`Port::send`]; inputs are
//! either delivered to [`Reactor::message`](crate::Reactor::message) (when
//! the module exports `weft_message`) or pulled with [`Port::recv`] during a
//! tick (when it does not: see [`reactor!`](crate::reactor!)).
//!
//! Numbers are sent as little-endian `f64`s by the helpers here, which is
//! the convention of all weft examples.

use crate::error::Error;
use crate::sys;

/// Largest message [`Port::recv_vec`] will grow its buffer to.
const RECV_VEC_MAX: usize = 64 << 20;

/// A handle of a declared input or output port.
///
/// Handles are the port's position in the manifest's `inputs` followed by
/// `outputs`; the `port` argument of `weft_message` uses the same numbering,
/// so a `Port` can be compared with the port of a delivered message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port(i32);

impl Port {
    /// Resolves a declared port by name.
    ///
    /// # Panics
    /// If the manifest declares no such port (a configuration error: the
    /// process traps at init and the host reports the fault). Use
    /// [`Port::try_named`] to handle it instead.
    pub fn named(name: &str) -> Port {
        match Port::try_named(name) {
            Ok(port) => port,
            Err(_) => crate::log::fail("weft: unknown port: ", name),
        }
    }

    /// Resolves a declared port by name; `Err(Error::Unknown)` if there is none.
    pub fn try_named(name: &str) -> Result<Port, Error> {
        let code = unsafe { sys::port(name.as_ptr(), sys::len_i32(name.len())) };
        Error::check(code).map(|h| Port(h as i32))
    }

    /// A port from a raw handle (e.g. the `port` argument of `weft_message`).
    pub const fn from_raw(handle: i32) -> Port {
        Port(handle)
    }

    /// The raw handle.
    pub const fn raw(self) -> i32 {
        self.0
    }

    /// Sends one message on this output port.
    ///
    /// Errors: [`Error::TooLarge`] (over `max_message`), [`Error::Unknown`]
    /// (not an output port), [`Error::Full`] (outbox full).
    pub fn send(self, data: &[u8]) -> Result<(), Error> {
        let code = unsafe { sys::send(self.0, data.as_ptr(), sys::len_i32(data.len())) };
        Error::check(code).map(|_| ())
    }

    /// Sends one `f64` (8 bytes, little-endian).
    pub fn send_f64(self, value: f64) -> Result<(), Error> {
        self.send(&value.to_le_bytes())
    }

    /// Sends several `f64`s packed back to back (8 bytes each, little-endian).
    pub fn send_f64s<const N: usize>(self, values: [f64; N]) -> Result<(), Error> {
        // Stack buffer: N is small in practice (a few telemetry fields).
        let mut buf = [[0u8; 8]; N];
        for (slot, v) in buf.iter_mut().zip(values) {
            *slot = v.to_le_bytes();
        }
        self.send(buf.as_flattened())
    }

    /// Receives the next visible message on this input port into `buf`.
    ///
    /// Returns its length, or `None` when no message is visible, or when
    /// `buf` is too small (the message then stays queued; use
    /// [`Port::try_recv`] to tell the cases apart or [`Port::recv_vec`]).
    pub fn recv(self, buf: &mut [u8]) -> Option<usize> {
        self.try_recv(buf).ok().flatten()
    }

    /// Like [`Port::recv`] but reports errors: `Ok(None)` when empty,
    /// `Err(Error::BufferTooSmall)` when the message does not fit (it stays queued).
    pub fn try_recv(self, buf: &mut [u8]) -> Result<Option<usize>, Error> {
        let code = unsafe { sys::recv(self.0, buf.as_mut_ptr(), sys::len_i32(buf.len())) };
        match Error::check(code) {
            Ok(len) => Ok(Some(len as usize)),
            Err(Error::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Receives the next visible message as a `Vec`, whatever its size.
    pub fn recv_vec(self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 256];
        loop {
            match self.try_recv(&mut buf) {
                Ok(Some(len)) => {
                    buf.truncate(len);
                    return Some(buf);
                }
                Ok(None) => return None,
                Err(Error::BufferTooSmall) if buf.len() < RECV_VEC_MAX => {
                    let bigger = buf.len() * 4;
                    buf.resize(bigger, 0);
                }
                Err(_) => return None,
            }
        }
    }

    /// Receives the next message and decodes its first 8 bytes as an `f64`
    /// (little-endian). Messages shorter than 8 bytes are skipped.
    pub fn recv_f64(self) -> Option<f64> {
        let mut buf = [0u8; 8];
        loop {
            match self.try_recv(&mut buf) {
                Ok(Some(len)) if len >= 8 => return Some(f64::from_le_bytes(buf)),
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                // Longer than 8 bytes: take it whole and decode the prefix.
                Err(Error::BufferTooSmall) => {
                    let msg = self.recv_vec()?;
                    return decode_f64(&msg);
                }
                Err(_) => return None,
            }
        }
    }

    /// Drains every visible message and returns the last `f64`, if any.
    /// The usual way for a periodic process to read a setpoint-like input.
    pub fn latest_f64(self) -> Option<f64> {
        let mut last = None;
        while let Some(v) = self.recv_f64() {
            last = Some(v);
        }
        last
    }
}

/// Decodes the first 8 bytes of `data` as a little-endian `f64`.
pub fn decode_f64(data: &[u8]) -> Option<f64> {
    let bytes: [u8; 8] = data.get(..8)?.try_into().ok()?;
    Some(f64::from_le_bytes(bytes))
}

/// Decodes `N` consecutive little-endian `f64`s from the start of `data`.
pub fn decode_f64s<const N: usize>(data: &[u8]) -> Option<[f64; N]> {
    if data.len() < 8 * N {
        return None;
    }
    let mut out = [0.0; N];
    for (i, v) in out.iter_mut().enumerate() {
        *v = decode_f64(&data[8 * i..])?;
    }
    Some(out)
}
