//! `weft top`: a live task monitor of the cluster in the terminal.
//!
//! Every refresh it asks the controller for the nodes and every node for
//! its task monitor (`node/<name>/monitor`), and shows one row per process:
//! cycle time (how long its calls take) last/mean/min/max, release jitter
//! min/max/p99, deadline misses, fuel per call. The view redraws in place
//! and sorts by any column (←/→ choose it, `r` reverses, `q` quits).
//! `--once` prints the same table once, for scripts.
//!
//! The durations are since each process started (its node keeps them in
//! log-linear histograms, so p99 is within 1% of the exact value).
//!
//! The rows, their order and their text are plain functions of the
//! monitors ([`rows`], [`sort`], [`Column::cell`]); the terminal part only
//! draws them.

use std::cmp::Ordering;
use std::time::Duration;

use anyhow::{Context, Result};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Cell, Paragraph, Row as TableRow, Table};
use weft_client::Client;
use weft_fabric::proto::{NodeEntry, NodeMonitor, TaskEntry};
use weft_types::NodeName;

use crate::cluster::ClientArgs;
use crate::out::{out, outln};

/// How long the nodes have to answer for their monitors.
const MONITOR_TIMEOUT: Duration = Duration::from_secs(2);

pub struct TopArgs {
    pub once: bool,
    pub sort: Column,
    pub interval: Duration,
}

/// One process on one node.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub node: NodeName,
    pub task: TaskEntry,
}

/// The columns, in order; each can be sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Column {
    Node,
    Process,
    Class,
    State,
    Period,
    Cycle,
    CycleMean,
    CycleMin,
    CycleMax,
    JitterMin,
    JitterMax,
    JitterP99,
    Misses,
    Fuel,
    Ticks,
}

impl Column {
    pub const ALL: [Column; 15] = [
        Column::Node,
        Column::Process,
        Column::Class,
        Column::State,
        Column::Period,
        Column::Cycle,
        Column::CycleMean,
        Column::CycleMin,
        Column::CycleMax,
        Column::JitterMin,
        Column::JitterMax,
        Column::JitterP99,
        Column::Misses,
        Column::Fuel,
        Column::Ticks,
    ];

    fn title(self) -> &'static str {
        match self {
            Column::Node => "NODE",
            Column::Process => "APP/PROCESS",
            Column::Class => "CLASS",
            Column::State => "STATE",
            Column::Period => "PERIOD",
            Column::Cycle => "CYCLE",
            Column::CycleMean => "CYC_AVG",
            Column::CycleMin => "CYC_MIN",
            Column::CycleMax => "CYC_MAX",
            Column::JitterMin => "JIT_MIN",
            Column::JitterMax => "JIT_MAX",
            Column::JitterP99 => "JIT_P99",
            Column::Misses => "MISSES",
            Column::Fuel => "FUEL/CALL",
            Column::Ticks => "TICKS",
        }
    }

    fn width(self) -> u16 {
        match self {
            Column::Node => 10,
            Column::Process => 32,
            Column::State => 8,
            Column::Class => 6,
            Column::Fuel => 10,
            _ => 8,
        }
    }

    /// A number to sort by, for the numeric columns.
    fn number(self, r: &Row) -> Option<f64> {
        let t = &r.task;
        Some(match self {
            Column::Period => t.period_ns? as f64,
            Column::Cycle => t.cycle.last_us,
            Column::CycleMean => t.cycle.mean_us,
            Column::CycleMin => t.cycle.min_us,
            Column::CycleMax => t.cycle.max_us,
            Column::JitterMin => t.jitter.min_us,
            Column::JitterMax => t.jitter.max_us,
            Column::JitterP99 => t.jitter.p99_us,
            Column::Misses => t.deadline_misses as f64,
            Column::Fuel => t.fuel_per_call?,
            Column::Ticks => t.ticks as f64,
            Column::Node | Column::Process | Column::Class | Column::State => return None,
        })
    }

    /// The cell's text: durations in µs, or ms from 10 ms up.
    pub fn cell(self, r: &Row) -> String {
        let t = &r.task;
        let timed = |samples: u64, us: f64| match samples {
            0 => "-".to_string(),
            _ => duration(us),
        };
        match self {
            Column::Node => r.node.to_string(),
            Column::Process => {
                let replica = if t.replica { " (replica)" } else { "" };
                format!("{}/{}{replica}", t.app, t.process)
            }
            Column::Class => t.class.to_string(),
            Column::State => t.state.to_string(),
            Column::Period => t
                .period_ns
                .map_or("-".into(), |ns| duration(ns as f64 / 1e3)),
            Column::Cycle => timed(t.cycle.samples, t.cycle.last_us),
            Column::CycleMean => timed(t.cycle.samples, t.cycle.mean_us),
            Column::CycleMin => timed(t.cycle.samples, t.cycle.min_us),
            Column::CycleMax => timed(t.cycle.samples, t.cycle.max_us),
            Column::JitterMin => timed(t.jitter.samples, t.jitter.min_us),
            Column::JitterMax => timed(t.jitter.samples, t.jitter.max_us),
            Column::JitterP99 => timed(t.jitter.samples, t.jitter.p99_us),
            Column::Misses => t.deadline_misses.to_string(),
            Column::Fuel => t.fuel_per_call.map_or("-".into(), |f| format!("{f:.0}")),
            Column::Ticks => t.ticks.to_string(),
        }
    }

    /// A numeric column: right-aligned, and sorted largest first (what a
    /// monitor looks for); text sorts A to Z.
    fn numeric(self) -> bool {
        !matches!(
            self,
            Column::Node | Column::Process | Column::Class | Column::State
        )
    }
}

