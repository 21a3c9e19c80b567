// The Firehose console: reads the daemon's operator JSON every few seconds and draws it.
// Every value from the JSON is user-controlled (stream names, error texts, record data), so it is
// only ever set as textContent or drawn on a canvas: never parsed as HTML.
"use strict";

const REFRESH_MS = 5000;
const WINDOW_MS = 15 * 60 * 1000;
const TOKEN_KEY = "firehose-console-token";

/** One chart per figure: how to read it from a stream's metrics, and whether it is a counter (charted as a rate). */
const CHARTS = [
  { id: "incoming_records", title: "Incoming records /s", counter: true,
    read: (f) => f["firehose_incoming_records_total"] || 0 },
  { id: "incoming_bytes", title: "Incoming bytes /s", counter: true, bytes: true,
    read: (f) => f["firehose_incoming_bytes_total"] || 0 },
  // (not an HTTP endpoint's processed_records/bytes, which count attempts)
  { id: "delivered_records", title: "Delivered records /s", counter: true,
    read: (f) => sum(f, /^firehose_delivery_to_(?![a-z0-9_]*_processed_)[a-z0-9_]+_records_total$/) },
  { id: "delivered_bytes", title: "Delivered bytes /s", counter: true, bytes: true,
    read: (f) => sum(f, /^firehose_delivery_to_(?![a-z0-9_]*_processed_)[a-z0-9_]+_bytes_total$/) },
  { id: "freshness", title: "Data freshness (s)", counter: false,
    read: (f) => max(f, /^firehose_delivery_to_[a-z0-9_]+_data_freshness_seconds$/) },
  { id: "backlog", title: "Buffered backlog (bytes)", counter: false, bytes: true,
    read: (f) => f["firehose_buffered_bytes"] || 0 },
  { id: "errors", title: "Errors /s (error output, failed attempts)", counter: true,
    read: (f) => sum(f, /^firehose_error_output_records_total(\{|$)/)
      + Math.max(0, sum(f, /^firehose_delivery_to_[a-z0-9_]+_attempts_total$/)
        - sum(f, /^firehose_delivery_to_[a-z0-9_]+_success_total$/)) },
];

/** Totals shown as numbers above the charts. */
const FIGURES = [
  ["incoming_records", "incoming records", (f) => CHARTS[0].read(f)],
  ["incoming_bytes", "incoming bytes", (f) => CHARTS[1].read(f), true],
  ["delivered_records", "delivered records", (f) => CHARTS[2].read(f)],
  ["delivered_bytes", "delivered bytes", (f) => CHARTS[3].read(f), true],
  ["freshness", "data freshness (s)", (f) => CHARTS[4].read(f)],
  ["backlog", "buffered bytes", (f) => CHARTS[5].read(f), true],
  ["errors", "errors", (f) => CHARTS[6].read(f)],
];

// {time_ms, delivery_streams}, oldest first, the last WINDOW_MS: the daemon's history gives each stream
// its charted figures as an array (in historySeries order), the current readings all figures by name.
let samples = [];
let historySeries = [];
let haveHistory = false;

function sum(figures, pattern) {
  let total = 0;
  for (const [name, value] of Object.entries(figures)) if (pattern.test(name)) total += value;
  return total;
}

function max(figures, pattern) {
  let most = 0;
  for (const [name, value] of Object.entries(figures)) if (pattern.test(name)) most = Math.max(most, value);
  return most;
}

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function human(value, bytes) {
  if (!bytes) return Number.isInteger(value) ? String(value) : value.toFixed(value < 10 ? 2 : 1);
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(value) >= 1024 && i < units.length - 1) { value /= 1024; i += 1; }
  return (i === 0 ? String(Math.round(value)) : value.toFixed(1)) + " " + units[i];
}

