// The dashboard page: views over the JSON API, refreshed when the server's event stream says the
// ledger changed. Plain JavaScript, no build step; charts by plotly.min.js served by the app, the
// parallel coordinates as hand-written SVG. The progress chart of a large run gets its points
// thinned out by the server (data.py chart: every kept one, the others' envelope; all of them once
// zoomed in), so SVG draws it at once; `?thin=0` draws every point, with WebGL (scattergl) for a
// series too large for SVG where the browser has WebGL (benchmarks/dashboard.py measures them).
"use strict";

// Chart style per kind of experiment (data.py KINDS); an unknown kind falls back to "other".
const KINDS = {
  keep: { color: "#16a34a", symbol: "circle", size: 11, label: "kept" },
  discard: { color: "#9ca3af", symbol: "circle", size: 7, label: "discarded" },
  guard: { color: "#f59e0b", symbol: "diamond", size: 9, label: "guard / budget rejected" },
  crash: { color: "#dc2626", symbol: "x", size: 9, label: "crashed" },
  timeout: { color: "#ea580c", symbol: "x-thin-open", size: 10, label: "timed out" },
  pruned: { color: "#7c3aed", symbol: "triangle-down", size: 9, label: "pruned" },
  other: { color: "#111827", symbol: "square", size: 8, label: "other" },
};
const TABLE_ROWS = 500;  // rows rendered at once: enough to read, few enough for a 10,000-experiment run
const LABELS_MAX = 40;  // kept changes labelled on the chart up to this many (beyond, hover tells)
// A label this close to the one before (share of the x range) is drawn a line higher, up to
// LABEL_LEVELS lines; beyond, it is left out (its point's hover tells).
const LABEL_GAP = 1 / 8, LABEL_LEVELS = 4;
const TOKEN_KEY = "autoresearch-token";
// Points of a kind from which the chart draws them with WebGL: more than thinning ever leaves
// (data.py CHART_ALL_UP_TO), as in Chromium's software WebGL a context costs ~0.5 s, more than SVG
// takes for a thinned chart; with `?thin=0` on a large run, 10,000 SVG markers would be the slower.
const WEBGL_FROM = 5000;
// How the chart draws: "webgl" when this browser has it, else "svg"; `?chart=svg` (or webgl) forces one.
const PARAMS = new URLSearchParams(location.search);
const CHART_RENDER = PARAMS.get("chart") || (document.createElement("canvas").getContext("webgl") ? "webgl" : "svg");
const CHART_ALL = PARAMS.get("thin") === "0";  // `?thin=0`: every point even of a large run (as before issue 15)

const state = { tasks: [], task: 0, tag: null, view: "progress", expId: null, xaxis: "number",
                sort: { key: "id", asc: false }, filter: { status: "", agent: "", idea: "", q: "" },
                ylog: false, zoom: null, exps: [], summary: null, firstSeen: new Map(), loadedAt: Date.now(), slotsTimer: null };

const $ = (sel) => document.querySelector(sel);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;",
  '"': "&quot;", "'": "&#39;" }[c]));
const fmt = (v) => (v === null || v === undefined ? "—" : Number(v).toPrecision(6).replace(/\.?0+$/, ""));
const when = (t) => (t ? new Date(t * 1000).toLocaleString() : "—");
const secs = (s) => (s === null || s === undefined ? "—" : s < 120 ? `${s.toFixed(1)} s` : `${(s / 60).toFixed(1)} min`);
const badge = (kind, text) => `<span class="badge ${esc(kind)}">${esc(text ?? kind)}</span>`;
const token = () => sessionStorage.getItem(TOKEN_KEY) || "";

async function api(path, options) {
  const res = await fetch(`api/${path}`, options);
  if (!res.ok) {
    const body = await res.json().catch(() => ({}));
    throw new Error(body.detail || `${res.status} ${res.statusText}`);
  }
  return res.json();
}
const taskApi = (path) => api(`${state.task}/${path}`);
const tagApi = (path) => api(`${state.task}/${encodeURIComponent(state.tag)}/${path}`);

// -- routing ---------------------------------------------------------------------------------

function readHash() {
  let hash = location.hash.replace(/^#/, "");
  const m = hash.match(/(^|&)token=([^&]+)/);
  if (m) {  // the URL printed at start-up carries the token: keep it for this tab, drop it from the address
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[2]));
    hash = hash.replace(m[0], "").replace(/^&/, "");
    history.replaceState(null, "", `#${hash || "progress"}`);
  }
  const [view, id] = (hash || "progress").split("/");
  state.view = view === "exp" ? "exp" : ["progress", "table", "slots", "ideas", "notebook", "params"].includes(view)
    ? view : "progress";
  state.expId = view === "exp" ? Number(id) : null;
}

async function start() {
  readHash();
  state.tasks = await api("tasks");
  const sel = $("#task");
  sel.innerHTML = state.tasks.map((t) => `<option value="${t.index}">${esc(t.name)}</option>`).join("");
  sel.onchange = () => { state.task = Number(sel.value); chooseTag(); refresh(true); };
  $("#tag").onchange = () => { state.tag = $("#tag").value; refresh(true); };
  chooseTag();
  window.addEventListener("hashchange", () => { readHash(); refresh(true); });
  listen();
  await refresh(true);
}

