//! What a node's `/metrics` shows: every process's counters and timing
//! histograms, and the node's own figures.
//!
//! A scrape never waits on the apps lock (a sync may hold it while a share
//! restarts) nor on anything a process's thread takes: the status task
//! swaps the list of the node's process handles in here at every status,
//! and a scrape reads those handles' atomics and published snapshots.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use arc_swap::ArcSwap;
use weft_devices::NodeDevices;
use weft_manifest::AppManifest;
use weft_metrics::{Collector, DescriptorEncoder, HistogramRow, counter, gauge, histogram};
use weft_runtime::metrics::{HISTOGRAM_BOUNDS_NS, Histogram, MetricsHandle, ProcessSample};
use weft_types::{AppName, DeviceReport, NodeName, RtClass};

use crate::apps::Context;
use crate::wiring::QueueDepth;

/// The processes of one app on this node.
pub(crate) struct AppMetrics {
    pub app: AppName,
    pub manifest: Arc<AppManifest>,
    pub processes: Vec<MetricsHandle>,
}

/// The node's side of `/metrics`, shared with its status task.
pub(crate) struct NodeMetrics {
    node: NodeName,
    rt_class: RtClass,
    slots: u32,
    /// Where the checkpoint and status counters are.
    ctx: Arc<Context>,
    apps: ArcSwap<Vec<AppMetrics>>,
    devices: Arc<NodeDevices>,
}

impl fmt::Debug for NodeMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeMetrics")
            .field("node", &self.node)
            .finish()
    }
}

impl NodeMetrics {
    pub fn new(
        ctx: Arc<Context>,
        rt_class: RtClass,
        slots: u32,
        devices: Arc<NodeDevices>,
    ) -> NodeMetrics {
        NodeMetrics {
            node: ctx.name.clone(),
            rt_class,
            slots,
            ctx,
            apps: ArcSwap::from_pointee(Vec::new()),
            devices,
        }
    }

    /// The processes as of this status.
    pub fn set_apps(&self, apps: Vec<AppMetrics>) {
        self.apps.store(Arc::new(apps));
    }

    /// The processes as of the latest status.
    pub fn apps(&self) -> Arc<Vec<AppMetrics>> {
        self.apps.load_full()
    }

    pub fn rt_class(&self) -> RtClass {
        self.rt_class
    }

    pub fn node(&self) -> &NodeName {
        &self.node
    }
}

/// A process's labels: app, process, node, class.
type Labels<'a> = [(&'static str, &'a str); 4];

/// One scraped process.
struct Row<'a> {
    labels: Labels<'a>,
    sample: ProcessSample,
}

/// A sampled counter of a process.
type Field = fn(&ProcessSample) -> u64;

const COUNTERS: &[(&str, &str, Field)] = &[
    ("process_ticks", "Periodic releases run.", |s| s.ticks),
    (
        "process_deadline_misses",
        "Calls that overran their deadline.",
        |s| s.deadline_misses,
    ),
    (
        "process_skipped_releases",
        "Releases skipped after a stall.",
        |s| s.skipped_releases,
    ),
    (
        "process_fenced_writes",
        "Writes to real devices held back (a standby, or tags run again).",
        |s| s.fenced_writes,
    ),
    ("process_restarts", "Restarts after a fault.", |s| {
        s.restarts
    }),
    (
        "process_messages_in",
        "Messages the process handled.",
        |s| s.messages_in,
    ),
    ("process_messages_out", "Messages it sent.", |s| {
        s.messages_out
    }),
    (
        "process_messages_tardy",
        "Messages that arrived after their tag was read.",
        |s| s.tardy,
    ),
    (
        "process_messages_dropped",
        "Messages dropped on a full inbox.",
        |s| s.messages_dropped,
    ),
    (
        "process_messages_refused",
        "Messages refused (not granted, malformed).",
        |s| s.messages_refused,
    ),
    (
        "process_fuel_used",
        "Fuel (Wasm instructions, roughly) used; over ticks, fuel per tick.",
        |s| s.fuel_used,
    ),
];