async function getJSON(path) {
  const headers = { "Accept": "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers["Authorization"] = "Bearer " + token;
  const response = await fetch(path, { headers, cache: "no-store" });
  if (response.status === 401) throw new NeedsToken();
  // /readyz answers 503 with its JSON when not ready: still worth showing.
  if (!response.ok && response.status !== 503) throw new Error(path + ": HTTP " + response.status);
  return response.json();
}

class NeedsToken extends Error {}

/** JSON the page can do without (a view an older daemon does not serve): null unless the token is missing. */
async function optionalJSON(path) {
  try {
    return await getJSON(path);
  } catch (error) {
    if (error instanceof NeedsToken) throw error;
    return null;
  }
}

/** Rates per second between two readings of cumulative totals, by key (null on the first reading). */
class Rates {
  constructor() { this.previous = new Map(); this.current = new Map(); }
  begin(time) { this.time = time; this.current = new Map(); }
  rate(key, total) {
    this.current.set(key, [this.time, total]);
    const before = this.previous.get(key);
    if (!before || this.time <= before[0]) return null;
    return Math.max(0, total - before[1]) / ((this.time - before[0]) / 1000);
  }
  end() { this.previous = this.current; }
}

const kinesisRates = new Rates();
const agentRates = new Rates();

function cell(text, field) {
  const td = el("td", text);
  if (field) td.dataset.field = field;
  return td;
}

function rateText(value, bytes) {
  return value === null ? "–" : human(value, bytes) + "/s";
}

/** A table of rows with the given header. */
function table(headers, rows) {
  const t = el("table");
  const head = el("tr");
  for (const h of headers) head.append(el("th", h));
  t.append(el("thead"), el("tbody"));
  t.tHead.append(head);
  t.tBodies[0].append(...rows);
  return t;
}

/** The Kinesis sidecar's streams with their shards: lag (iterator age) and throughput, in and out. */
function renderKinesis(view, now) {
  const section = document.getElementById("kinesis");
  if (!view || !view.enabled) { section.hidden = true; return; }
  section.hidden = false;
  kinesisRates.begin(now);
  const cards = [];
  for (const stream of view.streams || []) {
    const card = el("div", null, "kinesis-stream");
    card.dataset.kinesisStream = stream.name;
    const inRecords = kinesisRates.rate(stream.name + " in r", stream.incoming_records);
    const inBytes = kinesisRates.rate(stream.name + " in b", stream.incoming_bytes);
    card.append(el("h3", stream.name + " · " + stream.status + " · " + stream.mode + " · "
      + stream.open_shards + " open shards · in " + rateText(inRecords, false) + ", " + rateText(inBytes, true)
      + " · " + human(stream.incoming_records, false) + " records stored since start"));
    const rows = (stream.shards || []).map((shard) => {
      const key = stream.name + " " + shard.shard_id;
      const row = el("tr");
      row.dataset.shard = shard.shard_id;
      const age = shard.iterator_age_seconds;
      row.append(cell(shard.shard_id), cell(shard.open ? "open" : "closed"),
        cell(age === null || age === undefined ? "not read" : human(age, false) + " s", "iterator_age"),
        cell(rateText(kinesisRates.rate(key + " ir", shard.incoming_records), false)),
        cell(rateText(kinesisRates.rate(key + " ib", shard.incoming_bytes), true)),
        cell(rateText(kinesisRates.rate(key + " or", shard.outgoing_records), false)),
        cell(rateText(kinesisRates.rate(key + " ob", shard.outgoing_bytes), true)),
        cell(String(shard.incoming_records), "incoming_records"),
        cell(String(shard.outgoing_records), "outgoing_records"));
      return row;
    });
    card.append(table(["Shard", "State", "Iterator age", "In records", "In bytes", "Out records", "Out bytes",
      "Stored", "Read"], rows));
    cards.push(card);
  }
  kinesisRates.end();
  if (!cards.length) cards.push(el("p", "No Kinesis streams.", "muted"));
  section.querySelector(".list").replaceChildren(...cards);
}

/** A series of (time, value) for one stream and chart: a rate per second for counters. */
function series(name, chart) {
  const points = [];
  let previous = null;
  for (const sample of samples) {
    const figures = (sample.delivery_streams || {})[name];
    if (!figures) { previous = null; continue; }
    const value = Array.isArray(figures) ? (figures[historySeries.indexOf(chart.id)] ?? 0) : chart.read(figures);
    if (!chart.counter) {
      points.push([sample.time_ms, value]);
    } else if (previous !== null && sample.time_ms > previous[0]) {
      // A counter that went down was restarted (a reload, a new stream of the same name): no negative rate.
      const rate = Math.max(0, value - previous[1]) / ((sample.time_ms - previous[0]) / 1000);
      points.push([sample.time_ms, rate]);
    }
    previous = [sample.time_ms, value];
  }
  return points;
}

function draw(canvas, points, bytes, now) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 260, height = canvas.clientHeight || 90;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  ctx.clearRect(0, 0, width, height);
  const top = points.reduce((m, p) => Math.max(m, p[1]), 0);
  canvas.dataset.max = String(top);
  canvas.dataset.points = String(points.length);
  canvas.dataset.last = points.length ? String(points[points.length - 1][1]) : "0";
  const scale = top > 0 ? top * 1.1 : 1;
  const x = (t) => width * (1 - (now - t) / WINDOW_MS);
  const y = (v) => height - 12 - (height - 16) * (v / scale);
  ctx.strokeStyle = "#e4e7ec";
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.moveTo(0, y(0)); ctx.lineTo(width, y(0));
  ctx.stroke();
  ctx.fillStyle = "#667085";
  ctx.font = "10px system-ui, sans-serif";
  ctx.fillText("max " + human(top, bytes), 2, 10);
  ctx.fillText("-15 min", 2, height - 1);
  ctx.fillText("now", width - 22, height - 1);
  if (!points.length) return;
  ctx.strokeStyle = "#2563eb";
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  points.forEach(([t, v], i) => (i ? ctx.lineTo(x(t), y(v)) : ctx.moveTo(x(t), y(v))));
  ctx.stroke();
  ctx.lineTo(x(points[points.length - 1][0]), y(0));
  ctx.lineTo(x(points[0][0]), y(0));
  ctx.closePath();
  ctx.fillStyle = "rgba(37, 99, 235, 0.12)";
  ctx.fill();
}

