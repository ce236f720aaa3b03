//! Writing the results: `BENCHMARKS.md` for people and `benchmarks.json`
//! for machines, from the same list of figures.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::stats::{Figure, Verdict, count};

/// Where and how the run happened.
#[derive(Debug, Clone, Serialize)]
pub struct Host {
    pub generated_utc: String,
    pub kernel: String,
    pub cpu: String,
    pub cpus: usize,
    pub weft_version: String,
}

impl Host {
    pub fn probe() -> Host {
        let sh = |cmd: &str, args: &[&str]| {
            Command::new(cmd)
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_else(|| "unknown".into())
        };
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|s| s.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        Host {
            generated_utc: sh("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
            kernel: sh("uname", &["-srm"]),
            cpu,
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            weft_version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

#[derive(Serialize)]
struct Json<'a> {
    mode: &'a str,
    host: &'a Host,
    met: usize,
    not_met: usize,
    figures: &'a [Figure],
}

fn verdict_word(f: &Figure) -> String {
    let word = match f.verdict {
        Verdict::Met => "**met**",
        Verdict::NotMet => "**not met**",
        Verdict::NoGoal => "no goal",
        Verdict::Skipped => "skipped",
    };
    if f.borderline() {
        format!("{word} (borderline: within 5 % of the goal)")
    } else {
        word.to_string()
    }
}

fn judged(f: &Figure) -> String {
    use crate::stats::Goal::*;
    match (&f.goal, f.judged) {
        (Some(ValueAtMost { .. } | ValueAtLeast { .. }), Some(v)) => f.unit.show(v),
        (Some(SpeedupAtLeast { .. }), Some(v)) => format!("{v:.1}× faster"),
        (Some(RatioAtMost { .. }), Some(v)) => format!("{v:.2}×"),
        _ => "—".into(),
    }
}

fn pair(f: &Figure, median: f64, p99: f64) -> String {
    if median.is_nan() {
        "—".into()
    } else {
        format!("{} / {}", f.unit.show(median), f.unit.show(p99))
    }
}

/// A ratio with enough digits to be meaningful when it is far below 1.
fn ratio(r: f64) -> String {
    if r.is_nan() {
        "—".into()
    } else if r < 0.1 {
        format!("{r:.4}×")
    } else {
        format!("{r:.2}×")
    }
}

fn ratios(f: &Figure) -> String {
    if f.ratio_median.is_nan() {
        "—".into()
    } else {
        format!("{} / {}", ratio(f.ratio_median), ratio(f.ratio_p99))
    }
}

pub fn markdown(figures: &[Figure], host: &Host, mode: &str) -> String {
    let mut s = String::new();
    header(&mut s, figures, host, mode);
    summary(&mut s, figures);
    let _ = writeln!(s, "\n## Details\n");
    for f in figures {
        details(&mut s, f);
    }
    s
}

/// The title, where and how the run happened, and the tally of verdicts.
fn header(s: &mut String, figures: &[Figure], host: &Host, mode: &str) {
    let met = count(figures, Verdict::Met);
    let not_met = count(figures, Verdict::NotMet);
    let _ = writeln!(s, "# weft benchmarks\n");
    let _ = writeln!(
        s,
        "Written by `weft bench{}` on {} ({}, {} CPUs, {}), weft {}.\n",
        if mode == "quick" { " --quick" } else { "" },
        host.generated_utc,
        host.kernel,
        host.cpus,
        host.cpu,
        host.weft_version
    );
    let _ = writeln!(
        s,
        "Every figure compares weft with a baseline measured in the same run, as a median and a p99, and gives the \
         ratios (weft / baseline). The absolute numbers are what this machine did during this run — a small, shared VM — \
         and are not promises; the goals are stated on ratios (or, for memory, on bytes per process), and each figure says \
         whether its goal is met. Machine-readable results: `benchmarks.json`.\n"
    );
    let borderline = figures.iter().filter(|f| f.borderline()).count();
    let _ = writeln!(
        s,
        "**{met} goals met, {not_met} not met** ({mode} run; {borderline} of the verdicts are within 5 % of their goal \
         and can flip between runs on a shared machine).\n"
    );
}

/// One table row per figure.
fn summary(s: &mut String, figures: &[Figure]) {
    let _ = writeln!(s, "## Summary\n");
    let _ = writeln!(
        s,
        "| figure | weft median / p99 | baseline median / p99 | ratio median / p99 | goal | judged | verdict |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for f in figures {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            f.title,
            pair(f, f.weft.median, f.weft.p99),
            pair(f, f.baseline.median, f.baseline.p99),
            ratios(f),
            f.goal_text,
            judged(f),
            verdict_word(f)
        );
    }
}

/// One figure's section: both measurements, the ratios, the goal, the notes.
fn details(s: &mut String, f: &Figure) {
    let _ = writeln!(s, "### {} (`{}`)\n", f.title, f.id);
    for (who, m) in [("weft", &f.weft), ("baseline", &f.baseline)] {
        if m.samples == 0 && m.median.is_nan() {
            continue;
        }
        let _ = writeln!(
            s,
            "- {who}: {} — median {}, p99 {}, max {}, {} samples",
            m.label,
            f.unit.show(m.median),
            f.unit.show(m.p99),
            f.unit.show(m.max),
            m.samples
        );
    }
    if !f.ratio_median.is_nan() {
        let _ = writeln!(
            s,
            "- ratio weft / baseline: median {}, p99 {}",
            ratio(f.ratio_median),
            ratio(f.ratio_p99)
        );
    }
    let _ = writeln!(s, "- goal: {} — {}", f.goal_text, f.verdict_text());
    for n in &f.notes {
        let _ = writeln!(s, "- {n}");
    }
    let _ = writeln!(s);
}

pub fn write(dir: &Path, figures: &[Figure], host: &Host, mode: &str) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let md = dir.join("BENCHMARKS.md");
    std::fs::write(&md, markdown(figures, host, mode))
        .with_context(|| format!("cannot write {}", md.display()))?;
    let json = Json {
        mode,
        host,
        met: count(figures, Verdict::Met),
        not_met: count(figures, Verdict::NotMet),
        figures,
    };
    let path = dir.join("benchmarks.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("[bench] wrote {} and {}", md.display(), path.display());
    Ok(())
}
