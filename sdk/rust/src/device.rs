//! Node-provided devices: sensors and actuators (capability `device:<name>`).
//!
//! Devices are sampled at tag time: every read during the tick at tag `t`
//! sees the sample the node latched for `t`, the same bytes for every
//! process that reads the device at `t`. A sample is a 24-byte header
//! ([`Header`]: quality, exception code, sequence, age, source time) and
//! then the device's values, each an `f64` little-endian, in the order the
//! node declares them (`docs/devices.md`). The simulated `plant` has one
//! value, the water temperature in °C, and takes one, the heater power in
//! `[0, 1]` (clamped by the host).

use crate::error::Error;
use crate::sys;

/// Bytes of a sample before its values (mirrors `weft_abi::sample`).
pub const HEADER: usize = 24;

/// How much a sample's values can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quality {
    /// Read from the device within its `stale_after`.
    Good,
    /// The newest values are older than the device's `stale_after`.
    Stale,
    /// The link is down; the values are the last ones read.
    Disconnected,
    /// The device answered with an exception ([`Header::code`]).
    Exception,
    /// Nothing was latched for this tag.
    Unavailable,
    /// A quality this SDK does not know (a newer host).
    Other(u8),
}

impl Quality {
    pub const fn from_u8(byte: u8) -> Quality {
        match byte {
            0 => Quality::Good,
            1 => Quality::Stale,
            2 => Quality::Disconnected,
            3 => Quality::Exception,
            4 => Quality::Unavailable,
            other => Quality::Other(other),
        }
    }
}

/// A sample's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub quality: Quality,
    /// The device's exception code when `quality` is `Exception` (Modbus:
    /// 2 = illegal data address), else 0.
    pub code: u8,
    /// Sequence number of the scan the values come from.
    pub seq: u32,
    /// The tag's release minus the arrival of the values, ns.
    pub age_ns: u64,
    /// When the values were read, ns since the Unix epoch (0: simulated).
    pub source_ns: u64,
}

impl Header {
    fn parse(bytes: &[u8; HEADER]) -> Header {
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[i..i + 8]);
            u64::from_le_bytes(b)
        };
        Header {
            quality: Quality::from_u8(bytes[0]),
            code: bytes[1],
            seq: u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
            age_ns: u64_at(8),
            source_ns: u64_at(16),
        }
    }
}

/// An open device handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Device(i32);

impl Device {
    /// Opens a device by name: `Err(Error::Unknown)` if the node has none,
    /// `Err(Error::Denied)` if it was not granted to this process.
    pub fn open(name: &str) -> Result<Device, Error> {
        let code = unsafe { sys::device_open(name.as_ptr(), sys::len_i32(name.len())) };
        Error::check(code).map(|h| Device(h as i32))
    }

    /// A device from a raw handle.
    pub const fn from_raw(handle: i32) -> Device {
        Device(handle)
    }

    /// The raw handle.
    pub const fn raw(self) -> i32 {
        self.0
    }

    /// Reads the raw sample (header and values) into `buf`; returns the
    /// bytes written.
    pub fn read(self, buf: &mut [u8]) -> Result<usize, Error> {
        let code = unsafe { sys::device_read(self.0, buf.as_mut_ptr(), sys::len_i32(buf.len())) };
        Error::check(code).map(|n| n as usize)
    }

    /// Reads a sample of at most `N` values: its header and the values
    /// (positions past the device's values stay 0). `Err(BufferTooSmall)`
    /// when the device has more than `N`.
    pub fn sample<const N: usize>(self) -> Result<(Header, [f64; N]), Error> {
        let mut buf = [0u8; 1024];
        let cap = (HEADER + 8 * N).min(buf.len());
        let n = self.read(&mut buf[..cap])?;
        if n < HEADER {
            return Err(Error::BufferTooSmall);
        }
        let mut head = [0u8; HEADER];
        head.copy_from_slice(&buf[..HEADER]);
        let mut values = [0.0; N];
        for (i, chunk) in buf[HEADER..n].chunks_exact(8).enumerate().take(N) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            values[i] = f64::from_le_bytes(b);
        }
        Ok((Header::parse(&head), values))
    }

    /// The first value of a `good` sample. `Err(Error::NotFound)` when the
    /// sample is not good (stale, disconnected, exception, unavailable):
    /// hold the last value, or read [`Device::sample`] to see why.
    pub fn read_f64(self) -> Result<f64, Error> {
        let mut buf = [0u8; 1024];
        let n = self.read(&mut buf)?;
        if n < HEADER + 8 {
            return Err(Error::BufferTooSmall);
        }
        if buf[0] != 0 {
            return Err(Error::NotFound);
        }
        let mut b = [0u8; 8];
        b.copy_from_slice(&buf[HEADER..HEADER + 8]);
        Ok(f64::from_le_bytes(b))
    }

    /// Writes a command to the device: for a bridged device, one `f64` LE
    /// per signal of its `write` list (NaN leaves a signal as it is).
    pub fn write(self, data: &[u8]) -> Result<(), Error> {
        let code = unsafe { sys::device_write(self.0, data.as_ptr(), sys::len_i32(data.len())) };
        Error::check(code).map(|_| ())
    }

    /// Writes an 8-byte little-endian `f64` command.
    pub fn write_f64(self, value: f64) -> Result<(), Error> {
        self.write(&value.to_le_bytes())
    }
}
