//! weft example `analytics`: control-quality analytics (be, message-driven).
//!
//! Input `telemetry` (24 bytes from `pid`: temperature, setpoint, heater
//! power; `f64` LE each). Every 100 messages it sends on output `quality`
//! the mean absolute error `|T - setpoint|` over those 100 messages (`f64`
//! LE, K) and logs it at info level. A running count of all telemetry
//! messages it has seen is kept in kv under `count` (`u64` LE), so it
//! survives restarts and migrations.
//!
//! Capabilities: `ports`, `log`, `kv`.

use weft::{Port, Reactor, Tag};

/// Messages per quality window.
const WINDOW: u32 = 100;
/// kv key of the running message count.
const COUNT_KEY: &str = "count";

struct Analytics {
    telemetry: Port,
    quality: Port,
    /// All telemetry messages seen (persisted under `count`).
    count: u64,
    /// Messages in the current window and their summed |T - setpoint|.
    window_len: u32,
    window_sum: f64,
}

impl Reactor for Analytics {
    fn init() -> Self {
        Analytics {
            telemetry: Port::named("telemetry"),
            quality: Port::named("quality"),
            count: weft::kv::get_u64(COUNT_KEY).unwrap_or(0),
            window_len: 0,
            window_sum: 0.0,
        }
    }

    fn message(&mut self, port: Port, data: &[u8], tag: Tag) {
        if port != self.telemetry {
            return;
        }
        let Some([temperature, setpoint, _power]) = weft::port::decode_f64s::<3>(data) else {
            weft::warn!("analytics: ignoring {}-byte telemetry message at {tag}", data.len());
            return;
        };
        self.count += 1;
        let _ = weft::kv::set_u64(COUNT_KEY, self.count);

        self.window_sum += (temperature - setpoint).abs();
        self.window_len += 1;
        if self.window_len == WINDOW {
            let mae = self.window_sum / WINDOW as f64;
            self.window_len = 0;
            self.window_sum = 0.0;
            let _ = self.quality.send_f64(mae);
            weft::info!(
                "analytics: quality (mean |T - setpoint| over {WINDOW} messages) = {mae:.3} K at {tag}, {} messages total",
                self.count
            );
        }
    }
}

weft::reactor!(Analytics: message);