/// At most 6 characters: µs below 10 ms, then ms, then s.
fn duration(us: f64) -> String {
    match us {
        _ if us < 10_000.0 => format!("{us:.0}µs"),
        _ if us < 100_000.0 => format!("{:.1}ms", us / 1e3),
        _ if us < 10_000_000.0 => format!("{:.0}ms", us / 1e3),
        _ => format!("{:.1}s", us / 1e6),
    }
}

/// Every process of every monitor, one row each.
pub fn rows(monitors: &[NodeMonitor]) -> Vec<Row> {
    monitors
        .iter()
        .flat_map(|m| {
            m.processes.iter().map(|t| Row {
                node: m.node.clone(),
                task: t.clone(),
            })
        })
        .collect()
}

/// Sorts by `column` (ties by node, then app/process, so the order is
/// stable from one refresh to the next), reversed if `reverse`.
pub fn sort(rows: &mut [Row], column: Column, reverse: bool) {
    let key = |r: &Row| {
        (
            r.node.clone(),
            r.task.app.clone(),
            r.task.process.clone(),
            r.task.replica,
        )
    };
    let descending = column.numeric() != reverse;
    rows.sort_by(|a, b| {
        let by_column = match (column.number(a), column.number(b)) {
            (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
            (Some(_), None) => Ordering::Greater,
            (None, Some(_)) => Ordering::Less,
            (None, None) => column.cell(a).cmp(&column.cell(b)),
        };
        let by_column = if descending {
            by_column.reverse()
        } else {
            by_column
        };
        by_column.then_with(|| key(a).cmp(&key(b)))
    });
}

/// The nodes line: each node with its state, processes and rt class.
fn nodes_line(nodes: &[NodeEntry]) -> String {
    let each: Vec<String> = nodes
        .iter()
        .map(|n| {
            let rt = n.rt_class.map_or("?".to_string(), |c| c.to_string());
            format!(
                "{} {} ({} processes, rt {rt})",
                n.name, n.state, n.processes
            )
        })
        .collect();
    format!("nodes: {}", each.join("  "))
}

/// The table as plain text, for `--once`.
pub fn text_table(rows: &[Row]) -> String {
    let mut out = String::new();
    let line = |cells: Vec<String>| {
        let mut text = String::new();
        for (column, cell) in Column::ALL.iter().zip(cells) {
            let width = column.width() as usize;
            match column.numeric() {
                true => text += &format!("{cell:>width$} "),
                false => text += &format!("{cell:<width$} "),
            }
        }
        text.trim_end().to_string() + "\n"
    };
    out += &line(Column::ALL.iter().map(|c| c.title().to_string()).collect());
    for r in rows {
        out += &line(Column::ALL.iter().map(|c| c.cell(r)).collect());
    }
    out
}

/// What one refresh found.
struct Snapshot {
    nodes: Vec<NodeEntry>,
    rows: Vec<Row>,
}

async fn snapshot(c: &Client) -> Result<Snapshot> {
    let nodes = c.nodes().await?;
    let monitors = c.monitors(MONITOR_TIMEOUT).await?;
    Ok(Snapshot {
        nodes,
        rows: rows(&monitors),
    })
}

pub async fn top(client: ClientArgs, args: TopArgs) -> Result<()> {
    let c = client.client().await?;
    let result = match args.once {
        true => once(&c, &client, args.sort).await,
        false => live(&c, args).await,
    };
    c.close().await;
    result
}

async fn once(c: &Client, client: &ClientArgs, column: Column) -> Result<()> {
    if client.json {
        let monitors = c.monitors(MONITOR_TIMEOUT).await?;
        outln!("{}", serde_json::to_string_pretty(&monitors)?);
        return Ok(());
    }
    let mut found = snapshot(c).await?;
    sort(&mut found.rows, column, false);
    outln!("{}", nodes_line(&found.nodes));
    out!("{}", text_table(&found.rows));
    Ok(())
}

/// What the live view shows and how it is sorted.
struct View {
    column: Column,
    reverse: bool,
    found: Option<Snapshot>,
    error: Option<String>,
}

async fn live(c: &Client, args: TopArgs) -> Result<()> {
    let mut terminal = ratatui::try_init().context("cannot set up the terminal")?;
    let mut view = View {
        column: args.sort,
        reverse: false,
        found: None,
        error: None,
    };
    let result = async {
        loop {
            match snapshot(c).await {
                Ok(found) => (view.found, view.error) = (Some(found), None),
                Err(e) => view.error = Some(format!("{e:#}")),
            }
            terminal.draw(|frame| draw(frame, &mut view))?;
            if !keys(&mut view, args.interval).await? {
                return Ok(());
            }
        }
    }
    .await;
    ratatui::restore();
    result
}

/// Handles keys until the next refresh is due; false to quit.
async fn keys(view: &mut View, interval: Duration) -> Result<bool> {
    let until = std::time::Instant::now() + interval;
    loop {
        let left = until.saturating_duration_since(std::time::Instant::now());
        let key = tokio::task::block_in_place(|| -> Result<Option<Event>> {
            if event::poll(left)? {
                return Ok(Some(event::read()?));
            }
            Ok(None)
        })?;
        let Some(Event::Key(key)) = key else {
            return Ok(true);
        };
        if key.kind != KeyEventKind::Press {
            continue;
        }
        let at = Column::ALL.iter().position(|c| *c == view.column).unwrap();
        let n = Column::ALL.len();
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => return Ok(false),
            KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                return Ok(false);
            }
            KeyCode::Right | KeyCode::Char('>') => view.column = Column::ALL[(at + 1) % n],
            KeyCode::Left | KeyCode::Char('<') => view.column = Column::ALL[(at + n - 1) % n],
            KeyCode::Char('r') => view.reverse = !view.reverse,
            _ => continue,
        }
        return Ok(true);
    }
}

