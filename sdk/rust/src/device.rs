//! Node-provided devices: sensors and actuators (capability `device:<name>`).
//!
//! Devices are sampled at tag time: a read during a tick sees the device as
//! it is at that tick's logical tag. The node ships `plant`, a first-order
//! thermal model: read 8 bytes (water temperature, °C, `f64` LE), write 8
//! bytes (heater power in `[0, 1]`, `f64` LE, clamped by the host).

use crate::error::Error;
use crate::sys;

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

    /// Reads the device's current sample into `buf`; returns the bytes written.
    pub fn read(self, buf: &mut [u8]) -> Result<usize, Error> {
        let code = unsafe { sys::device_read(self.0, buf.as_mut_ptr(), sys::len_i32(buf.len())) };
        Error::check(code).map(|n| n as usize)
    }

    /// Writes a command to the device.
    pub fn write(self, data: &[u8]) -> Result<(), Error> {
        let code = unsafe { sys::device_write(self.0, data.as_ptr(), sys::len_i32(data.len())) };
        Error::check(code).map(|_| ())
    }

    /// Reads an 8-byte little-endian `f64` sample.
    pub fn read_f64(self) -> Result<f64, Error> {
        let mut buf = [0u8; 8];
        match self.read(&mut buf)? {
            8.. => Ok(f64::from_le_bytes(buf)),
            _ => Err(Error::BufferTooSmall),
        }
    }

    /// Writes an 8-byte little-endian `f64` command.
    pub fn write_f64(self, value: f64) -> Result<(), Error> {
        self.write(&value.to_le_bytes())
    }
}