function chooseTag() {
  const task = state.tasks[state.task];
  $("#tag").innerHTML = task.tags.map((t) => `<option>${esc(t)}</option>`).join("");
  state.tag = task.tags.includes(state.tag) ? state.tag : task.default_tag;
  $("#tag").value = state.tag || "";
}

function listen() {
  const source = new EventSource("api/events");
  source.addEventListener("hello", () => $("#live").classList.remove("off"));
  source.addEventListener("change", async (e) => {
    const data = JSON.parse(e.data);
    if (!data.tasks.includes(state.task)) return;
    const task = state.tasks[state.task];
    if (!state.tag || !task.tags.includes(state.tag)) {  // a first research run appeared
      state.tasks = await api("tasks");
      chooseTag();
    }
    refresh(false);
  });
  source.onerror = () => $("#live").classList.add("off");
}

let refreshing = null, again = false;
async function refresh(full) {
  if (refreshing) { again = true; return refreshing; }  // one refresh at a time; the latest change wins
  refreshing = (async () => {
    try { await render(full); } catch (err) { showError(err); }
  })();
  await refreshing;
  refreshing = null;
  if (again) { again = false; return refresh(false); }
}

function showError(err) {
  $("#view").innerHTML = `<div class="notice err">${esc(err.message)}</div>`;
}

async function render(full) {
  document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("active",
    a.dataset.view === state.view || (state.view === "exp" && a.dataset.view === "table")));
  if (state.slotsTimer && state.view !== "slots") { clearInterval(state.slotsTimer); state.slotsTimer = null; }
  if (!state.tag) {
    $("#summary").innerHTML = $("#control").innerHTML = "";
    $("#view").innerHTML = `<div class="panel">No research run recorded in ${esc(state.tasks[state.task].root)}
      yet. Start one with <code>autoresearch run</code>; it appears here by itself.</div>`;
    return;
  }
  const [summary, exps] = await Promise.all([tagApi("summary"), tagApi("experiments")]);
  state.summary = summary;
  noteArrivals(exps);
  state.exps = exps;
  renderSummary(summary);
  const views = { progress: viewProgress, table: viewTable, exp: viewExperiment, slots: viewSlots, ideas: viewIdeas,
                  notebook: viewNotebook, params: viewParams };
  await views[state.view](full);
}

function noteArrivals(exps) {
  const now = Date.now();
  for (const e of exps) if (!state.firstSeen.has(`${e.id}:${e.status}`)) state.firstSeen.set(`${e.id}:${e.status}`, now);
}
const isFresh = (e) => (state.firstSeen.get(`${e.id}:${e.status}`) || 0) > state.loadedAt + 500;

function renderSummary(s) {
  const c = s.counts;
  const better = s.direction === "minimize" ? "lower" : "higher";
  const gain = s.best && s.baseline && s.best.metric !== null && s.baseline.metric !== null
    ? s.best.metric - s.baseline.metric : null;
  const cards = [
    ["metric", `${esc(s.metric)} <span class="muted" style="font-size:12px">(${better} is better)</span>`],
    ["baseline", fmt(s.baseline?.metric)],
    ["best", s.best ? `${fmt(s.best.metric)} <a href="#exp/${s.best.id}" style="font-size:12px">#${s.best.id}</a>` : "—"],
    ["change", gain === null ? "—" : `${gain > 0 ? "+" : ""}${fmt(gain)}`],
    ["experiments", `<span id="exp-count">${s.experiments}</span>`],
    ["kept", c.keep || 0], ["discarded", c.discard || 0], ["crashed", (c.crash || 0) + (c.timeout || 0)],
    ["running", c.running || 0], ["queued", c.queued || 0],
  ];
  if (c.pruned) cards.push(["pruned", c.pruned]);
  $("#summary").innerHTML = cards.map(([k, v]) => `<div class="card"><div class="k">${k}</div><div class="v">${v}</div></div>`)
    .join("") + (s.config_problem ? `<div class="notice">${esc(s.config_problem)}</div>` : "");
  renderControl(s.paused);
}

// Pause/resume, in the header: paused, it says since when and by whom (a running experiment finishes).
function renderControl(p) {
  const el = $("#control");
  el.dataset.paused = p ? "yes" : "no";
  el.classList.toggle("paused", Boolean(p));
  el.title = p ? "no new experiment starts; the running ones finish and are judged" : "stop starting new experiments";
  const since = (t) => new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  el.innerHTML = (p ? `<span>paused at ${since(p.started_at)} (${esc(p.source)})</span>` : "")
    + `<button id="pause-toggle" class="${p ? "" : "secondary"}">${p ? "Resume" : "Pause"}</button><span id="pause-result"></span>`;
  $("#pause-toggle").onclick = () => setPaused(!p);
}

async function setPaused(paused) {  // a write: needs the token, like adding an idea
  try {
    const res = await fetch(`api/${state.task}/${encodeURIComponent(state.tag)}/${paused ? "pause" : "resume"}`,
      { method: "POST", headers: { "X-Autoresearch-Token": token() } });
    const body = await res.json();
    if (!res.ok) throw new Error(body.detail || res.statusText);
    await refresh(false);
  } catch (err) {
    $("#pause-result").innerHTML = `<div class="notice err">${esc(err.message)}</div>`;
  }
}

