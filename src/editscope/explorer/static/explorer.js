// editscope explorer: one page over the JSON API of editscope.explorer.app (no build step, no CDN).
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
const COLOURS = ["#d9d9d9", "#f4a261", "#c1121f"];
const state = { runs: [], run: null, info: null, page: 1, pages: 1, refresh: null, job: null, stream: null };

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined) e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

async function api(path, options = {}) {
  const r = await fetch(path, options);
  let body = null;
  try { body = await r.json(); } catch (e) { body = { error: `HTTP ${r.status}` }; }
  if (!r.ok) { const err = new Error(body.error || `HTTP ${r.status}`); err.fields = body.fields || {}; err.status = r.status; throw err; }
  return body;
}

function notice(text) { const n = $("#notice"); n.textContent = text || ""; n.hidden = !text; }
const fmt = (v, d = 3) => (v === null || v === undefined ? "-" : (typeof v === "number" ? v.toFixed(d) : String(v)));

// ---- runs
async function loadRuns() {
  state.runs = await api("/api/runs");
  const nav = $("#runs");
  nav.replaceChildren(...state.runs.map(r => el("button", {
    class: "tab", type: "button", "data-run": r.id, onclick: () => openRun(r.id),
  }, r.name, " ", el("span", { class: "status", text: `(${r.status})` }))));
  return state.runs;
}

function showSection(which) {
  $("#run-view").hidden = which !== "run";
  $("#playground").hidden = which !== "playground";
  $$("header .tab").forEach(b => b.classList.toggle("active",
    (which === "run" && b.dataset.run === state.run) || (which === "playground" && b.id === "open-playground")));
}

// Each openRun is one "generation": an answer that arrives after the user moved on (another run, the
// playground) is dropped instead of drawn over what is shown now.
function stale(gen) { return gen !== state.gen; }

function stopRefresh() { clearInterval(state.refresh); state.refresh = null; }

async function openRun(id) {
  const gen = (state.gen = (state.gen || 0) + 1);
  state.run = id;
  state.probeKey = null;
  $("#probe-detail-box").hidden = true;
  if (new URLSearchParams(location.hash.slice(1)).get("run") !== id) location.hash = `run=${encodeURIComponent(id)}`;
  showSection("run");
  stopRefresh();
  const run = state.runs.find(r => r.id === id);
  const waiting = run && run.status === "waiting";
  for (const box of ["#summary-box", "#grid-box", "#curves-box", "#probes-box"]) $(box).hidden = waiting;
  if (waiting) {
    $("#run-title").textContent = run.name; $("#run-meta").textContent = run.error || "";
    notice(`Run ${id} has no finished unit yet; this page refreshes until it has.`);
    state.refresh = setInterval(async () => {
      await loadRuns();
      if (!stale(gen) && state.runs.find(r => r.id === id).status !== "waiting") openRun(id);
    }, 3000);
    return;
  }
  const info = await api(`/api/runs/${encodeURIComponent(id)}`);
  if (stale(gen)) return;
  fillProbeForm(info);
  await showRun(info, gen);
  if (!stale(gen) && info.status === "in progress") {
    state.refresh = setInterval(async () => {
      const now = await api(`/api/runs/${encodeURIComponent(id)}`);
      if (stale(gen)) return;
      if (now.units !== state.info.units || now.status !== state.info.status) {
        await loadRuns();
        showSection("run");
        await showRun(now, gen);  // the user's filters, page and open probe stay as they are
        if (now.status !== "in progress") stopRefresh();
      }
    }, 5000);
  }
}

async function showRun(info, gen) {
  state.info = info;
  notice(info.status === "in progress" ? `Run ${info.id} is in progress: ${info.units} units so far; the page refreshes as it grows.` : "");
  $("#run-title").textContent = `${info.name}`;
  $("#run-meta").textContent = `${info.model} · ${info.protocol} protocol · ${info.units} units · ${info.rows.toLocaleString()} probe rows · ${info.status}`;
  await Promise.all([loadSummary(gen), setupGrid(info, gen), loadCurves(info, gen), loadProbes(state.page || 1)]);
}