impl Collector for NodeMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let apps = self.apps.load();
        let rows: Vec<Row> = apps
            .iter()
            .flat_map(|a| {
                a.processes.iter().map(|p| {
                    let sample = p.sample();
                    Row {
                        labels: [
                            ("app", a.app.as_str()),
                            ("process", p.name().as_str()),
                            ("node", self.node.as_str()),
                            ("class", sample.class.as_str()),
                        ],
                        sample,
                    }
                })
            })
            .collect();
        self.encode_node(&mut encoder, rows.len())?;
        for (name, help, field) in COUNTERS {
            counter(
                &mut encoder,
                name,
                help,
                rows.iter().map(|r| (r.labels, field(&r.sample))),
            )?;
        }
        counter(
            &mut encoder,
            "process_faults",
            "Faults, by kind.",
            rows.iter().flat_map(|r| {
                r.sample
                    .faults
                    .iter()
                    .map(|(kind, n)| (with(r.labels, ("kind", kind.as_str())), *n))
            }),
        )?;
        gauge(
            &mut encoder,
            "process_memory_bytes",
            "Linear memory of the process.",
            rows.iter()
                .map(|r| (r.labels, r.sample.memory_bytes as f64)),
        )?;
        gauge(
            &mut encoder,
            "process_state",
            "1 for the state the process is in, as `weft ps` shows it.",
            rows.iter()
                .map(|r| (with(r.labels, ("state", r.sample.state.as_str())), 1.0)),
        )?;
        gauge(
            &mut encoder,
            "process_standby",
            "1 for a replica (hot standby or move target) whose outputs are held back.",
            rows.iter()
                .map(|r| (r.labels, f64::from(u8::from(r.sample.standby)))),
        )?;
        let bounds: Vec<f64> = HISTOGRAM_BOUNDS_NS
            .iter()
            .map(|ns| *ns as f64 / 1e9)
            .collect();
        let timed = |pick: fn(&weft_runtime::metrics::Timing) -> &Histogram| {
            rows.iter().filter_map(move |r| {
                let h = pick(r.sample.timing.as_ref()?);
                Some(HistogramRow {
                    labels: r.labels,
                    counts: &h.counts,
                    sum: h.sum_ns as f64 / 1e9,
                })
            })
        };
        histogram(
            &mut encoder,
            "process_jitter_seconds",
            "How late each release woke up, against its release time.",
            &bounds,
            timed(|t| &t.jitter),
        )?;
        histogram(
            &mut encoder,
            "process_exec_seconds",
            "How long each call (tick or message) ran.",
            &bounds,
            timed(|t| &t.exec),
        )
    }
}

impl NodeMetrics {
    fn encode_node(&self, encoder: &mut DescriptorEncoder, processes: usize) -> fmt::Result {
        let node = [("node", self.node.as_str())];
        gauge(
            encoder,
            "node_processes",
            "Processes and replicas on the node.",
            [(node, processes as f64)],
        )?;
        gauge(
            encoder,
            "node_slots",
            "Processes the node may run at most (--max-processes).",
            [(node, f64::from(self.slots))],
        )?;
        gauge(
            encoder,
            "node_rt_class",
            "1 for the real-time class the node's rt threads get (fifo, soft).",
            [(with(node, ("rt_class", self.rt_class.as_str())), 1.0)],
        )?;
        counter(
            encoder,
            "node_checkpoint_bytes_sent",
            "Checkpoint bytes sent to other nodes (links pushed, checkpoints served).",
            [(node, self.ctx.outbox.checkpoints().bytes_sent())],
        )?;
        counter(
            encoder,
            "node_statuses",
            "Statuses the node has published.",
            [(node, self.ctx.status_seq.load(Ordering::Relaxed))],
        )?;
        self.encode_queues(encoder, node)?;
        self.encode_devices(encoder)
    }

    /// Each device's link: its state and what it has done.
    fn encode_devices(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let reports = self.devices.reports();
        let labels = |d: &DeviceReport| {
            vec![
                ("node", self.node.to_string()),
                ("device", d.name.to_string()),
                ("kind", d.kind.to_string()),
            ]
        };
        gauge(
            encoder,
            "node_device_state",
            "1 for the state of the node's link to each device (connected, stale, disconnected, simulated).",
            reports.iter().map(|d| {
                let mut l = labels(d);
                l.push(("state", d.state.to_string()));
                (l, 1.0)
            }),
        )?;
        for &(name, help, field) in DEVICE_COUNTERS {
            counter(
                encoder,
                name,
                help,
                reports.iter().map(|d| (labels(d), field(d))),
            )?;
        }
        Ok(())
    }

    /// The lanes to the fabric: what each holds and what it dropped.
    fn encode_queues(
        &self,
        encoder: &mut DescriptorEncoder,
        node: [(&'static str, &str); 1],
    ) -> fmt::Result {
        let depths = self.ctx.outbox.depths();
        let rows = |f: fn(&QueueDepth) -> u64| {
            depths
                .iter()
                .map(move |(lane, d)| (with(node, ("lane", lane)), f(d)))
        };
        gauge(
            encoder,
            "node_fabric_queue_items",
            "Items queued for the fabric, by lane (ports, logs).",
            rows(|d| d.items).map(|(l, v)| (l, v as f64)),
        )?;
        gauge(
            encoder,
            "node_fabric_queue_bytes",
            "Bytes queued for the fabric, by lane (ports, logs).",
            rows(|d| d.bytes).map(|(l, v)| (l, v as f64)),
        )?;
        counter(
            encoder,
            "node_fabric_dropped",
            "Items dropped on a full lane (log lines; port messages wait instead).",
            rows(|d| d.dropped),
        )
    }
}

/// A counter of a device link.
type DeviceField = fn(&DeviceReport) -> u64;

/// The counters of a device link.
const DEVICE_COUNTERS: &[(&str, &str, DeviceField)] = &[
    (
        "node_device_reconnects",
        "Times a device link came back after it went down.",
        |d| d.reconnects,
    ),
    (
        "node_device_timeouts",
        "Device requests unanswered within the device's timeout.",
        |d| d.timeouts,
    ),
    ("node_device_scans", "Device scans that succeeded.", |d| {
        d.scans
    }),
    ("node_device_writes", "Writes that reached a device.", |d| {
        d.writes
    }),
];

/// `labels` and one more.
fn with<'a, const N: usize>(
    labels: [(&'static str, &'a str); N],
    extra: (&'static str, &'a str),
) -> Vec<(&'static str, &'a str)> {
    let mut all = labels.to_vec();
    all.push(extra);
    all
}