// -- progress chart --------------------------------------------------------------------------

async function viewProgress(full) {
  if (full || !$("#progress-chart")) {
    $("#view").innerHTML = `<div class="panel"><div class="toolbar"><strong>Progress</strong>
      <span class="muted">x axis:</span>
      <button class="secondary" id="x-number" aria-pressed="${state.xaxis === "number"}">experiment number</button>
      <button class="secondary" id="x-time" aria-pressed="${state.xaxis === "time"}">wall-clock time</button>
      <button class="secondary" id="y-log" aria-pressed="${state.ylog}">log scale</button>
      <span class="muted">drag to zoom, double-click to reset; click a point to open it</span>
      <span class="muted" id="chart-note"></span></div>
      <div id="progress-chart" class="chart"></div></div>`;
    $("#x-number").onclick = () => { state.xaxis = "number"; viewProgress(true); };
    $("#x-time").onclick = () => { state.xaxis = "time"; viewProgress(true); };
    $("#y-log").onclick = () => { state.ylog = !state.ylog; viewProgress(true); };
    state.zoom = null;  // a new chart starts unzoomed
  }
  await drawProgress($("#progress-chart"), state.summary);
}

// The server sends the chart's points (data.py chart): all of them, or for a large run every kept
// one and the envelope of the others; zoomed in, it is asked again for the points of the view.
async function drawProgress(el, summary) {
  const byTime = state.xaxis === "time";
  const z = state.zoom;
  const range = z ? `&x0=${z.x[0]}&x1=${z.x[1]}${z.y ? `&y0=${z.y[0]}&y1=${z.y[1]}` : ""}` : "";
  const chart = await tagApi(`chart?axis=${state.xaxis}${range}${CHART_ALL ? "&all=true" : ""}`);
  const done = chart.points;
  const values = done.map((e) => e.metric).filter((v) => v !== null);
  const lo = Math.min(...values), hi = Math.max(...values), pad = 0.05 * ((hi - lo) || 1);
  const ylog = state.ylog && lo > 0;  // a log axis only for positive metrics
  const edge = ylog ? (summary.direction === "minimize" ? hi * 1.5 : lo / 1.5)  // failed runs: on the worse edge
    : summary.direction === "minimize" ? hi + pad : lo - pad;
  const x = (e) => (byTime ? new Date(e.finished_at * 1000) : e.id);
  const traces = [];
  for (const [kind, style] of Object.entries(KINDS)) {
    const pts = done.filter((e) => e.kind === kind);
    if (!pts.length) continue;
    traces.push({
      type: CHART_RENDER === "webgl" && pts.length >= WEBGL_FROM ? "scattergl" : "scatter", mode: "markers",
      name: `${style.label} (${chart.counts[kind]})`, x: pts.map(x),
      y: pts.map((e) => (e.metric === null ? edge : e.metric)), customdata: pts.map((e) => e.id),
      text: pts.map((e) => `<b>#${e.id} ${esc(e.status)}</b> ${e.metric === null ? "no metric" : fmt(e.metric)}<br>` +
        `${esc(e.description).slice(0, 120)}<br><i>${esc(e.reason)}</i>`),
      hovertemplate: "%{text}<extra></extra>",
      marker: { color: style.color, symbol: style.symbol, size: style.size, opacity: kind === "discard" ? 0.7 : 0.95,
                line: { width: kind === "keep" ? 1 : 0, color: "#14532d" } },
    });
  }
  const kept = done.filter((e) => e.kind === "keep" && e.metric !== null).sort((a, b) => a.finished_at - b.finished_at);
  if (kept.length) {
    const lineX = kept.map(x).concat([byTime ? new Date(chart.last_x * 1000) : chart.last_x]);
    traces.push({ type: "scatter", mode: "lines", name: "best so far", x: lineX,
                  y: kept.map((e) => e.metric).concat([kept[kept.length - 1].metric]), hoverinfo: "skip",
                  line: { shape: "hv", color: "#16a34a", width: 2 } });
  }
  const span = byTime ? (chart.last_x - Math.min(...done.map((e) => e.finished_at))) * 1000 : chart.last_x;
  let previous = -Infinity, level = 0;
  const placed = kept.slice(1).map((e) => {  // labels that would lie on each other are stacked
    const at = Number(x(e));
    level = at - previous < span * LABEL_GAP ? level + 1 : 0;
    if (level === 0) previous = at;
    return { e, level };
  }).filter((l) => l.level < LABEL_LEVELS);
  const labels = kept.length <= LABELS_MAX ? placed.map(({ e, level }) => ({
    x: x(e), y: ylog ? Math.log10(e.metric) : e.metric, text: esc(e.description.length > 38 ? `${e.description.slice(0, 37)}…` : e.description),
    showarrow: true, arrowhead: 0, arrowcolor: "#86efac", ax: 24,
    ay: (summary.direction === "minimize" ? -1 : 1) * (24 + 15 * level),
    font: { size: 10, color: "#14532d" }, xanchor: "left",
  })) : [];
  const layout = {
    margin: { l: 64, r: 16, t: 10, b: 46 }, hovermode: "closest", uirevision: `${state.task}/${state.tag}/${state.xaxis}/${ylog}`,
    legend: { orientation: "h", y: -0.14 }, annotations: labels, paper_bgcolor: "#fff", plot_bgcolor: "#fff",
    xaxis: { title: byTime ? "finished at" : "experiment number", gridcolor: "#eef0f3", zeroline: false },
    yaxis: { title: `${summary.metric} (${summary.direction === "minimize" ? "lower" : "higher"} is better)`,
             gridcolor: "#eef0f3", zeroline: false, type: ylog ? "log" : "linear" },
  };
  await Plotly.react(el, traces, layout, { displaylogo: false, responsive: true,
                                           modeBarButtonsToRemove: ["select2d", "lasso2d"] });
  el.dataset.render = traces.some((t) => t.type === "scattergl") ? "webgl" : "svg";
  el.dataset.shown = String(done.length);
  el.dataset.points = String(chart.total);
  $("#chart-note").textContent = chart.decimated ? `${done.length.toLocaleString()} of the ${chart.in_view.toLocaleString()} ` +
    "points in view: every kept one, and each pixel column's best and worst of the others (zoom in to see all)" : "";
  if (!el.dataset.clickable) {
    el.on("plotly_click", (ev) => { const id = ev.points[0]?.customdata; if (id) location.hash = `exp/${id}`; });
    el.on("plotly_relayout", (ev) => zoomed(el, ev));
    el.dataset.clickable = "1";
  }
}