async function loadSummary(gen) {
  const s = await api(`/api/runs/${encodeURIComponent(state.run)}/summary`);
  if (stale(gen)) return;
  $("#summary").replaceChildren(...s.tables.map(t => {
    const table = el("table", { class: "report", id: `table-${t.name}` },
      el("thead", {}, el("tr", {}, ...t.header.map(h => el("th", { text: h })))),
      el("tbody", {}, ...t.rows.map(row => el("tr", {}, ...row.map(c => el("td", {}, c.bold ? el("b", { text: c.text }) : c.text))))));
    return el("div", {}, table, el("p", { class: "muted", text: t.caption }));
  }));
}

// ---- blast radius
function options(select, values, keep = []) {
  const fixed = keep.map(([v, t]) => el("option", { value: v, text: t }));
  select.replaceChildren(...fixed, ...values.map(v => el("option", { value: v, text: v })));
}

async function setupGrid(info, gen) {
  const box = $("#grid-box");
  box.hidden = !info.grid_methods.length;
  if (!info.grid_methods.length) return;
  const keep = [$("#grid-method").value, $("#grid-vs").value];
  options($("#grid-method"), info.grid_methods);
  options($("#grid-vs"), info.grid_methods, [["", "(none)"]]);
  if (info.grid_methods.includes(keep[0])) $("#grid-method").value = keep[0];
  if (info.grid_methods.includes(keep[1])) $("#grid-vs").value = keep[1];
  await drawGrids(gen);
}

async function drawGrids(gen = state.gen) {
  const methods = [$("#grid-method").value, $("#grid-vs").value].filter(Boolean);
  const grids = await Promise.all(methods.map(m => api(`/api/runs/${encodeURIComponent(state.run)}/grid?method=${encodeURIComponent(m)}`)));
  if (stale(gen)) return;
  const panels = [];
  for (const g of grids) {
    for (const op of g.ops) panels.push(gridCanvas(g, op, showCell));
  }
  $("#grids").replaceChildren(el("div", { class: "grids" }, ...panels));
}

// onCell(g, op, a, b): what a click on a cell does (none: the cell is not clickable)
function gridCanvas(g, op, onCell = null) {
  const px = Math.max(3, Math.min(24, Math.floor(300 / g.n)));
  const c = el("canvas", { width: g.n * px, height: g.n * px, class: "grid", "data-method": g.method, "data-op": op });
  const ctx = c.getContext("2d");
  const cells = g.cells[op];
  for (let a = 0; a < g.n; a++) for (let b = 0; b < g.n; b++) {
    ctx.fillStyle = COLOURS[cells[a][b]];
    ctx.fillRect(b * px, (g.n - 1 - a) * px, px, px);  // a up the side, as the report's figure
  }
  if (g.target && g.target.op === op) {
    ctx.strokeStyle = "#000"; ctx.lineWidth = 2;
    ctx.strokeRect(g.target.b * px + 1, (g.n - 1 - g.target.a) * px + 1, px - 2, px - 2);
  }
  const cellAt = ev => {
    const r = c.getBoundingClientRect();
    const b = Math.floor((ev.clientX - r.left) / (r.width / g.n)), a = g.n - 1 - Math.floor((ev.clientY - r.top) / (r.height / g.n));
    return a >= 0 && b >= 0 && a < g.n && b < g.n ? { a, b } : null;
  };
  c.addEventListener("mousemove", ev => {
    const p = cellAt(ev);
    if (p) (onCell ? $("#grid-hover") : $("#pg-hover")).textContent = `${g.method}: ${p.a}${op}${p.b}= ${["output unchanged", "output changed", "now says the target"][cells[p.a][p.b]]}`;
  });
  if (onCell) c.addEventListener("click", ev => { const p = cellAt(ev); if (p) onCell(g, op, p.a, p.b); });
  return el("div", { class: "grid-panel" }, el("div", { text: `${g.method}: a ${op} b (${g.changed[op]}/${g.n * g.n} outputs changed)` }), c);
}

