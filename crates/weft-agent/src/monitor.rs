//! A node's task monitor (`node/<name>/monitor`, read by `weft top`): per
//! process, its cycle time (how long its calls take) last, mean, min, max
//! and p99, its release jitter the same way, deadline misses and fuel per
//! call, since it started.
//!
//! Like a metrics scrape, it reads the process handles the status task
//! hands over at every status, never the apps lock nor anything a
//! process's thread takes; it costs nothing until someone asks.

use weft_fabric::proto::{NodeMonitor, TaskEntry, TimeStats};
use weft_runtime::metrics::{Percentiles, ProcessReport};

use crate::metrics::{AppMetrics, NodeMetrics};

/// The monitor as of the latest status.
pub(crate) fn monitor(board: &NodeMetrics) -> NodeMonitor {
    let apps = board.apps();
    let processes = apps.iter().flat_map(entries).collect();
    NodeMonitor {
        node: board.node().clone(),
        rt_class: board.rt_class(),
        processes,
    }
}

fn entries(app: &AppMetrics) -> impl Iterator<Item = TaskEntry> + '_ {
    app.processes.iter().map(|handle| {
        let report = handle.brief();
        let period_ns = app
            .manifest
            .process(report.name.as_str())
            .and_then(|spec| spec.period)
            .map(|p| p.as_nanos() as u64);
        entry(app, report, period_ns)
    })
}

fn entry(app: &AppMetrics, r: ProcessReport, period_ns: Option<u64>) -> TaskEntry {
    let calls = r.ticks + r.messages_in;
    TaskEntry {
        app: app.app.clone(),
        process: r.name,
        class: r.class,
        state: r.state,
        replica: r.standby,
        period_ns,
        ticks: r.ticks,
        messages_in: r.messages_in,
        deadline_misses: r.deadline_misses,
        faults: r.faults,
        restarts: r.restarts,
        fuel_per_call: (calls > 0).then(|| r.fuel_used as f64 / calls as f64),
        memory_bytes: r.memory_bytes,
        cycle: stats(&r.exec),
        jitter: stats(&r.jitter),
    }
}

fn stats(p: &Percentiles) -> TimeStats {
    TimeStats {
        last_us: p.last_us,
        p50_us: p.p50_us,
        mean_us: p.mean_us,
        min_us: p.min_us,
        max_us: p.max_us,
        p99_us: p.p99_us,
        samples: p.samples,
    }
}