// A zoom (or its reset) asks the server again when what it sent was thinned out, or was a zoom.
function zoomed(el, ev) {
  const range = (axis) => ev[`${axis}.range`]  // as given to Plotly.relayout, or as a drag gives it
    || (ev[`${axis}.range[0]`] !== undefined ? [ev[`${axis}.range[0]`], ev[`${axis}.range[1]`]] : null);
  const xr = range("xaxis"), yr = range("yaxis");
  const reset = ev["xaxis.autorange"] || ev["yaxis.autorange"];
  if (!xr && !yr && !reset) return;
  if (!state.zoom && el.dataset.shown === el.dataset.points) return;  // everything is drawn already
  const layout = el._fullLayout;
  const num = (v) => (state.xaxis === "time" ? new Date(String(v).replace(" ", "T")).getTime() / 1000 : Number(v));
  const ys = (v) => (layout.yaxis.type === "log" ? 10 ** Number(v) : Number(v));
  state.zoom = reset && !xr && !yr ? null : {
    x: (xr || layout.xaxis.range).map(num),
    y: (yr || (ev["yaxis.autorange"] ? null : layout.yaxis.range))?.map(ys) || null,
  };
  drawProgress(el, state.summary).catch(showError);
}

// -- experiment table ------------------------------------------------------------------------

const COLUMNS = [["id", "#"], ["status", "status"], ["metric", "metric"], ["agent", "agent"],
  ["description", "description"], ["lines", "Δ lines"], ["wall_s", "wall"], ["finished_at", "finished"]];

function viewTable(full) {
  const f = state.filter;
  if (full || !$("#exp-table")) {
    const statuses = [...new Set(state.exps.map((e) => e.kind))].sort();
    const agents = [...new Set(state.exps.map((e) => e.agent))].sort();
    const opt = (v, label) => `<option value="${esc(v)}">${esc(label ?? v)}</option>`;
    $("#view").innerHTML = `<div class="panel"><div class="toolbar">
      <select id="f-status">${opt("", "every status")}${statuses.map((s) => opt(s, KINDS[s]?.label || s)).join("")}</select>
      <select id="f-agent">${opt("", "every agent")}${agents.map((a) => opt(a)).join("")}</select>
      <select id="f-idea">${opt("", "with or without an idea")}${opt("yes", "from an idea")}${opt("no", "not from an idea")}</select>
      <input id="f-q" type="search" placeholder="search descriptions and reasons">
      <span id="shown" class="muted"></span></div>
      <table id="exp-table"><thead><tr>${COLUMNS.map(([k, label]) =>
        `<th class="sortable" data-key="${k}">${label}</th>`).join("")}</tr></thead><tbody></tbody></table></div>`;
    for (const [id, key] of [["f-status", "status"], ["f-agent", "agent"], ["f-idea", "idea"], ["f-q", "q"]]) {
      const input = $(`#${id}`);
      input.value = f[key];
      input.oninput = () => { f[key] = input.value; fillTable(); };
    }
    document.querySelectorAll("#exp-table th").forEach((th) => th.onclick = () => {
      const key = th.dataset.key;
      state.sort = { key, asc: state.sort.key === key ? !state.sort.asc : key === "description" || key === "agent" };
      fillTable();
    });
  }
  fillTable();
}