function definitionRows(stream, ready) {
  const rows = [];
  const source = stream.source || {};
  rows.push(["Source", source.kinesis_stream ? source.type + " (" + source.kinesis_stream + ")" : source.type]);
  const destination = stream.destination || {};
  rows.push(["Destination", destination.type + (destination.target ? " → " + destination.target : "")]);
  if (destination.bucket) rows.push(["Object store", destination.bucket]);
  const buffering = stream.buffering || {};
  rows.push(["Buffering", human(buffering.size_bytes || 0, true) + " or " + buffering.interval_seconds + " s"]);
  rows.push(["Processing", (stream.processing || []).length ? stream.processing.join(" → ") : "none"]);
  rows.push(["Version", stream.version]);
  if (ready) {
    rows.push(["Consecutive failures", ready.consecutive_failures ?? 0]);
    if (ready.last_delivery_ms) rows.push(["Last delivery", new Date(ready.last_delivery_ms).toLocaleString()]);
  }
  return rows;
}

function renderStream(stream, ready, figures, now) {
  const card = document.getElementById("stream-card").content.firstElementChild.cloneNode(true);
  card.dataset.stream = stream.name;
  card.querySelector(".name").textContent = stream.name;
  const status = card.querySelector(".status");
  const failing = ready && (ready.error || ready.consecutive_failures > 0);
  status.textContent = stream.status + (failing ? " · failing" : "");
  if (failing) status.classList.add("failing");
  const dl = card.querySelector(".definition");
  for (const [term, value] of definitionRows(stream, ready)) {
    dl.append(el("dt", term), el("dd", value));
  }
  const box = card.querySelector(".figures");
  for (const [id, label, read, bytes] of FIGURES) {
    const figure = el("div", null, "figure");
    const value = el("b", human(read(figures), bytes));
    value.dataset.figure = id;
    value.dataset.value = String(read(figures));
    figure.append(value, el("span", label));
    box.append(figure);
  }
  const charts = card.querySelector(".charts");
  const pending = [];
  for (const chart of CHARTS) {
    const holder = el("div", null, "chart");
    const title = el("div", null, "title");
    const points = series(stream.name, chart);
    const last = points.length ? points[points.length - 1][1] : 0;
    title.append(el("span", chart.title), el("span", human(last, chart.bytes)));
    const canvas = el("canvas");
    canvas.dataset.chart = chart.id;
    holder.append(title, canvas);
    charts.append(holder);
    pending.push([canvas, points, chart.bytes]);
  }
  const error = ready && (ready.last_error || ready.error);
  if (error) {
    const block = card.querySelector(".last-error");
    block.hidden = false;
    block.querySelector("pre").textContent = typeof error === "string" ? error : JSON.stringify(error, null, 2);
  }
  const records = stream.error_records || [];
  if (records.length) {
    const block = card.querySelector(".error-records");
    block.hidden = false;
    block.querySelector("ol").append(...records.map(errorRecord));
  }
  return [card, pending];
}

/** One error document (newest first from the daemon): when, why, where it was written, and its data as text. */
function errorRecord(record) {
  const item = el("li", null, "error-record");
  const head = el("div", null, "reason");
  head.append(el("b", record.code || "Error", "code"), el("span", " " + (record.message || ""), "message"));
  const facts = [record.error_output_type, record.time_ms ? new Date(record.time_ms).toLocaleString() : null,
    record.attempts ? record.attempts + (record.attempts === 1 ? " attempt" : " attempts") : null, record.key]
    .filter((fact) => fact);
  const data = record.data || {};
  const size = human(data.bytes || 0, true) + (data.truncated ? ", truncated" : "");
  const body = "text" in data ? el("pre", data.text, "data")
    : el("pre", "base64 (not printable): " + (data.base64 || ""), "data binary");
  item.append(head, el("div", facts.join(" · ") + " · " + size, "muted facts"), body);
  return item;
}