// a click on a run's grid cell: that cell's probes in the unit the grid was drawn from
function showCell(g, op, a, b) {
  const f = $("#probe-form");
  f.method.value = g.method; f.op.value = op; f.a.value = a; f.b.value = b; f.unit.value = g.unit || "";
  $("#cell-text").textContent = `${a}${op}${b}= in ${g.unit}`; $("#cell-filter").hidden = false;
  loadProbes(1).then(() => $("#probes-box").scrollIntoView());
}

// ---- curves (sequential runs)
async function loadCurves(info, gen) {
  const box = $("#curves-box");
  box.hidden = info.protocol !== "sequential";
  if (box.hidden) return;
  const data = await api(`/api/runs/${encodeURIComponent(state.run)}/curves`);
  if (stale(gen)) return;
  const series = {};
  for (const [m, curves] of Object.entries(data.methods)) for (const [name, pts] of Object.entries(curves)) (series[name] ||= {})[m] = pts;
  $("#curves").replaceChildren(...Object.entries(series).map(([name, byMethod]) => curveCanvas(name, byMethod)));
}

function curveCanvas(name, byMethod) {
  const W = 420, H = 220, P = 34;
  const c = el("canvas", { width: W, height: H, class: "curve", "data-series": name });
  const ctx = c.getContext("2d");
  const all = Object.values(byMethod).flat();
  const xs = all.map(p => p[0]), ys = all.map(p => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs) || 1, y0 = Math.min(...ys), y1 = Math.max(...ys);
  const X = x => P + (x - x0) / ((x1 - x0) || 1) * (W - 2 * P), Y = y => H - P - (y - y0) / ((y1 - y0) || 1) * (H - 2 * P);
  const palette = ["#1d3557", "#e63946", "#2a9d8f", "#f4a261", "#6a4c93", "#457b9d", "#8d99ae"];
  const draw = cursor => {
    ctx.clearRect(0, 0, W, H);
    ctx.fillStyle = "#222"; ctx.font = "12px sans-serif";
    ctx.fillText(`${name}  (${fmt(y0, 2)} .. ${fmt(y1, 2)})`, P, 14);
    ctx.fillText(`edits ${x0} .. ${x1}`, W - P - 90, H - 8);
    Object.entries(byMethod).forEach(([m, pts], i) => {
      ctx.strokeStyle = palette[i % palette.length]; ctx.beginPath();
      pts.forEach(([x, y], j) => (j ? ctx.lineTo(X(x), Y(y)) : ctx.moveTo(X(x), Y(y)))); ctx.stroke();
      ctx.fillStyle = ctx.strokeStyle; ctx.fillText(m, P + 4, 30 + 13 * i);
    });
    if (cursor !== null) { ctx.strokeStyle = "#999"; ctx.beginPath(); ctx.moveTo(X(cursor), P); ctx.lineTo(X(cursor), H - P); ctx.stroke(); }
  };
  draw(null);
  c.addEventListener("mousemove", ev => {
    const r = c.getBoundingClientRect();
    const x = x0 + ((ev.clientX - r.left) * (W / r.width) - P) / (W - 2 * P) * ((x1 - x0) || 1);
    const step = xs.reduce((best, v) => (Math.abs(v - x) < Math.abs(best - x) ? v : best), xs[0]);
    draw(step);
    const parts = Object.entries(byMethod).map(([m, pts]) => { const p = pts.find(q => q[0] === step); return `${m} ${p ? fmt(p[1]) : "-"}`; });
    $("#curve-hover").textContent = `${name} after ${step} edits: ${parts.join(", ")}`;
  });
  return c;
}

