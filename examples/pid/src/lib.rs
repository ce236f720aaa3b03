//! weft example `pid`: a periodic (rt, 10 ms) temperature controller.
//!
//! Ports: input `setpoint` (`f64` LE, °C), output `telemetry` (24 bytes:
//! temperature, setpoint, heater power; each `f64` LE), written every tick.
//! Device: `plant` (read water temperature °C, write heater power `0..=1`).
//! Capabilities: `ports`, `device:plant`, `log` (one info line per setpoint
//! change).
//!
//! The plant is first order, `dT/dt = (20 - T + 80·u) / 2 s`, so the
//! controller combines a model feedforward `u_ff = (sp - 20) / 80` (the
//! steady-state power for the setpoint) with a PI correction. The gains
//! (`Kp = 0.5 /K`, `Ki = 0.5 /(K·s)`) give a closed-loop time constant of
//! about 50 ms once out of saturation; a 10 K step up then settles within
//! ±1 °C in about 0.4 s (it is limited by full heater power), and stays
//! within 1 s for plant gains from 60 to 100 K. Anti-windup: the integrator
//! is frozen while the output saturates in the direction of the error, and
//! clamped to ±1.
//!
//! The setpoint arrives through `weft_message`, delivered before the tick of
//! the same tag; it stays 50 °C until the first message.

use weft::{Device, Port, Reactor, Tag};

/// Ambient temperature of the plant model (°C).
const AMBIENT: f64 = 20.0;
/// Heater gain of the plant model (K at full power).
const HEATER_GAIN: f64 = 80.0;
/// Proportional gain (heater fraction per K).
const KP: f64 = 0.5;
/// Integral gain (heater fraction per K·s).
const KI: f64 = 0.5;
/// Bound of the integral term (heater fraction).
const I_MAX: f64 = 1.0;
/// Period assumed for the first tick (s).
const DEFAULT_DT: f64 = 0.010;
/// Setpoint before the first `setpoint` message (°C).
const INITIAL_SETPOINT: f64 = 50.0;

struct Pid {
    setpoint_in: Port,
    telemetry: Port,
    plant: Device,
    setpoint: f64,
    integral: f64,
    temperature: f64,
    last_tag: Option<Tag>,
}

impl Reactor for Pid {
    fn init() -> Self {
        let plant = match Device::open("plant") {
            Ok(dev) => dev,
            Err(e) => panic!("pid: cannot open device `plant`: {e}"),
        };
        Pid {
            setpoint_in: Port::named("setpoint"),
            telemetry: Port::named("telemetry"),
            plant,
            setpoint: INITIAL_SETPOINT,
            integral: 0.0,
            temperature: AMBIENT,
            last_tag: None,
        }
    }

    fn message(&mut self, port: Port, data: &[u8], _tag: Tag) {
        if port != self.setpoint_in {
            return;
        }
        let Some(sp) = weft::port::decode_f64(data) else { return };
        if sp.is_finite() && sp != self.setpoint {
            weft::info!("pid: setpoint {} -> {} C", tenths(self.setpoint), tenths(sp));
            self.setpoint = sp;
        }
    }

    fn tick(&mut self, tag: Tag) {
        let dt = match self.last_tag {
            Some(last) if tag > last => (tag.0 - last.0) as f64 * 1e-9,
            _ => DEFAULT_DT,
        };
        self.last_tag = Some(tag);

        // Hold the last temperature if a read ever fails.
        if let Ok(t) = self.plant.read_f64() {
            self.temperature = t;
        }

        let error = self.setpoint - self.temperature;
        let feedforward = (self.setpoint - AMBIENT) / HEATER_GAIN;
        let raw = feedforward + KP * error + self.integral;
        let power = raw.clamp(0.0, 1.0);
        // Conditional integration: freeze while saturated and the error
        // pushes further into saturation.
        let winding_up = (raw > 1.0 && error > 0.0) || (raw < 0.0 && error < 0.0);
        if !winding_up {
            self.integral = (self.integral + KI * error * dt).clamp(-I_MAX, I_MAX);
        }

        let _ = self.plant.write_f64(power);
        let _ = self.telemetry.send_f64s([self.temperature, self.setpoint, power]);
    }
}

/// Formats `x` with one decimal without pulling in float formatting.
fn tenths(x: f64) -> Tenths {
    Tenths((x * 10.0).round() as i64)
}

struct Tenths(i64);

impl core::fmt::Display for Tenths {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{}", abs / 10, abs % 10)
    }
}

weft::reactor!(Pid);
