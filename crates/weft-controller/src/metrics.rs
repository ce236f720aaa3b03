//! What the controller's `/metrics` shows.
//!
//! Two kinds of figures. What happens (reconciliations, plan events,
//! syncs) is counted as it happens, in `prometheus-client` metrics kept in
//! [`ControllerMetrics`]. What is (nodes, apps, placed and pending units)
//! is read from the state at scrape time by [`StateView`], under the state
//! lock for as long as a copy of a few numbers takes, like `weft ps`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Weak;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use weft_metrics::{Collector, DescriptorEncoder, Registry, gauge};

use crate::shared::Shared;

type Labels = [(&'static str, &'static str); 1];

/// The controller's counters and histograms.
pub(crate) struct ControllerMetrics {
    /// One reconciliation: plan, persist, send.
    pub reconcile_seconds: Histogram,
    /// Plan events by kind.
    pub events: Family<Labels, Counter>,
    /// Syncs sent to nodes, by result.
    pub syncs: Family<Labels, Counter>,
    /// Node statuses taken in, and those that followed a gap.
    pub statuses: Counter,
    pub status_gaps: Counter,
}

impl Default for ControllerMetrics {
    fn default() -> ControllerMetrics {
        ControllerMetrics {
            // 100 µs to ~6.5 s.
            reconcile_seconds: Histogram::new(exponential_buckets(1e-4, 2.0, 17)),
            events: Family::default(),
            syncs: Family::default(),
            statuses: Counter::default(),
            status_gaps: Counter::default(),
        }
    }
}

impl ControllerMetrics {
    pub fn event(&self, kind: &'static str) {
        self.events.get_or_create(&[("event", kind)]).inc();
    }

    pub fn sync(&self, result: &'static str) {
        self.syncs.get_or_create(&[("result", result)]).inc();
    }

    /// A registry of these metrics and of the state `shared` holds.
    pub fn registry(&self, shared: Weak<Shared>) -> Registry {
        let mut r = weft_metrics::registry();
        r.register(
            "controller_reconcile_seconds",
            "How long one reconciliation took (plan, persist, send).",
            self.reconcile_seconds.clone(),
        );
        r.register(
            "controller_events",
            "Plan events by kind (placed, moved, took_over, move_finished, ...).",
            self.events.clone(),
        );
        r.register(
            "controller_syncs",
            "Desired states sent to nodes, by result (ok, error).",
            self.syncs.clone(),
        );
        r.register(
            "controller_statuses",
            "Node statuses taken in.",
            self.statuses.clone(),
        );
        r.register(
            "controller_status_gaps",
            "Node statuses that followed a missed one (the view waits for a full status).",
            self.status_gaps.clone(),
        );
        r.register_collector(Box::new(StateView(shared)));
        r
    }
}

/// Reads the controller's state at scrape time.
struct StateView(Weak<Shared>);

impl fmt::Debug for StateView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StateView")
    }
}

/// The figures copied out of the state.
struct Figures {
    nodes: Vec<(String, bool, bool)>,
    apps: usize,
    placed: usize,
    moves: usize,
    handovers: usize,
    pending: BTreeMap<(String, String), usize>,
}

impl StateView {
    fn figures(&self) -> Option<Figures> {
        let shared = self.0.upgrade()?;
        let state = shared.state();
        let nodes = state
            .observed
            .nodes
            .iter()
            .map(|(n, seen)| {
                let drained = state.spec.drained.contains(n);
                (n.to_string(), seen.alive, drained)
            })
            .collect();
        let mut pending = BTreeMap::new();
        for (app, units) in &state.pending {
            for reason in units.values() {
                *pending
                    .entry((app.to_string(), reason.clone()))
                    .or_default() += 1;
            }
        }
        Some(Figures {
            nodes,
            apps: state.spec.apps.len(),
            placed: state.current.placed.values().map(|p| p.len()).sum(),
            moves: state.current.moves.len(),
            handovers: state.current.handovers.len(),
            pending,
        })
    }
}

impl Collector for StateView {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let Some(f) = self.figures() else {
            return Ok(());
        };
        let node = |n: &String| [("node", n.clone())];
        let bit = |b: bool| f64::from(u8::from(b));
        gauge(
            &mut encoder,
            "controller_node_alive",
            "1 while the node's liveliness token is seen.",
            f.nodes.iter().map(|(n, alive, _)| (node(n), bit(*alive))),
        )?;
        gauge(
            &mut encoder,
            "controller_node_drained",
            "1 for a drained node (weft drain; weft undrain ends it).",
            f.nodes
                .iter()
                .map(|(n, _, drained)| (node(n), bit(*drained))),
        )?;
        let none: [(&str, &str); 0] = [];
        for (name, help, value) in [
            ("controller_apps", "Apps deployed.", f.apps),
            (
                "controller_units_placed",
                "Processes and replicas placed on a node.",
                f.placed,
            ),
            (
                "controller_moves_in_flight",
                "Live moves begun and not yet finished or abandoned.",
                f.moves,
            ),
            (
                "controller_handovers_in_flight",
                "Handovers (stop with a final snapshot) not yet done.",
                f.handovers,
            ),
        ] {
            gauge(&mut encoder, name, help, [(none, value as f64)])?;
        }
        gauge(
            &mut encoder,
            "controller_units_pending",
            "Processes and replicas waiting for a node, by app and reason.",
            f.pending.iter().map(|((app, reason), n)| {
                (
                    [("app", app.clone()), ("reason", reason.clone())],
                    *n as f64,
                )
            }),
        )
    }
}
