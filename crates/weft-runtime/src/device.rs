//! Node-provided devices: sensors and actuators a process reaches through a
//! `device:<name>` capability.
//!
//! Devices are sampled at tag time, not wall-clock time: a read in the tick
//! at tag `t` sees the device as it is at `t`. For a simulated device that
//! means its model is integrated up to `t`, so a run is reproducible.
//!
//! A simulated device stands for one physical plant that every node of the
//! cell can reach, so its model state travels in the snapshot of the process
//! that opened it ([`Device::save`] / [`Device::load`]): a controller moved
//! to another node goes on controlling the same plant, not a fresh copy.
//!
//! Every read returns a [`Sample`]: a fixed header (quality, exception
//! code, sequence, age, source time) and then the device's values. The
//! bridges to real devices (`weft-devices`) fill the header from the wire;
//! a simulated device's samples are always `good` and fresh.

use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

pub use weft_abi::sample::{Quality, SAMPLE_HEADER, Sample};
use weft_types::Tag;

/// When a read happens: the tag of the call, and the monotonic instant
/// (`CLOCK_MONOTONIC`, ns) at which that tag is released on this node. A
/// simulated device integrates its model to `tag`; a bridge to a real
/// device answers with the sample it latched for `release_ns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadAt {
    pub tag: Tag,
    pub release_ns: u64,
}

/// A sensor/actuator. Reads and writes are raw bytes; each device documents
/// its encoding (see `docs/abi.md` and `docs/devices.md`).
pub trait Device: Send + Sync {
    /// The sample for `at`: header and values (see [`Sample`]). Never
    /// blocks and never does I/O: it runs on the process's thread inside
    /// its tick. `Bytes`, so a latched sample is shared, not copied, by
    /// every reader of its tag and by the recording.
    fn read(&self, at: ReadAt) -> Bytes;
    /// Applies a write at `tag`, or says why it is not acceptable.
    fn write(&self, tag: Tag, data: &[u8]) -> Result<(), String>;
    /// A real actuator: only the live primary's writes may reach it, and
    /// only once its call has succeeded. A hot standby, a migration replica
    /// before promotion and a restored process re-running tags its
    /// predecessor ran never write to it. The host checks a write with
    /// [`Device::check_write`] during the call and hands it to
    /// [`Device::write`] after. A model (`false`, the default) takes every
    /// write at once: each replica drives its own copy.
    fn fenced(&self) -> bool {
        false
    }
    /// Whether `data` is a write this device takes (fenced devices).
    fn check_write(&self, _data: &[u8]) -> Result<(), String> {
        Ok(())
    }
    /// The writes of one call have all been applied: a device that batches
    /// them (latest wins) sends them now, as one write.
    fn flush(&self) {}
    /// A JSON value describing the device's current state, for reports.
    fn status(&self) -> serde_json::Value;
    /// The model state to carry in a snapshot (`None`: a real device, whose
    /// state lives in the world, not in weft).
    fn save(&self) -> Option<Vec<u8>> {
        None
    }
    /// Puts back model state that [`Device::save`] returned.
    fn load(&self, _state: &[u8]) -> Result<(), String> {
        Err("this device has no model state to restore".into())
    }
}

/// The devices a node offers, by name, as one app sees them.
#[derive(Clone, Default)]
pub struct Devices {
    /// Shared, so giving every process of a node the node's devices is an
    /// `Arc` clone.
    by_name: Arc<BTreeMap<String, Arc<dyn Device>>>,
    /// Monotonic ns of the app's tag 0 on this node, so a read at a tag
    /// knows the instant it stands for (see [`ReadAt`]).
    epoch_ns: u64,
}

impl Devices {
    pub fn new() -> Devices {
        Devices::default()
    }

    /// The default set of a node: the simulated thermal `plant`.
    pub fn simulated() -> Devices {
        let mut devices = Devices::new();
        devices.add("plant", Arc::new(ThermalPlant::default()));
        devices
    }

