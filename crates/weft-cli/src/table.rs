//! The human-readable process table of `weft run`.

use weft_runtime::AppReport;

pub fn render(report: &AppReport) -> String {
    let mut out = format!(
        "app {}  up {:.1}s  rt class {:?}\n{:<14} {:<3} {:<8} {:>8} {:>7} {:>7} {:>6} {:>8} {:>12} {:>9} {:>10}  {}\n",
        report.app,
        report.uptime_s,
        report.rt_class,
        "PROCESS",
        "CLS",
        "STATE",
        "TICKS",
        "MSG_IN",
        "MSG_OUT",
        "MISS",
        "FAULTS",
        "FUEL",
        "MEM_KiB",
        "JIT_P99us",
        "OUTPUT_HASH"
    );
    for p in &report.processes {
        out += &format!(
            "{:<14} {:<3} {:<8} {:>8} {:>7} {:>7} {:>6} {:>8} {:>12} {:>9} {:>10.1}  {}\n",
            p.name,
            p.class,
            p.state,
            p.ticks,
            p.messages_in,
            p.messages_out,
            p.deadline_misses,
            p.faults,
            p.fuel_used,
            p.memory_bytes / 1024,
            p.jitter.p99_us,
            &p.output_hash[..16],
        );
        if let Some(reason) = &p.reason {
            out += &format!("    └ {reason}\n");
        }
    }
    out
}
