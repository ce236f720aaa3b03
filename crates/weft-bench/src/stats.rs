//! Samples, summaries and figures: what one benchmark measured, against
//! which baseline, and whether its goal is met.
//!
//! A [`Figure`] always pairs a weft measurement with a baseline measured in
//! the same run, both as median and p99, and states the ratios. Its
//! [`Goal`] says which statistic is judged and how, so the verdict is
//! computed in one place and the report only prints it.

use hdrhistogram::Histogram;
use serde::Serialize;

/// A histogram for non-negative integer samples (nanoseconds or bytes).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 1 << 40, 3).expect("valid histogram bounds")
}

/// Records `value`, clamped into the histogram's range.
pub fn record(h: &mut Histogram<u64>, value: u64) {
    let _ = h.record(value.clamp(1, 1 << 40));
}

/// What the numbers of a figure are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Nanoseconds,
    Bytes,
    Processes,
    /// Ticks of a periodic process (counts that may well be zero).
    Ticks,
    /// CPU use in hundredths of a percent of one core (2,500 = 25 %).
    PercentOfCore,
    BytesPerSecond,
}

impl Unit {
    /// Human form of `value` in this unit.
    pub fn show(self, value: f64) -> String {
        match self {
            Unit::Nanoseconds if value >= 1e9 => format!("{:.2} s", value / 1e9),
            Unit::Nanoseconds if value >= 1e6 => format!("{:.2} ms", value / 1e6),
            Unit::Nanoseconds if value >= 1e3 => format!("{:.2} µs", value / 1e3),
            Unit::Nanoseconds => format!("{value:.0} ns"),
            Unit::Bytes if value.abs() >= 1024.0 * 1024.0 => {
                format!("{:.2} MiB", value / 1024.0 / 1024.0)
            }
            Unit::Bytes if value.abs() >= 1024.0 => format!("{:.1} KiB", value / 1024.0),
            Unit::Bytes => format!("{value:.0} B"),
            Unit::Processes => format!("{value:.0}"),
            Unit::Ticks => format!("{value:.0} ticks"),
            Unit::PercentOfCore => format!("{:.1} %", value / 100.0),
            Unit::BytesPerSecond => format!("{}/s", Unit::Bytes.show(value)),
        }
    }
}

/// Median and 99th percentile of one series of samples.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// What was measured, e.g. "weft Process::instantiate + weft_init".
    pub label: String,
    pub median: f64,
    pub p99: f64,
    pub max: f64,
    pub samples: u64,
}

impl Summary {
    pub fn of(label: impl Into<String>, h: &Histogram<u64>) -> Summary {
        Summary {
            label: label.into(),
            median: h.value_at_quantile(0.5) as f64,
            p99: h.value_at_quantile(0.99) as f64,
            max: h.max() as f64,
            samples: h.len(),
        }
    }

    /// A summary of exact values, with nearest-rank quantiles. For counts
    /// where zero matters: the histogram clamps samples to at least 1.
    pub fn of_values(label: impl Into<String>, values: &[u64]) -> Summary {
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        let rank = |q: f64| {
            let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            sorted[i - 1] as f64
        };
        if sorted.is_empty() {
            return Summary::from_values(label, f64::NAN, f64::NAN, f64::NAN, 0);
        }
        Summary::from_values(label, rank(0.5), rank(0.99), rank(1.0), sorted.len() as u64)
    }

    /// A summary from values computed elsewhere (e.g. an extrapolation).
    pub fn from_values(
        label: impl Into<String>,
        median: f64,
        p99: f64,
        max: f64,
        samples: u64,
    ) -> Summary {
        Summary {
            label: label.into(),
            median,
            p99,
            max,
            samples,
        }
    }
}

impl Summary {
    /// Rounds of one measurement combined: the median across rounds of
    /// each round's median and p99 (robust to a burst of load from another
    /// tenant hitting one round), the largest maximum, all samples counted.
    pub fn of_rounds<'a>(rounds: impl IntoIterator<Item = &'a Summary>) -> Summary {
        let rounds: Vec<&Summary> = rounds.into_iter().collect();
        let mid = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        Summary::from_values(
            rounds[0].label.clone(),
            mid(rounds.iter().map(|r| r.median).collect()),
            mid(rounds.iter().map(|r| r.p99).collect()),
            rounds.iter().map(|r| r.max).fold(0.0, f64::max),
            rounds.iter().map(|r| r.samples).sum(),
        )
    }
}

