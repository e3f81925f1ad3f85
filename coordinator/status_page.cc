// The status page served at "/": one self-contained HTML document (no external assets) whose script
// polls /stats, /jobs and /workers (and /counts for a chosen dataset) every two seconds; each is an
// indexed read, so a poll costs the same at 100,000 jobs as at 10. It builds the DOM with textContent only, so job
// prompts and worker names cannot inject markup. With a token-protected API it asks for the token once
// and keeps it in the browser's localStorage.
namespace stas::coordinator {

const char* StatusPageHtml() {
  return R"html(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>stas · render service</title>
<style>
  :root { --bg:#0f1419; --panel:#171d24; --line:#263040; --text:#d8dee9; --dim:#8b95a5; --accent:#5fb3f9;
          --ok:#4cc38a; --warn:#e5b454; --bad:#ef6b73; --mute:#6b7686; }
  * { box-sizing: border-box; }
  body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; background:var(--bg); color:var(--text); }
  header { display:flex; align-items:center; gap:16px; padding:14px 24px; border-bottom:1px solid var(--line); background:var(--panel); }
  header h1 { font-size:17px; margin:0; font-weight:600; letter-spacing:.2px; }
  header .sub { color:var(--dim); font-size:12.5px; }
  .pill { display:inline-flex; align-items:center; gap:6px; padding:2px 10px; border-radius:999px; font-size:12px; border:1px solid var(--line); color:var(--dim); }
  .dot { width:8px; height:8px; border-radius:50%; background:var(--mute); display:inline-block; }
  .dot.ok { background:var(--ok); } .dot.bad { background:var(--bad); }
  main { padding:18px 24px 40px; max-width:1400px; margin:0 auto; }
  .cards { display:grid; grid-template-columns:repeat(auto-fit,minmax(130px,1fr)); gap:10px; margin-bottom:18px; }
  .card { background:var(--panel); border:1px solid var(--line); border-radius:8px; padding:10px 12px; }
  .card .k { color:var(--dim); font-size:11.5px; text-transform:uppercase; letter-spacing:.6px; }
  .card .v { font-size:22px; font-weight:600; margin-top:2px; font-variant-numeric:tabular-nums; }
  .card svg { display:block; margin-top:4px; }
  .card .s { color:var(--dim); font-size:11.5px; margin-top:2px; white-space:nowrap; overflow:hidden; text-overflow:ellipsis; }
  .chip { display:inline-block; margin-left:6px; padding:0 6px; border-radius:3px; background:#223041; color:#9fb4cc; font-size:11px; }
  .errline { color:var(--bad); font-size:12px; overflow:hidden; text-overflow:ellipsis; white-space:nowrap; }
  section { background:var(--panel); border:1px solid var(--line); border-radius:8px; margin-bottom:18px; }
  section > h2 { font-size:13px; margin:0; padding:10px 14px; border-bottom:1px solid var(--line); display:flex; align-items:center; gap:10px; font-weight:600; }
  section > h2 .grow { flex:1; }
  table { width:100%; border-collapse:collapse; }
  th, td { text-align:left; padding:7px 14px; border-bottom:1px solid var(--line); vertical-align:middle; }
  th { color:var(--dim); font-weight:500; font-size:12px; }
  tr:last-child td { border-bottom:none; }
  td.mono, .mono { font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; font-size:12.5px; }
  td.prompt { max-width:420px; overflow:hidden; text-overflow:ellipsis; white-space:nowrap; }
  .badge { display:inline-block; padding:1px 8px; border-radius:4px; font-size:12px; font-weight:600; }
  .s-queued { background:#2a3342; color:#a9b6c8; } .s-running { background:#173a57; color:var(--accent); }
  .s-done { background:#173d2c; color:var(--ok); } .s-failed, .s-dead { background:#46222a; color:var(--bad); }
  .s-cancelled { background:#3a3322; color:var(--warn); } .s-waiting { background:#2a3342; color:#a9b6c8; }
  .s-busy { background:#173a57; color:var(--accent); } .s-idle { background:#2a3342; color:var(--dim); }
  .bar { position:relative; height:16px; min-width:160px; background:#222b37; border-radius:4px; overflow:hidden; }
  .bar > span { position:absolute; left:0; top:0; bottom:0; background:linear-gradient(90deg,#2f7fc1,var(--accent)); transition:width .4s; }
  .bar.done > span { background:var(--ok); } .bar.bad > span { background:var(--bad); }
  .bar > em { position:absolute; left:0; right:0; text-align:center; font-style:normal; font-size:11px; line-height:16px; color:#fff; text-shadow:0 0 2px #000; }
  button, select, input { font:inherit; color:var(--text); background:#1f2731; border:1px solid var(--line); border-radius:5px; padding:4px 9px; }
  button { cursor:pointer; } button:hover { border-color:var(--accent); }
  button.link { background:none; border:none; color:var(--accent); padding:0; }
  a { color:var(--accent); text-decoration:none; } a:hover { text-decoration:underline; }
  .empty { color:var(--dim); padding:14px; text-align:center; }
  form.submit { display:flex; gap:8px; padding:10px 14px; flex-wrap:wrap; }
  form.submit input[name=prompt] { flex:1; min-width:240px; }
  .err { color:var(--bad); font-size:12.5px; padding:0 14px 10px; }
  #auth { display:none; } #auth input { width:320px; }
  .dim { color:var(--dim); }
</style>
</head>
<body>
<header>
  <h1>stas render service</h1>
  <span class="pill"><span id="redis-dot" class="dot"></span><span id="redis-text">connecting…</span></span>
  <span class="sub" id="updated"></span>
</header>
<main>
  <section id="auth">
    <h2>Token required</h2>
    <form id="auth-form" style="padding:12px 14px;display:flex;gap:8px">
      <input id="token" type="password" placeholder="bearer token" autocomplete="off">
      <button type="submit">Use token</button>
    </form>
  </section>
  <div class="cards" id="cards"></div>
  <section>
    <h2>Submit</h2>
    <form class="submit" id="submit-form">
      <input name="prompt" placeholder="prompt" maxlength="8192" required>
      <input name="model" value="tiny" size="10" title="model">
      <input name="steps" type="number" min="1" max="1000" placeholder="steps" style="width:80px">
      <input name="seed" type="number" min="0" placeholder="seed" style="width:90px">
      <button type="submit">Queue</button>
    </form>
    <div class="err" id="submit-error"></div>
  </section>
  <section>
    <h2><span class="grow">Jobs</span>
      <select id="state-filter"><option value="">all states</option><option>queued</option><option>running</option>
        <option>done</option><option>failed</option><option>cancelled</option><option>dead</option></select>
      <select id="dataset-filter"><option value="">all datasets</option></select>
    </h2>
    <table>
      <thead><tr><th>job</th><th>prompt</th><th>state</th><th>progress</th><th>attempts</th><th>worker</th><th>created</th><th></th></tr></thead>
      <tbody id="jobs"></tbody>
    </table>
  </section>
  <section>
    <h2>Ready queues</h2>
    <table>
      <thead><tr><th>model</th><th>waiting jobs</th><th>served by a group</th></tr></thead>
      <tbody id="queues"></tbody>
    </table>
  </section>
  <section>
    <h2>Worker groups</h2>
    <table>
      <thead><tr><th>group</th><th>model</th><th>ranks</th><th>host</th><th>state</th><th>job</th><th>done / failed</th><th>last seen</th></tr></thead>
      <tbody id="workers"></tbody>
    </table>
  </section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let token = localStorage.getItem("stas-token") || "";
const history = [];

function el(tag, props, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

async function api(path, options) {
  const o = Object.assign({ headers: {} }, options || {});
  if (token) o.headers["Authorization"] = "Bearer " + token;
  const r = await fetch(path, o);
  if (r.status === 401) {
    $("auth").style.display = "block";
    $("redis-dot").className = "dot bad"; $("redis-text").textContent = "token required";
    throw new Error("unauthorized");
  }
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(typeof body.error === "string" ? body.error : (body.error && body.error.message) || r.statusText);
  return body;
}

function ago(ms) {
  if (!ms) return "";
  const s = Math.max(0, (Date.now() - ms) / 1000);
  if (s < 60) return Math.round(s) + "s ago";
  if (s < 3600) return Math.round(s / 60) + "m ago";
  return Math.round(s / 3600) + "h ago";
}

function inFuture(ms) {
  const s = Math.max(0, (ms - Date.now()) / 1000);
  return s < 1 ? "now" : "in " + (s < 60 ? Math.round(s) + "s" : Math.round(s / 60) + "m");
}

function plural(n, word) { return n + " " + word + (n === 1 ? "" : "s"); }

function sparkline(values) {
  const w = 110, h = 22, max = Math.max(1e-9, ...values);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", w); svg.setAttribute("height", h);
  const pts = values.map((v, i) => (i * w / Math.max(1, values.length - 1)).toFixed(1) + "," + (h - 1 - v / max * (h - 2)).toFixed(1));
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", pts.join(" ")); line.setAttribute("fill", "none");
  line.setAttribute("stroke", "#5fb3f9"); line.setAttribute("stroke-width", "1.5");
  svg.append(line);
  return svg;
}

function card(label, value, sub, extra) {
  return el("div", { class: "card" }, el("div", { class: "k", text: label }), el("div", { class: "v", text: value }),
            sub ? el("div", { class: "s", text: sub }) : null, extra);
}

function progressBar(job) {
  const p = job.progress || {};
  // A queued job may carry its previous attempt's progress; show it as waiting, not as progress.
  const waiting = job.state === "queued";
  const pct = job.state === "done" ? 100 : (p.steps && !waiting ? Math.min(100, 100 * p.step / p.steps) : 0);
  const cls = job.state === "done" ? "bar done" : (["failed", "dead"].includes(job.state) ? "bar bad" : "bar");
  let label = waiting ? "waiting" : (p.steps ? p.step + " / " + p.steps : "");
  if (waiting && job.retry_at) label = "retry " + inFuture(Date.parse(job.retry_at));
  if (p.stage && job.state === "running") label += (label ? " · " : "") + p.stage;
  const span = el("span"); span.style.width = pct.toFixed(1) + "%";
  return el("div", { class: cls }, span, el("em", { text: label }));
}

async function cancelJob(id) {
  try { await api("/jobs/" + id, { method: "DELETE" }); refresh(); } catch (e) { alert(e.message); }
}

function renderStats(s) {
  const ok = s.redis === "ok";
  $("redis-dot").className = "dot " + (ok ? "ok" : "bad");
  $("redis-text").textContent = ok ? "redis ok" : "redis: " + s.redis;
  const j = s.jobs || {}, w = s.workers || {}, t = s.totals || {};
  history.push(s.steps_per_second || 0); if (history.length > 60) history.shift();
  const cards = $("cards"); cards.replaceChildren(
    card("queued", j.queued ?? "–", s.delayed ? s.delayed + " waiting to retry" : ""),
    card("running", j.running ?? "–"), card("done", j.done ?? "–"),
    card("failed / dead", (j.failed ?? 0) + " / " + (j.dead ?? 0)), card("cancelled", j.cancelled ?? "–"),
    card("worker groups", w.connected ?? 0, (w.busy ?? 0) + " busy · " + (w.waiting ?? 0) + " waiting"),
    card("steps / s", (s.steps_per_second || 0).toFixed(2), "", sparkline(history.length > 1 ? history : [0, 0])),
    card("submitted", t.submitted ?? 0, (t.completed ?? 0) + " completed"),
    card("lease expiries", t.lease_expired ?? 0, plural(t.retried ?? 0, "retry").replace("retrys", "retries")));
  const sel = $("dataset-filter"), current = sel.value;
  const names = s.datasets || [];
  if (sel.options.length - 1 !== names.length) {
    sel.replaceChildren(el("option", { value: "", text: "all datasets" }), ...names.map((n) => el("option", { value: n, text: n })));
    sel.value = current;
  }
}

function renderQueues(s) {
  const queues = Object.entries(s.queues || {});
  const rows = queues.map(([name, q]) => el("tr", {},
    el("td", { class: "mono", text: name }), el("td", { text: q.depth }),
    el("td", {}, el("span", { class: "badge " + (q.served ? "s-running" : "s-failed"), text: q.served ? "yes" : "no group" }))));
  $("queues").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 3, class: "empty", text: "no queued jobs" }))]));
}

function renderDataset(name, c) {
  if (!name || !c) return;
  const n = c.counts || {};
  $("cards").append(card("dataset " + name, (n.done ?? 0) + " / " + (c.total ?? 0),
    c.percent_done + "% done · " + (n.queued ?? 0) + " queued · " + (n.running ?? 0) + " running · " +
    ((n.failed ?? 0) + (n.dead ?? 0)) + " failed"));
}

function renderJobs(list) {
  const rows = list.jobs.map((job) => {
    const actions = [];
    if (job.state === "done") actions.push(el("a", { href: job.video_url, target: "_blank", text: "video" }));
    if (job.state === "queued" || job.state === "running")
      actions.push(el("button", { class: "link", text: "cancel", onclick: () => cancelJob(job.id) }));
    const prompt = el("td", { class: "prompt", title: (job.prompt || "") + (job.error ? "\n\nerror: " + job.error : "") },
      job.prompt || "", job.dataset ? el("span", { class: "chip", text: job.dataset }) : null,
      job.error && job.state !== "done" ? el("div", { class: "errline", text: job.error }) : null);
    return el("tr", {},
      el("td", { class: "mono", title: job.id, text: job.id.slice(0, 10) }),
      prompt,
      el("td", {}, el("span", { class: "badge s-" + job.state, text: job.state })),
      el("td", {}, progressBar(job)),
      el("td", { text: job.attempts + " / " + job.max_attempts }),
      el("td", { class: "mono", text: job.worker || "" }),
      el("td", { class: "dim", text: job.created_at ? ago(Date.parse(job.created_at)) : "" }),
      el("td", {}, ...actions));
  });
  $("jobs").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 8, class: "empty", text: "no jobs" }))]));
}

function renderWorkers(list) {
  const rows = list.workers.map((w) => el("tr", {},
    el("td", { class: "mono", text: w.worker }), el("td", { class: "mono", text: w.model }),
    el("td", { text: w.group_size }), el("td", { text: w.host || w.peer }),
    el("td", {}, el("span", { class: "badge s-" + w.state, text: w.state })),
    el("td", {}, w.job ? progressBar({ state: "running", progress: w.job }) : ""),
    el("td", { text: w.jobs_done + " / " + w.jobs_failed }),
    el("td", { class: "dim", text: ago(w.last_seen_ms) })));
  $("workers").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 8, class: "empty", text: "no worker groups connected" }))]));
}