fn draw(frame: &mut ratatui::Frame, view: &mut View) {
    let [top, table, bottom] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let (nodes, rows) = match &mut view.found {
        Some(found) => {
            sort(&mut found.rows, view.column, view.reverse);
            (nodes_line(&found.nodes), found.rows.as_slice())
        }
        None => ("connecting…".to_string(), &[][..]),
    };
    frame.render_widget(Paragraph::new(nodes), top);
    let arrow = if view.column.numeric() != view.reverse {
        "▼"
    } else {
        "▲"
    };
    let header = TableRow::new(Column::ALL.iter().map(|c| {
        let title = match *c == view.column {
            true => format!("{}{arrow}", c.title()),
            false => c.title().to_string(),
        };
        Cell::from(title)
    }))
    .style(Style::new().add_modifier(Modifier::REVERSED));
    let body = rows
        .iter()
        .map(|r| TableRow::new(Column::ALL.iter().map(|c| Cell::from(c.cell(r)))));
    let widths = Column::ALL.map(|c| Constraint::Length(c.width()));
    frame.render_widget(Table::new(body, widths).header(header), table);
    let status = match &view.error {
        Some(e) => format!("refresh failed: {e}"),
        None => format!(
            "{} processes · sorted by {} · ←/→ sort column · r reverse · q quit",
            rows.len(),
            view.column.title()
        ),
    };
    frame.render_widget(Line::from(status), bottom);
}

