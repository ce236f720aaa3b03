//! Keeping a link to a device: one thread per device that connects, scans
//! on its period, writes what processes asked for, and when anything
//! fails or hangs drops the connection and reconnects with backoff.
//!
//! A link is a thread with a current-thread tokio runtime of its own, not
//! a task on the node's runtime: tokio's timer has a 1 ms granularity and
//! wakes up to 2 ms late, which stretched a 1 ms scan to 2; the thread
//! waits between scans on a condition variable (the kernel's high
//! resolution timer), which a write wakes at once.
//!
//! Protocol crates rarely bound a request or come back after a failure on
//! their own (tokio-modbus does neither), and a device that hangs must
//! never hang a process: so every call a [`Bridge`] makes runs under the
//! device's `timeout` here, and a timed-out connection is dropped, never
//! reused (a late answer would be taken for the next request's). What the
//! task sees goes into the device's [`Latch`], which is all processes read.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use weft_abi::sample::Quality;
use weft_types::{DeviceKind, DeviceName, DeviceReport, LinkState};

use crate::latch::{Latch, Scan};

/// The first wait before a reconnect; it doubles per failure up to
/// [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(50);
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What one scan read: a value per declared signal (NaN for the signals
/// of a request the device answered with an exception).
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub values: Vec<f64>,
    /// The first exception code any request got (0: none).
    pub exception: u8,
}

/// One protocol's side of a link. Every method is bounded by the caller.
pub trait Bridge: Send + 'static {
    /// Opens a connection (dropping any old one).
    fn connect(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Reads every declared input.
    fn scan(&mut self) -> impl Future<Output = anyhow::Result<Reading>> + Send;
    /// Writes `values` (one per declared output; NaN: leave it). A device
    /// that refuses answers `Ok(code)` with its exception code (0: done).
    fn write(&mut self, values: &[f64]) -> impl Future<Output = anyhow::Result<u8>> + Send;
    /// Forgets the connection (after a failure or a timeout).
    fn disconnect(&mut self);
}

/// How the link paces and bounds its calls.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    pub scan: Duration,
    pub timeout: Duration,
    pub stale_after: Duration,
}

/// What processes and the status see of a link.
pub struct Link {
    pub name: DeviceName,
    pub kind: DeviceKind,
    pub latch: Latch,
    pacing: Pacing,
    /// The newest values a process asked to write, not yet sent.
    pending: Mutex<Pending>,
    /// Wakes the link's thread: a write, or the stop.
    wake: Condvar,
    /// The same, for a driver that waits in async code (`mqtt`).
    notify: tokio::sync::Notify,
    stop: AtomicBool,
    status: Mutex<Counters>,
}

/// Writes queued for the link.
#[derive(Default)]
struct Pending {
    values: Option<Vec<f64>>,
    /// Flushed: send them.
    ready: bool,
}

#[derive(Default)]
struct Counters {
    up: bool,
    reconnects: u64,
    timeouts: u64,
    scans: u64,
    writes: u64,
    last_good: Option<Instant>,
    last_error: Option<String>,
}

impl Link {
    pub fn new(name: DeviceName, kind: DeviceKind, width: usize, pacing: Pacing) -> Link {
        Link {
            name,
            kind,
            latch: Latch::new(width, pacing.stale_after),
            pacing,
            pending: Mutex::default(),
            wake: Condvar::new(),
            notify: tokio::sync::Notify::new(),
            stop: AtomicBool::new(false),
            status: Mutex::default(),
        }
    }

    /// Queues a write: the newest replaces any not yet sent, so several
    /// writes in one tick are one write on the wire. It goes out at the
    /// next [`Link::flush`].
    pub fn queue_write(&self, values: Vec<f64>) {
        let mut pending = self.pending.lock().unwrap();
        match pending.values.as_mut() {
            // A NaN in the newer write leaves the older one's value.
            Some(old) => {
                for (o, n) in old.iter_mut().zip(values) {
                    if !n.is_nan() {
                        *o = n;
                    }
                }
            }
            None => pending.values = Some(values),
        }
    }