// ---- probe table
function fillProbeForm(info) {
  const f = $("#probe-form");
  const editFirst = info.edit_methods.length ? info.edit_methods[0] : "base";
  options(f.method, info.methods); f.method.value = editFirst;
  options(f.category, info.categories, [["", "(all)"]]);
  options(f.base, info.base_statuses, [["any", "any"]]);
  options(f.margin, info.margin_bins, [["any", "any"]]);
  options(f.vs, info.methods.filter(m => m !== "base"), [["", "(none)"], [info.placebo, "its placebo"]]);
  options(f.sort, info.sort_keys);
  options(f.step, info.steps.map(String), [["", "(last)"]]);
  $("#step-choice").hidden = !info.steps.length;
  clearCell();
  f.text.value = ""; f.differs.checked = false;
  state.page = 1;
}

function clearCell() {
  const f = $("#probe-form");
  f.op.value = f.a.value = f.b.value = f.unit.value = ""; $("#cell-filter").hidden = true;
}

function probeParams(page) {
  const f = $("#probe-form");
  const p = new URLSearchParams();
  for (const name of ["method", "category", "step", "changed", "base", "margin", "vs", "text", "sort", "order", "size", "op", "a", "b", "unit"]) {
    const v = f[name].value;
    if (v !== "" && v !== null) p.set(name, v);
  }
  if (f.differs.checked) p.set("differs", "true");
  p.set("page", page);
  return p;
}

async function loadProbes(page) {
  const err = $("#probe-error");
  const params = probeParams(page);
  const ticket = (state.probeTicket = (state.probeTicket || 0) + 1);
  let data;
  try {
    data = await api(`/api/runs/${encodeURIComponent(state.run)}/probes?${params}`);
  } catch (e) {
    if (ticket !== state.probeTicket) return;
    err.textContent = e.message; err.hidden = false;
    return;
  }
  if (ticket !== state.probeTicket) return;  // a later query was sent meanwhile: its answer is the one to show
  err.hidden = true;
  $("#probe-table").dataset.query = params.toString();
  state.page = data.page; state.pages = data.pages;
  $("#page-info").textContent = `page ${data.page} of ${data.pages} · ${data.total.toLocaleString()} rows` + (data.vs ? ` · compared with ${data.vs}` : "");
  $("#prev").disabled = data.page <= 1; $("#next").disabled = data.page >= data.pages;
  const table = $("#probe-table");
  table.classList.toggle("with-vs", !!data.vs);
  table.tBodies[0].replaceChildren(...data.rows.map(r => {
    const answer = r.says_target ? ["says", "says target"] : r.changed ? ["changed", "changed"] : r.changed === false ? ["same", "same"] : ["", "-"];
    const vs = r.vs ? `${r.vs.greedy ?? "-"}${r.vs.changed ? "  (changed)" : ""}` : "";
    return el("tr", { "data-digest": r.digest, onclick: () => openProbe(r.digest) },
      el("td", { text: r.unit }), el("td", { text: r.category }), el("td", { class: "out", text: r.prompt }),
      el("td", { class: "out", text: r.target }), el("td", { class: "out", text: r.base_greedy ?? "-" }),
      el("td", { class: "out", text: r.greedy ?? "-" }), el("td", { class: "out vs-col", text: vs }),
      el("td", { class: answer[0], text: answer[1] }), el("td", { text: fmt(r.base_margin, 2) }));
  }));
}

