//! The web dashboard, served by the controller beside `/metrics`.
//!
//! Plain server-rendered HTML: `/` is the whole page, and the page's
//! script swaps in fresh fragments (`/fragment/nodes`, `/processes`,
//! `/events`) every second. Two live charts: each rt process's latest
//! release jitter (the script asks `/api/jitter`, which reads the nodes'
//! task monitors), and the values of a chosen output port (`/api/port`,
//! fed by a subscription the controller makes while someone watches).
//! The migrate and drain actions post to `/api/migrate` and `/api/drain`,
//! which answer through the same request handler as the CLI's, so they are
//! checked and refused the same way.
//!
//! Everything it serves is in the binary: the HTML is written here, the
//! script and style are `assets/`, and the charts are uPlot (MIT, vendored
//! in `assets/uplot/`), so nothing needs the internet to build or run.

mod html;
mod taps;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use weft_fabric::proto::{ControlRequest, ControlResponse};
use weft_types::{AppName, NodeName, PortName, ProcessName, ProcessRef};

use crate::api;
use crate::events::Query as EventQuery;
use crate::shared::SharedRef;
use crate::views;

pub(crate) use taps::PortTaps;

/// How long the nodes have to answer for their task monitors.
const MONITOR_TIMEOUT: Duration = Duration::from_millis(800);
/// Events the timeline shows.
const TIMELINE: usize = 40;

/// The dashboard's routes, to serve beside `/metrics`.
pub(crate) fn router(shared: SharedRef) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/fragment/nodes", get(nodes_fragment))
        .route("/fragment/processes", get(processes_fragment))
        .route("/fragment/events", get(events_fragment))
        .route("/api/jitter", get(jitter))
        .route("/api/port", get(port))
        .route("/api/migrate", post(migrate))
        .route("/api/drain", post(drain))
        .route("/assets/dashboard.js", get(|| asset(JS, "text/javascript")))
        .route("/assets/dashboard.css", get(|| asset(CSS, "text/css")))
        .route(
            "/assets/uplot.js",
            get(|| asset(UPLOT_JS, "text/javascript")),
        )
        .route("/assets/uplot.css", get(|| asset(UPLOT_CSS, "text/css")))
        .with_state(shared)
}

const JS: &str = include_str!("../assets/dashboard.js");
const CSS: &str = include_str!("../assets/dashboard.css");
const UPLOT_JS: &str = include_str!("../assets/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../assets/uplot/uPlot.min.css");

async fn asset(body: &'static str, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// What the page shows, read under the state lock like `weft ps`.
struct Seen {
    nodes: Vec<weft_fabric::proto::NodeEntry>,
    processes: Vec<weft_fabric::proto::PsEntry>,
    ports: Vec<PortRef>,
}

fn seen(shared: &SharedRef) -> Seen {
    let state = shared.state();
    let ports = state
        .spec
        .apps
        .values()
        .flat_map(|a| {
            a.manifest.processes.iter().flat_map(move |p| {
                p.outputs.iter().map(move |port| PortRef {
                    app: a.manifest.name.clone(),
                    process: p.name.clone(),
                    port: port.clone(),
                })
            })
        })
        .collect();
    Seen {
        nodes: views::nodes(&state),
        processes: views::ps(&state),
        ports,
    }
}

fn timeline(shared: &SharedRef) -> Vec<weft_fabric::proto::EventEntry> {
    let answer = shared.events.read(&EventQuery::default());
    let start = answer.events.len().saturating_sub(TIMELINE);
    answer.events[start..].iter().rev().cloned().collect()
}

async fn page(State(shared): State<SharedRef>) -> Html<String> {
    let seen = seen(&shared);
    Html(html::page(
        &seen.nodes,
        &seen.processes,
        &timeline(&shared),
        &seen.ports,
    ))
}

async fn nodes_fragment(State(shared): State<SharedRef>) -> Html<String> {
    let nodes = views::nodes(&shared.state());
    Html(html::nodes(&nodes))
}

async fn processes_fragment(State(shared): State<SharedRef>) -> Html<String> {
    let processes = views::ps(&shared.state());
    Html(html::processes(&processes))
}

async fn events_fragment(State(shared): State<SharedRef>) -> Html<String> {
    Html(html::events(&timeline(&shared)))
}

/// One output port of one process.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) struct PortRef {
    pub app: AppName,
    pub process: ProcessName,
    pub port: PortName,
}