#[cfg(test)]
mod tests {
    use weft_fabric::proto::TimeStats;
    use weft_types::{Class, ProcessState};

    use super::*;

    fn task(process: &str, misses: u64, jitter_max: f64) -> TaskEntry {
        TaskEntry {
            app: "cell".parse().unwrap(),
            process: process.parse().unwrap(),
            class: Class::Rt,
            state: ProcessState::Running,
            replica: false,
            period_ns: Some(1_000_000),
            ticks: 10,
            messages_in: 0,
            deadline_misses: misses,
            faults: 0,
            restarts: 0,
            fuel_per_call: Some(1_500.0),
            memory_bytes: 65_536,
            cycle: TimeStats {
                last_us: 12.0,
                p50_us: 11.0,
                mean_us: 11.0,
                min_us: 9.0,
                max_us: 40.0,
                p99_us: 30.0,
                samples: 10,
            },
            jitter: TimeStats {
                max_us: jitter_max,
                samples: 10,
                ..TimeStats::default()
            },
        }
    }

    fn monitors() -> Vec<NodeMonitor> {
        let node = |name: &str, processes| NodeMonitor {
            node: name.parse().unwrap(),
            rt_class: weft_types::RtClass::Hard,
            processes,
        };
        vec![
            node("a", vec![task("pid", 0, 50.0), task("plant", 3, 20.0)]),
            node("b", vec![task("log", 1, 900.0)]),
        ]
    }

    fn order(rows: &[Row]) -> Vec<String> {
        rows.iter().map(|r| r.task.process.to_string()).collect()
    }

    #[test]
    fn rows_sort_by_any_column_numbers_largest_first() {
        let mut rows = rows(&monitors());
        for (column, reverse, expected) in [
            (Column::Node, false, ["pid", "plant", "log"]),
            (Column::Process, false, ["log", "pid", "plant"]),
            (Column::Misses, false, ["plant", "log", "pid"]),
            (Column::Misses, true, ["pid", "log", "plant"]),
            (Column::JitterMax, false, ["log", "pid", "plant"]),
            // Equal: by node, then name.
            (Column::Ticks, false, ["pid", "plant", "log"]),
        ] {
            sort(&mut rows, column, reverse);
            assert_eq!(order(&rows), expected, "{column:?} reverse={reverse}");
        }
    }

    #[test]
    fn cells_show_durations_in_their_unit_and_nothing_for_no_samples() {
        let mut row = Row {
            node: "a".parse().unwrap(),
            task: task("pid", 0, 12_345.0),
        };
        assert_eq!(Column::Period.cell(&row), "1000µs");
        row.task.period_ns = Some(1_000_000_000);
        assert_eq!(Column::Period.cell(&row), "1000ms");
        row.task.period_ns = Some(20_000_000_000);
        assert_eq!(Column::Period.cell(&row), "20.0s");
        assert_eq!(Column::JitterMax.cell(&row), "12.3ms");
        assert_eq!(Column::Cycle.cell(&row), "12µs");
        assert_eq!(Column::Fuel.cell(&row), "1500");
        row.task.cycle.samples = 0;
        row.task.replica = true;
        assert_eq!(Column::CycleMax.cell(&row), "-");
        assert_eq!(Column::Process.cell(&row), "cell/pid (replica)");
    }

    #[test]
    fn the_text_table_has_a_header_and_a_line_per_process() {
        let mut rows = rows(&monitors());
        sort(&mut rows, Column::Node, false);
        let text = text_table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("NODE"), "{}", lines[0]);
        assert!(lines[1].starts_with("a ") && lines[1].contains("cell/pid"));
        assert!(lines[3].starts_with("b ") && lines[3].contains("cell/log"));
    }
}
