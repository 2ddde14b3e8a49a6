// The console's page: polls /api/overview for the readings it has not seen (one reading of SQS
// serves every open page), draws them as SVG, and lists and acts on the dead letters.
// No library, no inline script: the page's content security policy allows only this file.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const CHART = { width: 600, height: 170, left: 48, right: 8, top: 8, bottom: 22 };
const CHARTS = {
  writer: [["accepted", "#2b7bb9"], ["refused", "#d9822b"]],
  worker: [["processed", "#2a9d5c"], ["failed", "#d9822b"], ["dead_lettered", "#c23030"]],
  depth: [["visible", "#2b7bb9"], ["in_flight", "#8f5bb5"], ["delayed", "#999999"], ["dead_letters", "#c23030"]],
  latency: [["p50_ms", "#2a9d5c"], ["p99_ms", "#c23030"]],
};
const LABELS = { dead_lettered: "dead-lettered", in_flight: "in flight", dead_letters: "dead letters",
  p50_ms: "p50", p99_ms: "p99" };

const state = { seq: 0, boot: null, points: [], refreshS: 2, windowS: 900, listing: null, selected: new Set(),
  redriveStarted: null };
const csrfToken = document.querySelector('meta[name="csrf-token"]').content;
const readOnly = document.querySelector('meta[name="read-only"]').content === "true";

function el(id) { return document.getElementById(id); }

function text(value, unit) {
  if (value === null || value === undefined) return "–";
  const shown = Math.abs(value) >= 100 ? Math.round(value).toString() : value.toFixed(value % 1 === 0 ? 0 : 1);
  return unit ? `${shown} ${unit}` : shown;
}

function svgNode(name, attributes) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  return node;
}

// One chart: a line per series over the kept window, a gap where a figure is missing.
function drawChart(name) {
  const svg = el(`chart-${name}`);
  const series = CHARTS[name];
  const now = state.points.length ? state.points[state.points.length - 1].at : Date.now() / 1000;
  const from = now - state.windowS;
  let top = 0;
  for (const point of state.points) {
    for (const [key] of series) if (point[key] !== null && point[key] > top) top = point[key];
  }
  top = top > 0 ? niceCeiling(top) : 1;
  const plotW = CHART.width - CHART.left - CHART.right;
  const plotH = CHART.height - CHART.top - CHART.bottom;
  const x = (at) => CHART.left + ((at - from) / state.windowS) * plotW;
  const y = (value) => CHART.top + plotH - (value / top) * plotH;
  svg.replaceChildren();
  for (const fraction of [0, 0.5, 1]) {
    const level = y(top * fraction);
    svg.append(svgNode("line", { x1: CHART.left, x2: CHART.width - CHART.right, y1: level, y2: level, class: "grid" }));
    const label = svgNode("text", { x: CHART.left - 4, y: level + 4, "text-anchor": "end", class: "axis" });
    label.textContent = text(top * fraction);
    svg.append(label);
  }
  for (const [at, words, anchor] of [[from, "15 min ago", "start"], [now, "now", "end"]]) {
    const label = svgNode("text", { x: x(at), y: CHART.height - 6, "text-anchor": anchor, class: "axis" });
    label.textContent = words;
    svg.append(label);
  }
  for (const [key, colour] of series) {
    let path = "";
    let pen = "M";
    for (const point of state.points) {
      if (point[key] === null || point[key] === undefined || point.at < from) { pen = "M"; continue; }
      path += `${pen}${x(point.at).toFixed(1)},${y(point[key]).toFixed(1)} `;
      pen = "L";
    }
    svg.append(svgNode("path", { d: path.trim() || "M0,0", stroke: colour, fill: "none", "stroke-width": 2,
      class: `series series-${key}`, "data-points": state.points.filter((p) => p[key] !== null).length }));
  }
  const legend = el(`legend-${name}`);
  if (!legend.childElementCount) {
    for (const [key, colour] of series) {
      const item = document.createElement("span");
      const swatch = svgNode("svg", { width: 12, height: 12, class: "swatch" });
      swatch.append(svgNode("rect", { width: 12, height: 12, fill: colour }));
      item.append(swatch, ` ${LABELS[key] || key}`);
      legend.append(item);
    }
  }
}

function niceCeiling(value) {
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (value <= step * magnitude) return step * magnitude;
  return 10 * magnitude;
}