    pub fn add(&mut self, name: &str, device: Arc<dyn Device>) {
        Arc::make_mut(&mut self.by_name).insert(name.to_string(), device);
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Device>> {
        self.by_name.get(name)
    }

    /// The same devices for an app whose tag 0 is at monotonic `epoch_ns`.
    pub fn for_app(&self, epoch_ns: u64) -> Devices {
        Devices {
            by_name: self.by_name.clone(),
            epoch_ns,
        }
    }

    /// When a read at `tag` happens, for this app.
    pub fn read_at(&self, tag: Tag) -> ReadAt {
        ReadAt {
            tag,
            release_ns: self.epoch_ns.saturating_add(tag.0),
        }
    }

    pub fn status(&self) -> serde_json::Value {
        self.by_name
            .iter()
            .map(|(name, d)| (name.clone(), d.status()))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

/// A first-order thermal process: a tank of water with a heater.
///
/// `dT/dt = (AMBIENT - T + GAIN·u) / TAU`, integrated exactly between tags
/// (the solution is an exponential), so any sequence of tags and heater
/// settings always gives the same temperatures.
pub struct ThermalPlant {
    state: Mutex<PlantState>,
}

struct PlantState {
    temperature: f64,
    heater: f64,
    at: Tag,
}

impl ThermalPlant {
    pub const AMBIENT: f64 = 20.0;
    pub const GAIN: f64 = 80.0;
    pub const TAU_SECONDS: f64 = 2.0;

    fn advance(state: &mut PlantState, tag: Tag) {
        if tag <= state.at {
            return;
        }
        let dt = (tag.0 - state.at.0) as f64 * 1e-9;
        let steady = Self::AMBIENT + Self::GAIN * state.heater;
        state.temperature = steady + (state.temperature - steady) * (-dt / Self::TAU_SECONDS).exp();
        state.at = tag;
    }
}

impl Default for ThermalPlant {
    fn default() -> Self {
        ThermalPlant {
            state: Mutex::new(PlantState {
                temperature: Self::AMBIENT,
                heater: 0.0,
                at: Tag::ZERO,
            }),
        }
    }
}

impl Device for ThermalPlant {
    /// Always `good` and fresh: the model is integrated to the tag.
    fn read(&self, at: ReadAt) -> Bytes {
        let mut state = self.state.lock().unwrap();
        Self::advance(&mut state, at.tag);
        Sample::good(&[state.temperature]).encode().into()
    }

    fn write(&self, tag: Tag, data: &[u8]) -> Result<(), String> {
        let bytes: [u8; 8] = data.try_into().map_err(|_| {
            format!(
                "plant: heater power must be 8 bytes (f64), got {}",
                data.len()
            )
        })?;
        let power = f64::from_le_bytes(bytes);
        if !power.is_finite() {
            return Err("plant: heater power must be a finite number".into());
        }
        let mut state = self.state.lock().unwrap();
        Self::advance(&mut state, tag);
        state.heater = power.clamp(0.0, 1.0);
        Ok(())
    }

    fn status(&self) -> serde_json::Value {
        let state = self.state.lock().unwrap();
        serde_json::json!({
            "temperature_c": state.temperature,
            "heater": state.heater,
            "at_tag_ns": state.at.0,
        })
    }

    /// Temperature, heater power and tag, each 8 bytes little-endian.
    fn save(&self) -> Option<Vec<u8>> {
        let state = self.state.lock().unwrap();
        let mut out = Vec::with_capacity(24);
        out.extend_from_slice(&state.temperature.to_le_bytes());
        out.extend_from_slice(&state.heater.to_le_bytes());
        out.extend_from_slice(&state.at.0.to_le_bytes());
        Some(out)
    }

    fn load(&self, bytes: &[u8]) -> Result<(), String> {
        let word = |i: usize| -> Result<[u8; 8], String> {
            bytes
                .get(i * 8..i * 8 + 8)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| format!("plant: model state must be 24 bytes, got {}", bytes.len()))
        };
        let mut state = self.state.lock().unwrap();
        state.temperature = f64::from_le_bytes(word(0)?);
        state.heater = f64::from_le_bytes(word(1)?);
        state.at = Tag(u64::from_le_bytes(word(2)?));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(tag: u64) -> ReadAt {
        ReadAt {
            tag: Tag(tag),
            release_ns: tag,
        }
    }

    #[test]
    fn plant_heats_toward_steady_state() {
        let plant = ThermalPlant::default();
        plant.write(Tag(0), &1.0f64.to_le_bytes()).unwrap();
        let t = |tag: u64| {
            let sample = Sample::decode(&plant.read(at(tag))).unwrap();
            assert_eq!(sample.quality, Quality::Good);
            sample.values[0]
        };
        let one_tau = t(2_000_000_000);
        assert!((one_tau - (100.0 - 80.0 * (-1.0f64).exp())).abs() < 1e-9);
        assert!(t(60_000_000_000) > 99.99);
        assert!(
            plant
                .write(Tag(1), &[1, 2])
                .unwrap_err()
                .contains("8 bytes")
        );
    }

    #[test]
    fn plant_state_moves_to_another_plant() {
        let here = ThermalPlant::default();
        here.write(Tag(0), &0.7f64.to_le_bytes()).unwrap();
        here.read(at(1_500_000_000));
        let there = ThermalPlant::default();
        there.load(&here.save().unwrap()).unwrap();
        assert_eq!(here.read(at(3_000_000_000)), there.read(at(3_000_000_000)));
        assert!(there.load(&[0; 5]).unwrap_err().contains("24 bytes"));
    }
}