async function openProbe(digest) {
  state.probeKey = digest;
  history.replaceState(null, "", `#run=${encodeURIComponent(state.run)}&probe=${encodeURIComponent(digest)}`);
  const gen = state.gen;
  const d = await api(`/api/runs/${encodeURIComponent(state.run)}/probe?digest=${encodeURIComponent(digest)}`);
  if (stale(gen)) return;
  const box = $("#probe-detail-box");
  box.hidden = false;
  $("#probe-detail").replaceChildren(
    el("p", {}, el("b", { text: d.prompt }), ` → target ${JSON.stringify(d.target)} (${d.category}); base model: `,
      el("code", { text: d.base_greedy ?? "-" }), ` (${d.base_status ?? "-"}, margin ${fmt(d.base_margin, 2)})`),
    el("table", { class: "rows", id: "probe-units" },
      el("thead", {}, el("tr", {}, ...["method", "unit", "step", "output", "answer", "KL", "log P(target)"].map(h => el("th", { text: h })))),
      el("tbody", {}, ...d.units.map(u => el("tr", {},
        el("td", { text: u.method }), el("td", { text: u.unit }), el("td", { text: u.step ?? "" }),
        el("td", { class: "out", text: u.greedy ?? "-" }),
        el("td", { class: u.says_target ? "says" : u.changed ? "changed" : "same", text: u.says_target ? "says target" : u.changed ? "changed" : "same" }),
        el("td", { text: fmt(u.kl) }), el("td", { text: fmt(u.logprob) }))))));
  box.scrollIntoView();
}

// ---- playground
async function openPlayground() {
  state.gen = (state.gen || 0) + 1;  // answers for the run shown before are dropped
  location.hash = "playground";
  stopRefresh();
  showSection("playground");
  notice("");
  const f = $("#pg-form");
  if (!f.model.options.length) {
    try {
      const info = await api("/api/playground");
      options(f.model, info.models); options(f.method, info.methods);
      if (info.methods.includes("rome")) f.method.value = "rome";
    } catch (e) { notice(e.message); }
  }
}

function showFieldErrors(fields) {
  $$("#pg-form .field-error").forEach(s => { s.textContent = fields[s.dataset.for] || ""; });
}