function showFigures(overview) {
  const latest = state.points[state.points.length - 1];
  if (latest) {
    for (const key of ["accepted", "refused", "processed", "failed", "dead_lettered", "visible", "in_flight",
      "delayed", "dead_letters"]) el(`figure-${key}`).textContent = text(latest[key]);
    el("figure-p50_ms").textContent = text(latest.p50_ms, "ms");
    el("figure-p99_ms").textContent = text(latest.p99_ms, "ms");
    el("freshness").textContent = `read ${new Date(latest.at * 1000).toLocaleTimeString()}, every ${overview.refresh_s} s`;
  }
  el("endpoint").textContent = overview.endpoint;
  const sources = overview.sources.map((s) => (s.ok ? `${s.url}: ok` : `${s.url}: ${s.error}`));
  if (overview.sqs_error) sources.unshift(`SQS: ${overview.sqs_error}`);
  el("sources").textContent = sources.length ? `Read from: ${sources.join(" · ")}` : "";
  el("sources").classList.toggle("trouble", Boolean(overview.sqs_error) || overview.sources.some((s) => !s.ok));
  const job = overview.redrive;
  // The redrive of all this page started (known by its start time, since a reading taken before
  // the console had it shows none) has ended: read what is left.
  if (state.redriveStarted !== null && job && job.started_at === state.redriveStarted && job.state !== "running") {
    state.redriveStarted = null;
    readDeadLetters(true);
  }
  el("read-dead-letters").disabled = state.redriveStarted !== null || Boolean(job && job.state === "running");
  el("redrive-progress").textContent = job
    ? `Redrive of all (${job.state}): ${job.moved}${job.total ? ` of ${job.total}` : ""} moved` +
      (job.error ? ` — ${job.error}` : "") + (job.notes.length ? ` (${job.notes.join("; ")})` : "")
    : "";
}

async function poll() {
  try {
    const response = await fetch(`api/overview?since=${state.seq}`, { cache: "no-store" });
    if (response.ok) {
      const overview = await response.json();
      if (state.boot !== overview.boot) {  // the console restarted: its readings start again
        if (state.boot !== null && state.seq > 0) { state.seq = 0; state.points = []; state.boot = overview.boot; setTimeout(poll, 0); return; }
        state.boot = overview.boot;
      }
      state.refreshS = overview.refresh_s;
      state.windowS = overview.window_s;
      if (overview.points.length) {
        state.points.push(...overview.points);
        state.seq = overview.points[overview.points.length - 1].seq;
        const from = state.points[state.points.length - 1].at - state.windowS;
        state.points = state.points.filter((point) => point.at >= from);
      }
      showFigures(overview);
      for (const name of Object.keys(CHARTS)) drawChart(name);
    } else {
      el("freshness").textContent = `the console answered ${response.status}`;
    }
  } catch (error) {
    el("freshness").textContent = "the console does not answer; trying again";
  }
  setTimeout(poll, state.refreshS * 1000);
}

// Dead letters.

function cell(row, content) {
  const td = document.createElement("td");
  if (content instanceof Node) td.append(content); else td.textContent = content ?? "–";
  row.append(td);
  return td;
}

function when(iso) { return iso ? new Date(iso).toLocaleString() : "–"; }

function reasonsList(item) {
  if (!item.recorded) return "moved by SQS's redrive policy: no reason recorded (see the worker's log)";
  const list = document.createElement("ol");
  list.className = "reasons";
  for (const failure of item.failures) {
    const entry = document.createElement("li");
    entry.textContent = `#${failure.attempt ?? "?"} ${when(failure.at)}: ${failure.error_type}: ${failure.error}`;
    list.append(entry);
  }
  return list;
}

function showListing(listing) {
  state.listing = listing;
  const body = document.querySelector("#dead-letters tbody");
  body.replaceChildren();
  state.selected = new Set([...state.selected].filter((id) => listing.items.some((item) => item.id === id)));
  for (const item of listing.items) {
    const row = document.createElement("tr");
    row.dataset.id = item.id;
    const box = document.createElement("input");
    box.type = "checkbox";
    box.className = "select";
    box.checked = state.selected.has(item.id);
    box.setAttribute("aria-label", `select ${item.source_id || item.id}`);
    box.addEventListener("change", () => { if (box.checked) state.selected.add(item.id); else state.selected.delete(item.id); updateButtons(); });
    cell(row, box);
    cell(row, item.source_id || item.id).className = "id";
    cell(row, item.receive_count === null ? "–" : String(item.receive_count));
    cell(row, when(item.first_failure_at));
    cell(row, when(item.last_failure_at || item.dead_lettered_at));
    cell(row, reasonsList(item)).className = "why";
    const show = document.createElement("button");
    show.type = "button";
    show.className = "show-body";
    show.textContent = `show (${item.body_bytes} B)`;
    show.addEventListener("click", () => showBody(item.id, show));
    cell(row, show);
    body.append(row);
  }
  el("listing-note").textContent = `SQS has no peek: these are ${listing.read} dead letter(s) the console received and ` +
    `gave back at once (nothing consumed), read ${new Date(listing.read_at * 1000).toLocaleTimeString()} in ` +
    `${listing.read_ms} ms; newest failure first. Of ${text(state.points.length ? state.points[state.points.length - 1].dead_letters : null)} ` +
    "in the queue, a listing shows a sample of at most 100.";
  updateButtons();
}