function fillTable() {
  const f = state.filter, q = f.q.trim().toLowerCase();
  let rows = state.exps.filter((e) => (!f.status || e.kind === f.status) && (!f.agent || e.agent === f.agent) &&
    (!f.idea || (f.idea === "yes") === (e.idea_id !== null)) &&
    (!q || e.description.toLowerCase().includes(q) || (e.reason || "").toLowerCase().includes(q)));
  const { key, asc } = state.sort;
  const val = (e) => (key === "lines" ? e.insertions + e.deletions : e[key]);
  rows = rows.slice().sort((a, b) => {
    const va = val(a), vb = val(b);
    if (va === vb) return a.id - b.id;
    if (va === null || va === undefined) return 1;
    if (vb === null || vb === undefined) return -1;
    return (va < vb ? -1 : 1) * (asc ? 1 : -1);
  });
  document.querySelectorAll("#exp-table th").forEach((th) => {
    th.classList.toggle("sorted", th.dataset.key === key);
    th.classList.toggle("asc", th.dataset.key === key && asc);
  });
  $("#shown").textContent = rows.length > TABLE_ROWS ? `showing ${TABLE_ROWS} of ${rows.length} (filter to see others)`
    : `${rows.length} of ${state.exps.length}`;
  $("#exp-table tbody").innerHTML = rows.slice(0, TABLE_ROWS).map((e) =>
    `<tr class="row${isFresh(e) ? " fresh" : ""}" data-id="${e.id}" data-status="${esc(e.status)}">
      <td class="num">${e.id}</td><td>${badge(e.kind, e.status)}</td><td class="num">${fmt(e.metric)}</td>
      <td>${esc(e.agent)}</td><td>${esc(e.description)}<div class="reason">${esc(e.reason)}</div></td>
      <td class="num">+${e.insertions}/−${e.deletions}</td><td class="num">${secs(e.wall_s)}</td>
      <td class="num">${e.finished_at ? new Date(e.finished_at * 1000).toLocaleTimeString() : "—"}</td></tr>`).join("");
  document.querySelectorAll("#exp-table tr.row").forEach((tr) => tr.onclick = () => { location.hash = `exp/${tr.dataset.id}`; });
}

// -- one experiment --------------------------------------------------------------------------

function highlightDiff(diff) {
  return diff.split("\n").map((line) => {
    const cls = line.startsWith("diff --git") || line.startsWith("+++") || line.startsWith("---") ? "file"
      : line.startsWith("@@") ? "hunk" : line.startsWith("+") ? "add" : line.startsWith("-") ? "del" : "";
    return cls ? `<span class="${cls}">${esc(line)}</span>` : esc(line);
  }).join("\n");
}

async function viewExperiment() {
  const e = await taskApi(`experiment/${state.expId}`);
  const ids = state.exps.map((x) => x.id), at = ids.indexOf(e.id);
  const prev = at > 0 ? ids[at - 1] : null, next = at >= 0 && at < ids.length - 1 ? ids[at + 1] : null;
  const info = e.info || {};
  const tokens = (info.prompt_tokens || 0) + (info.completion_tokens || 0);
  const metrics = Object.entries(e.metrics || {}).filter(([k]) => k !== state.summary.metric);
  const runs = e.runs.map((r) => `<tr><td class="num">${r.id}</td><td>${esc(r.kind)}</td><td>${badge(r.status === "ok" ? "keep" : r.status === "superseded" ? "interrupted" : "crash", r.status)}</td>
    <td class="num">${fmt(r.metric)}</td><td class="num">${secs(r.wall_s)}</td><td class="num">${r.peak_mem_mb ? r.peak_mem_mb.toFixed(0) + " MB" : "—"}</td>
    <td>${esc(r.slot)}</td><td class="reason">${esc(Object.entries(r.metrics || {}).map(([k, v]) => `${k}=${fmt(v)}`).join(", "))}</td></tr>`).join("");
  const agentRows = [["agent", e.agent], ["model", info.model], ["tokens", tokens ? `${tokens} (${info.prompt_tokens || 0} in, ${info.completion_tokens || 0} out)` : null],
    ["latency", info.latency_s ? secs(info.latency_s) : null], ["cost", info.cost_usd !== undefined ? `$${info.cost_usd}` : null],
    ["search trial", info.trial], ["idea", e.idea ? `#${e.idea.id} ${e.idea.text}` : null],
    ["rebased", info.rebased ? info.rebased.map((r) => `onto #${r.onto}`).join(", ") : null]]
    .filter(([, v]) => v !== null && v !== undefined && v !== "");
  $("#view").innerHTML = `<div class="panel" id="experiment" data-id="${e.id}">
    <span class="nav-exp">${prev ? `<a href="#exp/${prev}">← #${prev}</a>` : ""}${next ? `<a href="#exp/${next}">#${next} →</a>` : ""}</span>
    <h2>#${e.id} ${badge(e.kind, e.status)} ${esc(e.description)}</h2>
    <div class="decision ${esc(e.kind)}">${esc(e.reason || "not decided yet")}</div>
    <div class="grid2"><div>
      <h3>Measured</h3><table><tbody>
        <tr><th>${esc(state.summary.metric)}</th><td class="num">${fmt(e.metric)}</td></tr>
        ${metrics.map(([k, v]) => `<tr><th>${esc(k)}</th><td class="num">${fmt(v)}</td></tr>`).join("")}
        <tr><th>wall</th><td class="num">${secs(e.wall_s)}</td></tr>
        <tr><th>change</th><td class="num">${e.files_changed} file(s), +${e.insertions}/−${e.deletions} (Δ ${e.lines_delta} code lines)</td></tr>
        <tr><th>commit</th><td><code>${esc((e.commit || "").slice(0, 12))}</code> on <code>${esc((e.parent_commit || "").slice(0, 12))}</code></td></tr>
        <tr><th>created</th><td>${when(e.created_at)}</td></tr><tr><th>finished</th><td>${when(e.finished_at)}</td></tr>
      </tbody></table></div><div>
      <h3>Agent</h3><table><tbody>${agentRows.map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(v)}</td></tr>`).join("")}</tbody></table>
      ${info.reasoning ? `<h3>Reasoning</h3><pre class="text">${esc(info.reasoning)}</pre>` : ""}
      ${Object.keys(e.params || {}).length ? `<h3>Parameters</h3><pre class="text">${esc(Object.entries(e.params).map(([k, v]) => `${k} = ${v}`).join("\n"))}</pre>` : ""}
    </div></div>
    <h3>Runs (${e.runs.length})</h3>
    ${e.runs.length ? `<table><thead><tr><th>run</th><th>kind</th><th>status</th><th>metric</th><th>wall</th><th>peak memory</th><th>slot</th><th>metrics</th></tr></thead><tbody>${runs}</tbody></table>` : `<p class="muted">no runs recorded</p>`}
    <h3>Diff</h3>${e.diff ? `<pre class="diff">${highlightDiff(e.diff)}</pre>` : `<p class="muted">no change (the baseline, or nothing committed)</p>`}
    <h3>Log tail</h3>${e.log_tail ? `<pre>${esc(e.log_tail)}</pre>` : `<p class="muted">no log recorded</p>`}
    ${e.log_path ? `<p class="muted">full log: <code>${esc(e.log_path)}</code></p>` : ""}</div>`;
}