/// Which statistic a goal is judged on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stat {
    Median,
    P99,
}

/// What must hold for a figure's goal to be met.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Goal {
    /// `weft / baseline <= max` on `stat` (weft at most this much slower).
    RatioAtMost { stat: Stat, max: f64 },
    /// `baseline / weft >= min` on `stat` (weft at least this much faster).
    SpeedupAtLeast { stat: Stat, min: f64 },
    /// The weft value itself on `stat` is at most `max` (e.g. bytes).
    ValueAtMost { stat: Stat, max: f64 },
    /// The weft value itself on `stat` is at least `min` (e.g. processes).
    ValueAtLeast { stat: Stat, min: f64 },
}

/// The verdict of a figure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Met,
    NotMet,
    /// No goal is set for this figure; it is reported for context.
    NoGoal,
    /// Not measured in this run (the reason is in `notes`).
    Skipped,
}

/// One line of the report: weft against its baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub id: String,
    pub title: String,
    pub unit: Unit,
    pub weft: Summary,
    pub baseline: Summary,
    /// `weft / baseline` on medians and on p99s.
    pub ratio_median: f64,
    pub ratio_p99: f64,
    pub goal: Option<Goal>,
    /// Human form of the goal, e.g. "median ≤ 1.2× raw wasmtime".
    pub goal_text: String,
    pub verdict: Verdict,
    /// The number the verdict was judged on (a ratio, a speedup or a value).
    pub judged: Option<f64>,
    pub notes: Vec<String>,
}

/// How many of `figures` have `verdict`.
pub fn count(figures: &[Figure], verdict: Verdict) -> usize {
    figures.iter().filter(|f| f.verdict == verdict).count()
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::NAN }
}

impl Figure {
    pub fn new(
        id: &str,
        title: &str,
        unit: Unit,
        weft: Summary,
        baseline: Summary,
        goal: Option<Goal>,
        goal_text: &str,
    ) -> Figure {
        let ratio_median = ratio(weft.median, baseline.median);
        let ratio_p99 = ratio(weft.p99, baseline.p99);
        let pick = |stat: Stat, w: &Summary| match stat {
            Stat::Median => w.median,
            Stat::P99 => w.p99,
        };
        let judged = goal.as_ref().map(|g| match *g {
            Goal::RatioAtMost { stat, .. } => ratio(pick(stat, &weft), pick(stat, &baseline)),
            Goal::SpeedupAtLeast { stat, .. } => ratio(pick(stat, &baseline), pick(stat, &weft)),
            Goal::ValueAtMost { stat, .. } | Goal::ValueAtLeast { stat, .. } => pick(stat, &weft),
        });
        let verdict = match (&goal, judged) {
            (None, _) | (_, None) => Verdict::NoGoal,
            (Some(g), Some(v)) => {
                let ok = match *g {
                    Goal::RatioAtMost { max, .. } | Goal::ValueAtMost { max, .. } => v <= max,
                    Goal::SpeedupAtLeast { min, .. } | Goal::ValueAtLeast { min, .. } => v >= min,
                };
                if ok { Verdict::Met } else { Verdict::NotMet }
            }
        };
        Figure {
            id: id.into(),
            title: title.into(),
            unit,
            weft,
            baseline,
            ratio_median,
            ratio_p99,
            goal,
            goal_text: goal_text.into(),
            verdict,
            judged,
            notes: Vec::new(),
        }
    }

    /// A figure that could not be measured in this run, and why.
    pub fn skipped(id: &str, title: &str, unit: Unit, goal_text: &str, reason: String) -> Figure {
        let empty = |l: &str| Summary::from_values(l, f64::NAN, f64::NAN, f64::NAN, 0);
        Figure {
            id: id.into(),
            title: title.into(),
            unit,
            weft: empty("not measured"),
            baseline: empty("not measured"),
            ratio_median: f64::NAN,
            ratio_p99: f64::NAN,
            goal: None,
            goal_text: goal_text.into(),
            verdict: Verdict::Skipped,
            judged: None,
            notes: vec![reason],
        }
    }