// Only the newest reading asked for is shown: an older answer arriving late never replaces it.
// The body's data-listing says "reading" until that answer is shown, then "idle", and its
// data-listings-asked counts the readings asked for (a script can tell its own from the last).
async function readDeadLetters(fresh) {
  const asked = (state.listingsAsked = (state.listingsAsked || 0) + 1);
  document.body.dataset.listingsAsked = String(asked);
  document.body.dataset.listing = "reading";
  try {
    const response = await fetch(`api/dead-letters?limit=100&fresh=${fresh ? "true" : "false"}`, { cache: "no-store" });
    const answer = await response.json();
    if (asked !== state.listingsAsked) return;
    if (response.ok) showListing(answer); else el("listing-note").textContent = answer.detail || answer.title;
  } catch (error) {
    if (asked === state.listingsAsked) el("listing-note").textContent = "the console does not answer; read again";
  } finally {
    if (asked === state.listingsAsked) document.body.dataset.listing = "idle";
  }
}

async function showBody(id, button) {
  const response = await fetch(`api/dead-letters/${encodeURIComponent(id)}/body`, { cache: "no-store" });
  const answer = await response.json();
  const pre = document.createElement("pre");
  pre.className = "body";
  pre.textContent = response.ok ? answer.body : (answer.detail || answer.title);
  button.replaceWith(pre);
}

function updateButtons() {
  if (readOnly) return;
  el("redrive-selected").disabled = state.selected.size === 0;
  el("delete-selected").disabled = state.selected.size === 0;
}

function confirmAction(question) {
  const dialog = el("confirm");
  el("confirm-text").textContent = question;
  return new Promise((resolve) => {
    const done = (answer) => { dialog.close(); el("confirm-ok").onclick = null; el("confirm-cancel").onclick = null; resolve(answer); };
    el("confirm-ok").onclick = () => done(true);
    el("confirm-cancel").onclick = () => done(false);
    dialog.showModal();
  });
}

async function act(path, payload, question) {
  if (!(await confirmAction(question))) return;
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Console-Key": el("console-key").value, "X-CSRF-Token": csrfToken },
    body: JSON.stringify(payload),
  });
  const answer = await response.json();
  const result = el("action-result");
  result.classList.toggle("trouble", !response.ok);
  if (!response.ok) {
    result.textContent = `Refused (${response.status}): ${answer.detail || answer.title}`;
    return;
  }
  if (response.status === 202) {
    result.textContent = `Redrive of all started${payload.rate ? ` at ${payload.rate} a second at most` : ""}.`;
    state.redriveStarted = answer.started_at;  // the dead letters are read again once it ends
    el("read-dead-letters").disabled = true;
    return;
  } else {
    const failed = Object.entries(answer.failed);
    result.textContent = `Done: ${answer.done.length}` + (answer.missing.length ? `; not in the listing: ${answer.missing.length}` : "") +
      (failed.length ? `; failed: ${failed.map(([id, why]) => `${id}: ${why}`).join("; ")}` : "");
    state.selected.clear();
  }
  await readDeadLetters(true);
}

function wire() {
  el("read-dead-letters").addEventListener("click", () => readDeadLetters(true));
  el("select-all").addEventListener("change", (event) => {
    for (const item of state.listing ? state.listing.items : []) {
      if (event.target.checked) state.selected.add(item.id); else state.selected.delete(item.id);
    }
    if (state.listing) showListing(state.listing);
  });
  if (!readOnly) {
    el("redrive-selected").addEventListener("click", () => act("api/dead-letters/redrive", { ids: [...state.selected] },
      `Move ${state.selected.size} dead letter(s) back to the queue?`));
    el("delete-selected").addEventListener("click", () => act("api/dead-letters/delete", { ids: [...state.selected] },
      `Delete ${state.selected.size} dead letter(s) for good?`));
    el("redrive-all").addEventListener("click", () => {
      const rate = Number(el("redrive-rate").value) || null;
      const payload = rate ? { all: true, rate } : { all: true };
      act("api/dead-letters/redrive", payload, `Move every dead letter back to the queue${rate ? ` at ${rate} a second` : ""}?`);
    });
  }
  poll();
  readDeadLetters(false);
}

document.addEventListener("DOMContentLoaded", wire);