    /// Sends what is queued (the call that wrote is over).
    pub fn flush(&self) {
        let mut pending = self.pending.lock().unwrap();
        if pending.values.is_some() {
            pending.ready = true;
            self.wake.notify_one();
            self.notify.notify_one();
        }
    }

    /// Asks the link's thread to end (it does at its next wake-up).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _guard = self.pending.lock().unwrap();
        self.wake.notify_one();
        self.notify.notify_one();
    }

    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Starts the link's thread, polling `bridge`.
    pub fn spawn(self: Arc<Self>, bridge: impl Bridge) -> std::io::Result<()> {
        self.clone().spawn_driver(move || self.run(bridge))
    }

    /// Starts the link's thread running `driver` on a runtime of its own.
    pub(crate) fn spawn_driver<F: Future<Output = ()>>(
        self: Arc<Self>,
        driver: impl FnOnce() -> F + Send + 'static,
    ) -> std::io::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name(format!("weft-device-{}", self.name))
            .spawn(move || runtime.block_on(driver()))?;
        Ok(())
    }

    /// Takes the write flushed since the last call, if any (for a driver
    /// that waits on [`Link::flushed`] instead of the condition variable).
    pub(crate) fn take_flushed(&self) -> Option<Vec<f64>> {
        let mut pending = self.pending.lock().unwrap();
        match std::mem::take(&mut pending.ready) {
            true => pending.values.take(),
            false => None,
        }
    }

    /// Waits until a write is flushed or the link is stopped.
    pub(crate) async fn flushed(&self) {
        self.notify.notified().await
    }

    /// Counts a connection made (the second and later are reconnects).
    pub(crate) fn came_up(&self, reconnect: bool) {
        let mut c = self.status.lock().unwrap();
        c.up = true;
        // A link just made is fresh until it has been quiet too long.
        c.last_good = Some(Instant::now());
        if reconnect {
            c.reconnects += 1;
        }
    }

    /// Counts values received (a scan, or a message).
    pub(crate) fn received(&self) {
        let mut c = self.status.lock().unwrap();
        c.scans += 1;
        c.last_good = Some(Instant::now());
    }

    /// Counts a write sent, or says why the device refused it.
    pub(crate) fn wrote(&self, refused: Option<String>) {
        match refused {
            None => self.status.lock().unwrap().writes += 1,
            Some(why) => self.complain(why),
        }
    }

    /// Keeps a problem that did not take the link down as its last error
    /// (a payload that does not decode, a command for no signal).
    pub(crate) fn complain(&self, problem: String) {
        tracing::debug!(device = %self.name, "{problem}");
        self.status.lock().unwrap().last_error = Some(problem);
    }

    /// Waits until `until` or a write or the stop, whichever comes first;
    /// returns the write, if one came.
    fn wait(&self, until: Instant) -> Option<Vec<f64>> {
        let mut pending = self.pending.lock().unwrap();
        loop {
            if pending.ready {
                pending.ready = false;
                return pending.values.take();
            }
            let now = Instant::now();
            if now >= until || self.stopped() {
                return None;
            }
            pending = self.wake.wait_timeout(pending, until - now).unwrap().0;
        }
    }

    pub fn report(&self) -> DeviceReport {
        let c = self.status.lock().unwrap();
        let fresh = c
            .last_good
            .is_some_and(|t| t.elapsed() <= self.pacing.stale_after);
        DeviceReport {
            name: self.name.clone(),
            kind: self.kind,
            state: match (c.up, fresh) {
                (false, _) => LinkState::Disconnected,
                (true, false) => LinkState::Stale,
                (true, true) => LinkState::Connected,
            },
            reconnects: c.reconnects,
            timeouts: c.timeouts,
            scans: c.scans,
            writes: c.writes,
            last_error: c.last_error.clone(),
        }
    }

    /// Runs the link until [`Link::stop`].
    async fn run(self: Arc<Self>, mut bridge: impl Bridge) {
        let mut backoff = FIRST_BACKOFF;
        let mut ever_up = false;
        let mut seq = 0u32;
        while !self.stopped() {
            if let Err(e) = self.bounded("connect", bridge.connect()).await {
                bridge.disconnect();
                self.went_down(e);
                self.pause(&mut backoff);
                continue;
            }
            self.came_up(ever_up);
            ever_up = true;
            if let Err(e) = self.serve(&mut bridge, &mut seq, &mut backoff).await {
                bridge.disconnect();
                self.went_down(e);
                self.pause(&mut backoff);
            }
        }
    }

    /// Waits out `backoff` (a write queued meanwhile stays queued), then
    /// doubles it.
    pub(crate) fn pause(&self, backoff: &mut Duration) {
        let pending = self.pending.lock().unwrap();
        let _ = self
            .wake
            .wait_timeout_while(pending, *backoff, |_| !self.stopped());
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
    }

    /// Scans and writes over one connection until a call fails.
    async fn serve(
        &self,
        bridge: &mut impl Bridge,
        seq: &mut u32,
        backoff: &mut Duration,
    ) -> anyhow::Result<()> {
        let mut next_scan = Instant::now();
        loop {
            let reading = self.bounded("read", bridge.scan()).await?;
            *seq = seq.wrapping_add(1);
            let now = weft_runtime::rt::monotonic_ns();
            self.latch.push(Scan {
                at_ns: now,
                values_ns: now,
                unix_ns: unix_ns(),
                seq: *seq,
                quality: if reading.exception == 0 {
                    Quality::Good
                } else {
                    Quality::Exception
                },
                code: reading.exception,
                values: reading.values.into(),
            });
            self.received();
            *backoff = FIRST_BACKOFF;
            next_scan += self.pacing.scan;
            // Between scans, send writes as they come.
            while let Some(values) = self.wait(next_scan) {
                let code = self.bounded("write", bridge.write(&values)).await?;
                self.wrote((code != 0).then(|| format!("write refused: exception {code}")));
            }
            if self.stopped() {
                return Ok(());
            }
            // Keep to the grid, but after a stall longer than a period
            // start afresh rather than scan back to back.
            let now = Instant::now();
            if now > next_scan + self.pacing.scan {
                next_scan = now;
            }
        }
    }

    async fn bounded<T>(
        &self,
        what: &str,
        call: impl Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        match tokio::time::timeout(self.pacing.timeout, call).await {
            Ok(result) => result.map_err(|e| e.context(format!("{what} failed"))),
            Err(_) => {
                self.status.lock().unwrap().timeouts += 1;
                Err(anyhow::anyhow!(
                    "{what}: no answer within {:?}",
                    self.pacing.timeout
                ))
            }
        }
    }

    /// Marks the link down, and says so in the latch: tags from now on
    /// read `disconnected` with the last values.
    pub(crate) fn went_down(&self, error: anyhow::Error) {
        let message = format!("{error:#}");
        {
            let mut c = self.status.lock().unwrap();
            if c.up || c.last_error.as_deref() != Some(message.as_str()) {
                tracing::warn!(device = %self.name, "device link down: {message}");
            }
            c.up = false;
            c.last_error = Some(message);
        }
        let last = self.latch.newest();
        if last
            .as_ref()
            .is_some_and(|s| s.quality == Quality::Disconnected)
        {
            return;
        }
        let now = weft_runtime::rt::monotonic_ns();
        self.latch.push(match last {
            Some(last) => Scan {
                at_ns: now,
                quality: Quality::Disconnected,
                code: 0,
                ..last
            },
            None => Scan {
                at_ns: now,
                values_ns: now,
                unix_ns: 0,
                seq: 0,
                quality: Quality::Disconnected,
                code: 0,
                values: vec![0.0; self.latch.width()].into(),
            },
        });
    }
}

pub(crate) fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