async function refresh() {
  const state = $("state-filter").value, dataset = $("dataset-filter").value;
  const q = new URLSearchParams({ limit: "50" });
  if (state) q.set("state", state);
  if (dataset) q.set("dataset", dataset);
  try {
    const [stats, jobs, workers, counts] = await Promise.all([api("/stats"), api("/jobs?" + q), api("/workers"),
      dataset ? api("/counts?" + new URLSearchParams({ dataset })) : Promise.resolve(null)]);
    $("auth").style.display = "none";
    renderStats(stats); renderQueues(stats); renderDataset(dataset, counts); renderJobs(jobs); renderWorkers(workers);
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    $("updated").textContent = "update failed: " + e.message;
  }
}

$("auth-form").addEventListener("submit", (e) => {
  e.preventDefault(); token = $("token").value.trim(); localStorage.setItem("stas-token", token); refresh();
});
$("submit-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = new FormData(e.target), spec = { prompt: f.get("prompt"), model: f.get("model") || "tiny" };
  if (f.get("steps")) spec.steps = Number(f.get("steps"));
  if (f.get("seed")) spec.seed = Number(f.get("seed"));
  try {
    await api("/jobs", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(spec) });
    $("submit-error").textContent = ""; e.target.prompt.value = ""; refresh();
  } catch (err) { $("submit-error").textContent = err.message; }
});
$("state-filter").addEventListener("change", refresh);
$("dataset-filter").addEventListener("change", refresh);
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
)html";
}

}  // namespace stas::coordinator
