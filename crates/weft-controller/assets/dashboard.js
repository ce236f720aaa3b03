// The weft dashboard: refreshes the server-rendered fragments every second,
// draws two live charts with uPlot, and posts the migrate and drain actions.
"use strict";

const REFRESH_MS = 1000;
const POINTS = 300;

function say(text, ok) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.className = ok ? "" : "error";
}

async function refresh(id) {
  try {
    const answer = await fetch("/fragment/" + id);
    if (!answer.ok) throw new Error(answer.status + " " + answer.statusText);
    document.getElementById(id).innerHTML = await answer.text();
  } catch (e) {
    say("cannot refresh " + id + ": " + e.message, false);
  }
}

// A line chart of named series over time, keeping the newest POINTS.
class Chart {
  // `time`: the x values are Unix seconds (else plain numbers, as tags).
  constructor(element, title, time) {
    this.element = element;
    this.title = title;
    this.time = time;
    this.names = [];
    this.data = [[]];
    this.plot = null;
    // Points added since the page opened (the chart keeps the newest POINTS).
    this.added = 0;
  }
  // Adds one point in time: `values` maps series names to numbers.
  add(time, values) {
    const names = Object.keys(values).sort();
    if (names.join("\n") !== this.names.join("\n")) this.reset(names);
    this.data[0].push(time);
    names.forEach((n, i) => this.data[i + 1].push(values[n]));
    if (this.data[0].length > POINTS) this.data.forEach(d => d.shift());
    this.added += 1;
    this.plot.setData(this.data);
  }
  reset(names) {
    this.names = names;
    this.data = [[], ...names.map(() => [])];
    if (this.plot) this.plot.destroy();
    const colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];
    this.plot = new uPlot({
      title: this.title,
      width: Math.min(640, window.innerWidth - 40),
      height: 240,
      scales: { x: { time: this.time } },
      series: [{ label: this.time ? "time" : "tag (s)" }, ...names.map((n, i) => ({ label: n, stroke: colors[i % colors.length] }))],
    }, this.data, this.element);
  }
}

const charts = {
  jitter: new Chart(document.getElementById("jitter-chart"), "", true),
  port: new Chart(document.getElementById("port-chart"), "", false),
};
window.weftCharts = charts;

async function sampleJitter() {
  try {
    const answer = await fetch("/api/jitter");
    if (answer.ok) charts.jitter.add(Date.now() / 1000, await answer.json());
  } catch (e) { /* the next sample tries again */ }
}

// The chosen port: its values after the last tag seen.
let port = { key: "", after: 0 };
async function samplePort() {
  const chosen = document.getElementById("port").value;
  if (!chosen) return;
  if (chosen !== port.key) {
    port = { key: chosen, after: 0 };
    charts.port.reset([]);
  }
  const [app, process, name] = chosen.split("|");
  const query = new URLSearchParams({ app, process, port: name, after: port.after });
  try {
    const answer = await fetch("/api/port?" + query);
    if (!answer.ok) { say(await answer.text(), false); return; }
    const values = await answer.json();
    // One point per 100 ms of tags is plenty for a chart.
    let last = 0;
    for (const v of values) {
      port.after = v.tag_ns;
      if (v.tag_ns - last < 100e6) continue;
      last = v.tag_ns;
      const named = {};
      v.values.forEach((x, i) => { named["value " + i] = x; });
      charts.port.add(v.tag_ns / 1e9, named);
    }
  } catch (e) { /* the next sample tries again */ }
}

async function post(path, form) {
  try {
    const answer = await fetch(path, { method: "POST", body: new URLSearchParams(form) });
    if (!answer.ok) {
      say(path + ": " + await answer.text(), false);
    } else {
      const outcome = await answer.json();
      say(outcome.message, outcome.ok);
    }
  } catch (e) {
    say(path + ": " + e.message, false);
  }
  refresh("nodes"); refresh("processes"); refresh("events");
}

document.getElementById("migrate").addEventListener("submit", event => {
  event.preventDefault();
  post("/api/migrate", new FormData(event.target));
});

document.getElementById("nodes").addEventListener("click", event => {
  const button = event.target.closest("button");
  if (!button) return;
  if (button.dataset.drain && confirm("Drain " + button.dataset.drain + "? Its processes move off it.")) {
    post("/api/drain", { node: button.dataset.drain });
  } else if (button.dataset.undrain) {
    post("/api/drain", { node: button.dataset.undrain, undrain: "true" });
  }
});

// Prefer a port with several values (the demo's telemetry: temperature,
// setpoint, power) when the page opens.
for (const option of document.getElementById("port").options) {
  if (option.value.endsWith("|telemetry")) { option.selected = true; break; }
}

function tick() {
  refresh("nodes"); refresh("processes"); refresh("events");
  sampleJitter(); samplePort();
}
tick();
setInterval(tick, REFRESH_MS);