async function submitEdit(ev) {
  ev.preventDefault();
  const f = $("#pg-form");
  const body = {};
  for (const name of ["model", "method", "prompt", "target", "subject", "target_true"]) body[name] = f[name].value;
  showFieldErrors({});
  let job;
  try {
    job = await api("/api/jobs", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  } catch (e) {
    showFieldErrors(Object.keys(e.fields).length ? e.fields : { form: e.message });
    return;
  }
  watchJob(job);
}

function watchJob(job) {
  if (state.stream) state.stream.close();
  state.job = job.id;
  $("#pg-job").hidden = false;
  renderJob(job);
  const s = new EventSource(`/api/jobs/${job.id}/events`);
  state.stream = s;
  s.onmessage = ev => { const j = JSON.parse(ev.data); renderJob(j); if (["done", "failed", "cancelled"].includes(j.state)) s.close(); };
  s.onerror = () => { s.close(); api(`/api/jobs/${job.id}`).then(renderJob).catch(() => {}); };
}

function renderJob(j) {
  if (j.id !== state.job) return;
  $("#pg-job").dataset.state = j.state;
  $("#pg-state").textContent = j.state;
  $("#pg-place").textContent = j.place ? `place ${j.place} in the queue` : "";
  $("#pg-stage").textContent = j.state === "running" ? `${j.stage} (${j.step + 1}/${j.steps})` : (j.seconds ? `${j.seconds.toFixed(1)} s` : "");
  $("#pg-progress").value = j.state === "done" ? 1 : j.step / j.steps;
  const err = $("#pg-error");
  err.hidden = !j.error; err.textContent = j.error ? `The edit was refused: ${j.error}` : "";
  if (j.error) showFieldErrors({ form: j.error });
  $("#pg-cancel").disabled = ["done", "failed", "cancelled"].includes(j.state);
  $("#pg-undo").disabled = j.state !== "done" || j.undone;
  $("#pg-save").disabled = j.state !== "done" || j.undone;
  const study = $("#pg-study");
  study.hidden = j.state !== "done"; study.href = `/api/jobs/${j.id}/study.yaml`;
  $("#pg-saved").textContent = j.undone ? "undone: the model is back to its base weights" : (j.saved ? `saved to ${j.saved}` : "");
  $("#pg-result").replaceChildren(...(j.result ? renderResult(j.result) : []));
}

function renderResult(res) {
  const out = [el("table", { class: "rows", id: "pg-answers" },
    el("thead", {}, el("tr", {}, ...["category", "prompt", "before", "after"].map(h => el("th", { text: h })))),
    el("tbody", {}, ...res.answers.map(a => el("tr", {}, el("td", { text: a.category }), el("td", { class: "out", text: a.prompt }),
      el("td", { class: "out", text: a.before }), el("td", { class: `out ${a.changed ? "changed" : "same"}`, text: a.after })))))];
  out.push(el("p", { id: "pg-elsewhere", text: `Elsewhere: ${res.n_changed_elsewhere} of ${res.n_elsewhere} other probes changed their output; ${res.tensors} tensor(s) edited in ${fmt(res.edit_seconds, 2)} s.` }));
  if (res.changed_elsewhere.length) {
    out.push(el("table", { class: "rows" },
      el("thead", {}, el("tr", {}, ...["category", "prompt", "before", "after"].map(h => el("th", { text: h })))),
      el("tbody", {}, ...res.changed_elsewhere.map(a => el("tr", {}, el("td", { text: a.category }), el("td", { class: "out", text: a.prompt }),
        el("td", { class: "out", text: a.before }), el("td", { class: "out changed", text: a.after }))))));
  }
  if (res.blast) {
    const g = { ...res.blast, method: "this edit" };
    out.push(el("div", { class: "grids", id: "pg-blast" }, ...g.ops.map(op => gridCanvas(g, op))));
  }
  return out;
}

async function jobAction(action) {
  try {
    renderJob(await api(`/api/jobs/${state.job}/${action}`, { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" }));
  } catch (e) { const err = $("#pg-error"); err.hidden = false; err.textContent = e.message; }
}

// ---- wiring
document.addEventListener("DOMContentLoaded", async () => {
  $("#open-playground").addEventListener("click", openPlayground);
  const f = $("#probe-form");
  f.addEventListener("change", () => loadProbes(1));
  f.text.addEventListener("input", () => { clearTimeout(state.typing); state.typing = setTimeout(() => loadProbes(1), 300); });
  f.addEventListener("submit", ev => { ev.preventDefault(); loadProbes(1); });
  $("#clear-cell").addEventListener("click", () => { clearCell(); loadProbes(1); });
  $("#prev").addEventListener("click", () => loadProbes(state.page - 1));
  $("#next").addEventListener("click", () => loadProbes(state.page + 1));
  $("#grid-method").addEventListener("change", () => drawGrids());
  $("#grid-vs").addEventListener("change", () => drawGrids());
  $("#pg-form").addEventListener("submit", submitEdit);
  $("#pg-cancel").addEventListener("click", () => jobAction("cancel"));
  $("#pg-undo").addEventListener("click", () => jobAction("undo"));
  $("#pg-save").addEventListener("click", () => jobAction("save"));
  try { await loadRuns(); } catch (e) { notice(e.message); return; }
  window.addEventListener("hashchange", route);
  route();
});

// the address says what is shown (#run=ID or #playground), so links and the back button work
function route() {
  const hash = new URLSearchParams(location.hash.slice(1));
  if (location.hash === "#playground") { if ($("#playground").hidden) openPlayground(); }
  else if (hash.get("run") && state.runs.some(r => r.id === hash.get("run"))) {
    const probe = hash.get("probe");  // a link to one probe's rows in every unit: #run=ID&probe=DIGEST
    const showProbe = () => { if (probe && probe !== state.probeKey) openProbe(probe); };
    if (state.run !== hash.get("run") || $("#run-view").hidden) openRun(hash.get("run")).then(showProbe); else showProbe();
  }
  else if (state.runs.length) openRun(state.runs[0].id);
  else openPlayground();
}