// -- slots -----------------------------------------------------------------------------------

async function viewSlots() {
  const s = await tagApi("slots");
  const budget = s.budget_s;
  const rows = s.running.map((r) => `<tr><td><strong>${esc(r.slot || "slot")}</strong></td>
    <td><a href="#exp/${r.id}">#${r.id}</a></td><td>${esc(r.description)}<div class="reason">${esc(r.agent)}${r.runs ? `, run ${r.runs + 1}` : ""}</div></td>
    <td><div class="bar${r.started_known ? "" : " unknown"}" data-start="${r.started_at || ""}" data-budget="${budget || ""}"><div></div></div>
    <div class="reason elapsed"></div></td></tr>`).join("");
  $("#view").innerHTML = `<div class="panel"><h2>Running now</h2>
    ${s.running.length ? `<table id="running"><thead><tr><th>slot</th><th>experiment</th><th>what</th><th>training budget ${budget ? `(${budget} s)` : ""}</th></tr></thead><tbody>${rows}</tbody></table>`
      : `<p class="muted">no experiment is running</p>`}
    <p class="muted">bars: time since the run started against the training budget; start-up and evaluation come on top.</p></div>
    <div class="grid2"><div class="panel"><h2>Busy</h2>${s.busy.length ? `<table><thead><tr><th>slot</th><th>runs</th><th>busy</th><th></th></tr></thead><tbody>${s.busy.map((b) =>
      `<tr><td>${esc(b.slot)}</td><td class="num">${b.runs}</td><td class="num">${(100 * b.busy_fraction).toFixed(0)}%</td>
       <td><div class="bar"><div style="width:${(100 * b.busy_fraction).toFixed(1)}%;background:var(--keep)"></div></div></td></tr>`).join("")}</tbody></table>
       <p class="muted">share of the time since each slot's first run that it spent running experiments</p>` : `<p class="muted">no runs yet</p>`}</div>
    <div class="panel"><h2>Queue (${s.queue.length})</h2>${s.queue.length ? `<table><tbody>${s.queue.map((q) =>
      `<tr><td><a href="#exp/${q.id}">#${q.id}</a></td><td>${esc(q.description)}</td><td class="reason">${esc(q.agent)}</td></tr>`).join("")}</tbody></table>`
      : `<p class="muted">no proposal waiting for a slot</p>`}</div></div>`;
  tickBars();
  if (!state.slotsTimer) state.slotsTimer = setInterval(tickBars, 250);
}

function tickBars() {
  const now = Date.now() / 1000;
  document.querySelectorAll("#running .bar").forEach((bar) => {
    const start = Number(bar.dataset.start), budget = Number(bar.dataset.budget);
    const label = bar.parentElement.querySelector(".elapsed");
    if (!start || bar.classList.contains("unknown")) { label.textContent = "running since before the dashboard started"; return; }
    const elapsed = now - start;
    bar.firstElementChild.style.width = budget ? `${Math.min(100, (100 * elapsed) / budget).toFixed(1)}%` : "100%";
    bar.classList.toggle("over", budget && elapsed > budget);
    label.textContent = `${elapsed.toFixed(0)} s${budget ? ` of ${budget} s` : ""}`;
  });
}

// -- ideas -----------------------------------------------------------------------------------

async function viewIdeas() {
  const ideas = await taskApi("ideas");
  const open = ideas.filter((i) => i.status === "open").length;
  $("#view").innerHTML = `<div class="panel"><h2>Add an idea</h2>
    <form id="idea-form" class="toolbar"><input id="idea-text" style="flex:1" placeholder="free text, or a setting like LEARNING_RATE=0.01" maxlength="2000" required>
    <input id="idea-token" type="password" placeholder="token (printed at start-up)" value="${esc(token())}">
    <button type="submit">Add idea</button></form><div id="idea-result"></div>
    <p class="muted">Agents draw from the open ideas; the search agent tries a setting as written.</p></div>
    <div class="panel"><h2>Ideas (${open} open, ${ideas.length - open} tried)</h2>${ideas.length ? `<table id="ideas"><thead><tr><th>#</th><th>status</th><th>idea</th><th>source</th><th>experiment</th><th>outcome</th></tr></thead><tbody>
    ${ideas.slice().reverse().map((i) => `<tr data-id="${i.id}"><td class="num">${i.id}</td><td>${badge(i.status)}</td><td>${esc(i.text)}</td><td>${esc(i.source)}</td>
      <td>${i.experiment_id ? `<a href="#exp/${i.experiment_id}">#${i.experiment_id}</a> ${i.experiment_status ? badge(i.experiment_status) : ""}` : "—"}</td>
      <td class="reason">${esc(i.outcome || "")}</td></tr>`).join("")}</tbody></table>` : `<p class="muted">no ideas yet</p>`}</div>`;
  $("#idea-form").onsubmit = async (ev) => {
    ev.preventDefault();
    const given = $("#idea-token").value.trim();
    const out = $("#idea-result");
    try {
      const res = await fetch(`api/${state.task}/ideas`, { method: "POST", body: JSON.stringify({ text: $("#idea-text").value }),
        headers: { "Content-Type": "application/json", "X-Autoresearch-Token": given } });
      const body = await res.json();
      if (!res.ok) throw new Error(body.detail || res.statusText);
      sessionStorage.setItem(TOKEN_KEY, given);
      out.innerHTML = `<div class="notice ok">queued idea #${body.id}</div>`;
      await viewIdeas();
      $("#idea-result").innerHTML = `<div class="notice ok">queued idea #${body.id}</div>`;
    } catch (err) {
      out.innerHTML = `<div class="notice err">${esc(err.message)}</div>`;
    }
  };
}