impl std::fmt::Display for PortRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}.{}", self.app, self.process, self.port)
    }
}

/// Each rt process's latest release jitter, in µs, by `node app/process`.
async fn jitter(State(shared): State<SharedRef>) -> Json<BTreeMap<String, f64>> {
    let monitors = weft_fabric::rpc::node_monitors(&shared.session, &shared.keys, MONITOR_TIMEOUT)
        .await
        .unwrap_or_default();
    let mut out = BTreeMap::new();
    for monitor in monitors {
        for t in monitor.processes.iter().filter(|t| !t.replica) {
            if t.class == weft_types::Class::Rt && t.jitter.samples > 0 {
                out.insert(format!("{}/{}", t.app, t.process), t.jitter.last_us);
            }
        }
    }
    Json(out)
}

#[derive(Deserialize)]
struct PortQuery {
    app: AppName,
    process: ProcessName,
    port: PortName,
    #[serde(default)]
    after: Option<u64>,
}

/// The values of a port sent after tag `after`, each payload read as
/// little-endian `f64`s.
async fn port(State(shared): State<SharedRef>, Query(q): Query<PortQuery>) -> Response {
    let port = PortRef {
        app: q.app,
        process: q.process,
        port: q.port,
    };
    match shared.taps.values(&shared, &port, q.after).await {
        Ok(values) => Json(values).into_response(),
        Err(e) => (
            axum::http::StatusCode::BAD_GATEWAY,
            format!("cannot watch {port}: {e:#}"),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct MigrateForm {
    /// `APP/PROCESS`.
    process: String,
    to: NodeName,
}

#[derive(Deserialize)]
struct DrainForm {
    node: NodeName,
    #[serde(default)]
    undrain: bool,
}

/// What an action did, for the page's status line.
#[derive(Serialize)]
struct Outcome {
    ok: bool,
    message: String,
}

async fn migrate(State(shared): State<SharedRef>, Form(f): Form<MigrateForm>) -> Json<Outcome> {
    let who: ProcessRef = match f.process.parse() {
        Ok(who) => who,
        Err(e) => {
            return Json(Outcome {
                ok: false,
                message: format!("{e}"),
            });
        }
    };
    let request = ControlRequest::Migrate {
        app: who.app,
        process: who.process,
        to: f.to,
    };
    Json(outcome(api::handle(&shared, request).await))
}

async fn drain(State(shared): State<SharedRef>, Form(f): Form<DrainForm>) -> Json<Outcome> {
    let request = match f.undrain {
        true => ControlRequest::Undrain { node: f.node },
        false => ControlRequest::Drain { node: f.node },
    };
    Json(outcome(api::handle(&shared, request).await))
}

fn outcome(answer: ControlResponse) -> Outcome {
    let (ok, message) = match answer {
        ControlResponse::Migrating {
            app,
            process,
            from,
            to,
        } => (
            true,
            format!("{app}/{process} moves live from {from} to {to}"),
        ),
        ControlResponse::Drained { node, moved } => (
            true,
            format!("{node} drained: {} processes move off it", moved.len()),
        ),
        ControlResponse::Undrained { node } => (true, format!("{node} takes processes again")),
        ControlResponse::NotFound { what } => (false, format!("no such {what}")),
        ControlResponse::Error { message } => (false, message),
        other => (false, format!("unexpected answer: {}", other.kind())),
    };
    Outcome { ok, message }
}