/** The agents' flows (``console.agents``), as the daemon read them from each agent's status listener. */
function renderAgents(view, now) {
  const section = document.getElementById("agents");
  const agents = (view && view.agents) || [];
  if (!agents.length) { section.hidden = true; return; }
  section.hidden = false;
  agentRates.begin(now);
  const cards = agents.map((agent) => {
    const card = el("div", null, "agent");
    card.dataset.agent = agent.url;
    const head = el("h3", agent.url + (agent.ok ? " · " + (agent.flows || []).length + " flows" : ""));
    if (!agent.ok) head.append(el("span", " · " + (agent.error || "unreachable"), "error"));
    card.append(head);
    const rows = (agent.flows || []).map((flow) => {
      const key = agent.url + " " + flow.flow;
      const row = el("tr");
      row.dataset.flow = flow.flow;
      row.append(cell(flow.label, "label"), cell(flow.destination + " " + flow.stream),
        cell(String(flow.lines_read), "lines_read"), cell(String(flow.records_sent), "records_sent"),
        cell(rateText(agentRates.rate(key + " s", flow.records_sent), false)),
        cell(rateText(agentRates.rate(key + " b", flow.bytes_sent), true)),
        cell(human(flow.bytes_behind || 0, true) + " in " + flow.files_tracked + " files", "behind"),
        cell(String(flow.records_refused), "refused"), cell(String(flow.send_errors), "send_errors"),
        cell(flow.failed ? "stopped: " + (flow.last_error || "failed") : (flow.last_error || "–"), "last_error"));
      return row;
    });
    if (rows.length) {
      card.append(table(["Flow", "To", "Lines read", "Records sent", "Sent records", "Sent bytes", "Behind",
        "Refused", "Send errors", "Last error"], rows));
    }
    return card;
  });
  agentRates.end();
  section.querySelector(".list").replaceChildren(...cards);
}

async function refresh() {
  const problem = document.getElementById("problem");
  try {
    const metrics = await getJSON(haveHistory ? "/metrics.json?history=0" : "/metrics.json");
    if (!haveHistory) {
      samples = (metrics.history || []).slice();
      historySeries = metrics.history_series || [];
      haveHistory = true;
    }
    samples.push(metrics.current);
    const now = metrics.current.time_ms;
    samples = samples.filter((s) => now - s.time_ms <= WINDOW_MS);
    const [ready, listing, kinesis, agents] = await Promise.all([getJSON("/readyz"),
      getJSON("/console/api/streams"), optionalJSON("/console/api/kinesis"), optionalJSON("/console/api/agents")]);
    const readyStreams = ready.streams || {};
    const spool = ready.spool || {};
    document.getElementById("daemon").textContent = ready.status + " · spool "
      + human(spool.used_bytes || 0, true) + " of " + human(spool.max_bytes || 0, true)
      + (ready.reason ? " · " + ready.reason : "");
    const main = document.getElementById("streams");
    const cards = [], drawings = [];
    const streams = (listing.delivery_streams || []).slice().sort((a, b) => a.name.localeCompare(b.name));
    for (const stream of streams) {
      const figures = (metrics.current.delivery_streams || {})[stream.name] || {};
      const [card, pending] = renderStream(stream, readyStreams[stream.name], figures, now);
      cards.push(card);
      drawings.push(...pending);
    }
    if (!cards.length) cards.push(el("p", "No delivery streams.", "muted"));
    main.replaceChildren(...cards);
    for (const [canvas, points, bytes] of drawings) draw(canvas, points, bytes, now);
    renderKinesis(kinesis, now);
    renderAgents(agents, now);
    document.getElementById("login").hidden = true;
    problem.hidden = true;
    document.getElementById("updated").textContent = "updated " + new Date(now).toLocaleTimeString();
    document.body.dataset.refreshed = String(now);
  } catch (error) {
    if (error instanceof NeedsToken) {
      document.getElementById("login").hidden = false;
    } else {
      problem.textContent = "Could not refresh: " + error.message;
      problem.hidden = false;
    }
  }
}

document.getElementById("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
  refresh();
});

refresh();
setInterval(refresh, REFRESH_MS);
