//! The output ports the dashboard charts: the controller subscribes to a
//! port when a page first asks for it, keeps its latest values, and drops
//! the subscription once no page has asked for a minute, so an idle
//! dashboard costs the fabric nothing.
//!
//! Only messages that cross the fabric can be seen: those of a port with a
//! receiver on another node (in the demo, the PID's telemetry to analytics).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use serde::Serialize;
use weft_fabric::codec::PortMessage;

use super::PortRef;
use crate::shared::SharedRef;

/// Values kept per port (a minute of a 10 ms port).
const KEPT: usize = 6_000;
/// A port nobody asked for this long is unsubscribed.
const IDLE: Duration = Duration::from_secs(60);

/// One message of a port: its tag, and its payload read as little-endian
/// `f64`s (empty when its length is not a multiple of 8).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct PortValue {
    pub tag_ns: u64,
    pub values: Vec<f64>,
}

#[derive(Default)]
pub(crate) struct PortTaps {
    taps: tokio::sync::Mutex<HashMap<PortRef, Tap>>,
}

struct Tap {
    values: Arc<Mutex<VecDeque<PortValue>>>,
    asked: Instant,
    _subscriber: zenoh::pubsub::Subscriber<()>,
}

impl PortTaps {
    /// The values of `port` after tag `after` (all kept, if `None`),
    /// subscribing first if nobody watched it yet.
    pub async fn values(
        &self,
        shared: &SharedRef,
        port: &PortRef,
        after: Option<u64>,
    ) -> Result<Vec<PortValue>> {
        let mut taps = self.taps.lock().await;
        taps.retain(|_, t| t.asked.elapsed() < IDLE);
        if !taps.contains_key(port) {
            check_exists(shared, port)?;
            let tap = subscribe(shared, port).await?;
            taps.insert(port.clone(), tap);
        }
        let tap = taps.get_mut(port).expect("inserted above");
        tap.asked = Instant::now();
        let values = tap.values.lock().unwrap();
        let after = after.unwrap_or(0);
        Ok(values
            .iter()
            .filter(|v| v.tag_ns > after)
            .cloned()
            .collect())
    }
}

fn check_exists(shared: &SharedRef, port: &PortRef) -> Result<()> {
    let state = shared.state();
    let Some(app) = state.spec.apps.get(&port.app) else {
        bail!("there is no app \"{}\"", port.app);
    };
    let Some(process) = app.spec(port.process.as_str()) else {
        bail!("app {} has no process \"{}\"", port.app, port.process);
    };
    if !process.outputs.contains(&port.port) {
        bail!(
            "{}/{} has no output port \"{}\"",
            port.app,
            port.process,
            port.port
        );
    }
    Ok(())
}

async fn subscribe(shared: &SharedRef, port: &PortRef) -> Result<Tap> {
    let values: Arc<Mutex<VecDeque<PortValue>>> = Arc::default();
    let key = shared.keys.port(&port.app, &port.process, &port.port);
    let sink = values.clone();
    let subscriber = shared
        .session
        .declare_subscriber(key)
        .callback(move |sample| {
            let Ok(message) = PortMessage::decode(&sample.payload().to_bytes()) else {
                return;
            };
            let mut values = sink.lock().unwrap();
            if values.len() == KEPT {
                values.pop_front();
            }
            values.push_back(PortValue {
                tag_ns: message.tag,
                values: f64s(&message.payload),
            });
        })
        .await
        .map_err(|e| anyhow!("cannot subscribe: {e}"))?;
    Ok(Tap {
        values,
        asked: Instant::now(),
        _subscriber: subscriber,
    })
}

fn f64s(payload: &[u8]) -> Vec<f64> {
    if !payload.len().is_multiple_of(8) {
        return Vec::new();
    }
    payload
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::f64s;

    #[test]
    fn payloads_read_as_f64s_when_they_fit() {
        let mut payload = 21.5f64.to_le_bytes().to_vec();
        payload.extend_from_slice(&50.0f64.to_le_bytes());
        assert_eq!(f64s(&payload), [21.5, 50.0]);
        assert!(f64s(&[1, 2, 3]).is_empty());
    }
}
