//! The dashboard's HTML: the page and the fragments its script refreshes.
//! Every text that comes from outside (names, labels, fault messages) is
//! escaped here, once, by [`esc`].

use std::fmt::Write;

use weft_fabric::proto::{EventEntry, NodeEntry, PsEntry};
use weft_types::NodeState;

use super::PortRef;

/// Escapes text for HTML content and attribute values.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub(crate) fn page(
    nodes: &[NodeEntry],
    processes: &[PsEntry],
    events: &[EventEntry],
    ports: &[PortRef],
) -> String {
    let mut who = String::new();
    for p in processes.iter().filter(|p| !p.status.replica) {
        let name = esc(&format!("{}/{}", p.status.app, p.status.name));
        let _ = write!(who, r#"<option value="{name}">{name}</option>"#);
    }
    let mut to = String::new();
    for n in nodes.iter().filter(|n| n.state == NodeState::Alive) {
        let name = esc(n.name.as_str());
        let _ = write!(to, r#"<option value="{name}">{name}</option>"#);
    }
    let mut port_options = String::new();
    for p in ports {
        let text = esc(&p.to_string());
        let _ = write!(
            port_options,
            r#"<option value="{}|{}|{}">{text}</option>"#,
            esc(p.app.as_str()),
            esc(p.process.as_str()),
            esc(p.port.as_str())
        );
    }
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>weft</title>
<link rel="stylesheet" href="/assets/uplot.css">
<link rel="stylesheet" href="/assets/dashboard.css">
</head><body>
<header><h1>weft</h1><span id="status" role="status"></span></header>
<main>
<section><h2>Nodes</h2><div id="nodes">{nodes}</div></section>
<section><h2>Processes</h2><div id="processes">{processes}</div>
<form id="migrate">Migrate <select name="process">{who}</select> to <select name="to">{to}</select>
<button type="submit">Migrate</button></form></section>
<section class="charts">
<div><h2>Jitter of each rt process (latest release, µs)</h2><div id="jitter-chart"></div></div>
<div><h2>Port <select id="port">{port_options}</select></h2><div id="port-chart"></div></div>
</section>
<section><h2>Events</h2><div id="events">{events}</div></section>
</main>
<script src="/assets/uplot.js"></script>
<script src="/assets/dashboard.js"></script>
</body></html>
"#,
        nodes = self::nodes(nodes),
        processes = self::processes(processes),
        events = self::events(events),
    )
}

pub(crate) fn nodes(nodes: &[NodeEntry]) -> String {
    let mut out = String::from(
        "<table><thead><tr><th>node</th><th>state</th><th>labels</th><th>devices</th>\
         <th>rt</th><th>processes</th><th>free slots</th><th></th></tr></thead><tbody>",
    );
    for n in nodes {
        let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let rt = n.rt_class.map_or("?".to_string(), |c| c.to_string());
        let action = match n.state {
            NodeState::Draining => "undrain",
            _ => "drain",
        };
        let name = esc(n.name.as_str());
        let _ = write!(
            out,
            r#"<tr data-node="{name}" class="{state}"><td>{name}</td><td>{state}</td><td>{labels}</td><td>{devices}</td><td>{rt}</td><td>{processes}</td><td>{free}</td><td><button data-{action}="{name}">{action}</button></td></tr>"#,
            state = n.state,
            labels = esc(&labels.join(", ")),
            devices = esc(&n.device_list().join(", ")),
            processes = n.processes,
            free = n.free_slots,
        );
    }
    out + "</tbody></table>"
}

pub(crate) fn processes(processes: &[PsEntry]) -> String {
    let mut out = String::from(
        "<table><thead><tr><th>process</th><th>state</th><th>node</th><th>standby</th>\
         <th>chains</th><th>ticks</th><th>restarts</th><th>reason</th></tr></thead><tbody>",
    );
    for p in processes.iter().filter(|p| !p.status.replica) {
        let s = &p.status;
        let who = esc(&format!("{}/{}", s.app, s.name));
        let node = p.node.as_ref().map_or("-".into(), |n| esc(n.as_str()));
        let (standby, chains) = standby(p);
        let _ = write!(
            out,
            r#"<tr data-process="{who}" class="{state}"><td>{who}</td><td>{state}</td><td>{node}</td><td>{standby}</td><td>{chains}</td><td>{ticks}</td><td>{restarts}</td><td>{reason}</td></tr>"#,
            state = s.state,
            ticks = s.ticks,
            restarts = s.restarts,
            reason = esc(s.reason.as_deref().unwrap_or("")),
        );
    }
    out + "</tbody></table>"
}

/// The standby cell, and whether its chain equals its process's at the
/// same tag: `equal`, `differ` (a fault in determinism) or `-`.
fn standby(p: &PsEntry) -> (String, &'static str) {
    let Some(standby) = &p.standby else {
        return ("-".into(), "-");
    };
    let node = standby.node.as_ref().map_or("-", |n| n.as_str());
    let cell = esc(&format!("{node} ({})", standby.state));
    let chains = match (&p.status.chain_mark, &standby.chain_mark) {
        (Some(mine), Some(theirs)) if mine.tag_ns == theirs.tag_ns => {
            match mine.output_hash == theirs.output_hash {
                true => "equal",
                false => "differ",
            }
        }
        _ => "-",
    };
    (cell, chains)
}

pub(crate) fn events(events: &[EventEntry]) -> String {
    let mut out = String::from("<ol class=\"events\">");
    for e in events {
        let at = humantime::format_rfc3339_millis(e.at());
        let _ = write!(
            out,
            r#"<li data-kind="{kind}"><time>{at}</time> <b>{kind}</b> {message}</li>"#,
            kind = e.kind,
            message = esc(&e.message),
        );
    }
    out + "</ol>"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_text_is_escaped() {
        assert_eq!(
            esc(r#"<script>"x" & 'y'</script>"#),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
        let e = EventEntry::new(weft_types::EventKind::Fault, "trap: <b>boom</b>");
        let html = events(&[e]);
        assert!(html.contains("trap: &lt;b&gt;boom&lt;/b&gt;"), "{html}");
    }
}