// -- notebook and accounting -----------------------------------------------------------------

async function viewNotebook() {
  const d = await tagApi("notebook");
  const a = d.accounting;
  const hours = (h) => (h === null || h === undefined ? "—" : h < 1 ? `${(h * 60).toFixed(2)} min` : `${h.toFixed(2)} h`);
  const money = (v) => (v === null || v === undefined ? "not recorded" : `$${v.toFixed(4)}`);
  const rows = [["LLM tokens", a.tokens ? `${a.tokens.toLocaleString()} (${a.prompt_tokens.toLocaleString()} in, ${a.completion_tokens.toLocaleString()} out)` : "none recorded"],
    ["models", a.models.join(", ") || "—"], ["agent thinking", secs(a.agent_latency_s)], ["model cost", money(a.cost_usd)],
    ["runs", a.runs], ["device time", hours(a.device_hours)],
    ...Object.entries(a.by_kind).map(([k, v]) => [`  ${k} runs`, `${v.runs} runs, ${hours(v.device_hours)}`]),
    ["kept improvements", a.kept_improvements], ["model cost per kept improvement", money(a.cost_per_kept_improvement)],
    ["device time per kept improvement", hours(a.device_hours_per_kept_improvement)]];
  $("#view").innerHTML = `<div class="grid2"><div class="panel"><h2>Accounting</h2><table id="accounting"><tbody>
    ${rows.map(([k, v]) => `<tr><th>${esc(k)}</th><td class="num">${esc(v)}</td></tr>`).join("")}</tbody></table>
    <p class="muted">Not recorded by the ledger: ${a.not_recorded.map(esc).join("; ")}.</p></div>
    <div class="panel"><h2>The question (program)</h2><pre class="text">${esc(d.program || "(no program file)")}</pre></div></div>
    <div class="panel"><h2>Ablation and transfer</h2>${checksTable(d.checks)}</div>
    <div class="panel"><h2>Lab notebook</h2>${d.notebook ? `<pre class="text" id="notebook">${esc(d.notebook)}</pre>`
      : `<p class="muted">empty: LLM agents write their notes here (.autoresearch/notebooks/${esc(state.tag)}.md)</p>`}</div>`;
}

function checksTable(checks) {
  if (!checks.length) return `<p class="muted">none run (<code>autoresearch ablate</code>, <code>autoresearch transfer --budget S</code>)</p>`;
  return `<table id="checks"><thead><tr><th>check</th><th>what</th><th class="num">pairs</th><th class="num">gain ± se</th><th>note</th></tr></thead><tbody>
    ${checks.map((c) => `<tr><td>#${c.id} ${esc(c.kind)}</td><td>${esc(c.setting.label || "")}</td><td class="num">${c.pairs.length}</td>
      <td class="num">${esc(c.gain_text)}</td><td>${esc(c.note)}</td></tr>`).join("")}</tbody></table>
    <p class="muted">gain &gt; 0: better (ablation: the change still helps in the best; transfer: the best beats the base there)</p>`;
}