    /// True when the judged number is within 5 % of the goal's threshold:
    /// on a shared VM such a verdict can flip from one run to the next.
    pub fn borderline(&self) -> bool {
        let threshold = match self.goal {
            Some(Goal::RatioAtMost { max, .. } | Goal::ValueAtMost { max, .. }) => max,
            Some(Goal::SpeedupAtLeast { min, .. } | Goal::ValueAtLeast { min, .. }) => min,
            None => return false,
        };
        self.judged
            .is_some_and(|v| (v / threshold - 1.0).abs() < 0.05)
    }

    pub fn note(mut self, note: impl Into<String>) -> Figure {
        self.notes.push(note.into());
        self
    }

    /// One line for progress output and the summary.
    pub fn verdict_text(&self) -> String {
        let judged = self.judged.map(|v| match self.goal {
            Some(Goal::ValueAtMost { .. } | Goal::ValueAtLeast { .. }) => self.unit.show(v),
            Some(Goal::SpeedupAtLeast { .. }) => format!("{v:.1}× faster"),
            _ => format!("{v:.2}×"),
        });
        match (&self.verdict, judged) {
            (Verdict::Met, Some(j)) => format!("met ({j}; goal {})", self.goal_text),
            (Verdict::NotMet, Some(j)) => format!("NOT MET ({j}; goal {})", self.goal_text),
            (Verdict::Skipped, _) => format!(
                "skipped: {}",
                self.notes.first().map(String::as_str).unwrap_or("")
            ),
            _ => format!("no goal (median ratio {:.2}×)", self.ratio_median),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(median: f64, p99: f64) -> Summary {
        Summary::from_values("x", median, p99, p99, 10)
    }

    #[test]
    fn verdicts_follow_the_goal() {
        let slow = Figure::new(
            "a",
            "a",
            Unit::Nanoseconds,
            s(13.0, 20.0),
            s(10.0, 10.0),
            Some(Goal::RatioAtMost {
                stat: Stat::Median,
                max: 1.2,
            }),
            "",
        );
        assert_eq!(slow.verdict, Verdict::NotMet);
        assert!((slow.judged.unwrap() - 1.3).abs() < 1e-9);
        let p99 = Figure::new(
            "b",
            "b",
            Unit::Nanoseconds,
            s(13.0, 11.0),
            s(10.0, 10.0),
            Some(Goal::RatioAtMost {
                stat: Stat::P99,
                max: 1.2,
            }),
            "",
        );
        assert_eq!(p99.verdict, Verdict::Met);
        let fast = Figure::new(
            "c",
            "c",
            Unit::Nanoseconds,
            s(1.0, 2.0),
            s(150.0, 150.0),
            Some(Goal::SpeedupAtLeast {
                stat: Stat::Median,
                min: 100.0,
            }),
            "",
        );
        assert_eq!(fast.verdict, Verdict::Met);
        let value = Figure::new(
            "d",
            "d",
            Unit::Bytes,
            s(1.0, 70_000.0),
            s(1.0, 1.0),
            Some(Goal::ValueAtMost {
                stat: Stat::P99,
                max: 65536.0,
            }),
            "",
        );
        assert_eq!(value.verdict, Verdict::NotMet);
        let none = Figure::new("e", "e", Unit::Bytes, s(1.0, 1.0), s(1.0, 1.0), None, "");
        assert_eq!(none.verdict, Verdict::NoGoal);
        let zero = Figure::new(
            "f",
            "f",
            Unit::Ticks,
            Summary::of_values("x", &[0, 0, 0]),
            s(3.0, 5.0),
            Some(Goal::ValueAtMost {
                stat: Stat::P99,
                max: 0.0,
            }),
            "",
        );
        assert_eq!(zero.verdict, Verdict::Met);
    }

    #[test]
    fn exact_summaries_keep_zeros_and_rank_quantiles() {
        let v = Summary::of_values("x", &[5, 0, 1, 3]);
        assert_eq!((v.median, v.p99, v.max, v.samples), (1.0, 5.0, 5.0, 4));
        assert_eq!(Summary::of_values("x", &[0]).p99, 0.0);
        assert!(Summary::of_values("x", &[]).median.is_nan());
    }
}