// -- parameters (search agents) --------------------------------------------------------------

async function viewParams() {
  const p = await tagApi("params");
  if (!p.names.length) {
    $("#view").innerHTML = `<div class="panel"><p class="muted">No numeric parameters recorded: parameter views are
      for search-agent runs over UPPER_CASE constants ([search] in autoresearch.toml).</p></div>`;
    return;
  }
  $("#view").innerHTML = `<div class="grid2"><div class="panel"><h2>History</h2><div id="param-history" class="chart" style="height:360px"></div></div>
    <div class="panel"><h2>Importance</h2><div id="param-importance" class="chart" style="height:360px"></div>
    <p class="muted">|Spearman rank correlation| of each parameter with ${esc(p.metric)} over the measured experiments.</p></div></div>
    <div class="panel"><h2>Parallel coordinates</h2><div id="param-parallel"></div>
    <p class="muted">one line per measured experiment; colour: ${esc(p.metric)} (green is better); kept ones drawn thick.</p></div>`;
  const scored = p.trials.filter((t) => t.metric !== null);
  const traces = Object.entries(KINDS).map(([kind, style]) => {
    const pts = scored.filter((t) => t.kind === kind);
    return { type: "scatter", mode: "markers", name: style.label, x: pts.map((t) => t.id), y: pts.map((t) => t.metric),
      marker: { color: style.color, symbol: style.symbol, size: style.size },
      text: pts.map((t) => Object.entries(t.params).map(([k, v]) => `${k}=${fmt(v)}`).join("<br>")),
      hovertemplate: "#%{x}: %{y}<br>%{text}<extra></extra>" };
  }).filter((t) => t.x.length);
  const layout = { margin: { l: 60, r: 10, t: 10, b: 40 }, paper_bgcolor: "#fff", plot_bgcolor: "#fff",
                   xaxis: { title: "experiment number", gridcolor: "#eef0f3" }, yaxis: { title: p.metric, gridcolor: "#eef0f3" },
                   legend: { orientation: "h", y: -0.2 } };
  Plotly.react($("#param-history"), traces, layout, { displaylogo: false, responsive: true });
  const imp = p.names.map((n) => [n, p.importance[n]]).filter(([, v]) => v !== null).sort((a, b) => a[1] - b[1]);
  Plotly.react($("#param-importance"), [{ type: "bar", orientation: "h", x: imp.map(([, v]) => v), y: imp.map(([n]) => n),
    marker: { color: "#2563eb" } }], { ...layout, xaxis: { title: "importance", range: [0, 1] }, yaxis: { automargin: true },
    showlegend: false }, { displaylogo: false, responsive: true });
  drawParallel($("#param-parallel"), p.names, scored, p.direction);
}

function drawParallel(el, names, trials, direction) {
  const W = Math.max(el.clientWidth || 900, 500), H = 340, top = 24, bottom = 24, left = 50, right = 50;
  const axes = [...names, "metric"];
  const span = axes.map((n) => {
    const vs = trials.map((t) => (n === "metric" ? t.metric : t.params[n])).filter((v) => v !== undefined);
    return [Math.min(...vs), Math.max(...vs)];
  });
  const ax = (i) => left + (i * (W - left - right)) / Math.max(axes.length - 1, 1);
  const ay = (i, v) => { const [lo, hi] = span[i]; return top + (H - top - bottom) * (1 - (hi > lo ? (v - lo) / (hi - lo) : 0.5)); };
  const [mlo, mhi] = span[axes.length - 1];
  const colour = (m) => {  // better metric -> green, worse -> red
    let q = mhi > mlo ? (m - mlo) / (mhi - mlo) : 0.5;
    if (direction === "minimize") q = 1 - q;
    return `hsl(${Math.round(q * 120)}, 70%, 42%)`;
  };
  const lines = trials.map((t) => {
    const pts = axes.map((n, i) => { const v = n === "metric" ? t.metric : t.params[n]; return v === undefined ? null : `${ax(i)},${ay(i, v)}`; })
      .filter(Boolean).join(" ");
    return `<polyline points="${pts}" fill="none" stroke="${colour(t.metric)}" stroke-width="${t.kind === "keep" ? 2.5 : 1}" opacity="${t.kind === "keep" ? 0.95 : 0.45}"><title>#${t.id}: ${fmt(t.metric)}</title></polyline>`;
  }).join("");
  const axisSvg = axes.map((n, i) => `<line x1="${ax(i)}" x2="${ax(i)}" y1="${top}" y2="${H - bottom}" stroke="#6b7280"/>
    <text x="${ax(i)}" y="${top - 8}" text-anchor="middle" font-weight="600">${esc(n)}</text>
    <text x="${ax(i) + 4}" y="${top + 4}">${fmt(span[i][1])}</text><text x="${ax(i) + 4}" y="${H - bottom}">${fmt(span[i][0])}</text>`).join("");
  el.innerHTML = `<svg width="${W}" height="${H}" role="img" aria-label="parallel coordinates">${lines}${axisSvg}</svg>`;
}

start().catch(showError);
