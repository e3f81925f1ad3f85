// The self-contained HTML report of an MA analysis: the analysis JSON embedded in the page and drawn
// by inline JavaScript into inline SVG (line charts) and a canvas (the heatmap). No external assets, so
// the file can be mailed, archived or opened offline.
#include <string>

#include "steering/ma_analysis.h"

namespace stas::steering {

namespace {

// Escapes text for HTML element content.
std::string HtmlEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

constexpr const char* kHead = R"HTML(<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>)HTML";

constexpr const char* kStyle = R"HTML(</title>
<style>
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 18px 24px; color: #1d2433; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px 0; }
h2 { font-size: 16px; margin: 22px 0 4px 0; }
p.note { color: #55607a; font-size: 12.5px; margin: 2px 0 6px 0; max-width: 1300px; }
.meta { font-size: 13px; color: #333; }
.meta b { color: #000; }
.controls { margin: 10px 0; font-size: 13px; }
.controls select { margin: 0 14px 0 4px; font-size: 13px; }
.summary { display: flex; gap: 12px; flex-wrap: wrap; margin: 8px 0; }
.tile { border: 1px solid #d7dce6; border-radius: 6px; padding: 6px 12px; min-width: 150px; }
.tile .v { font-size: 20px; font-weight: 600; }
.tile .l { font-size: 11.5px; color: #55607a; }
svg text { font-size: 11px; fill: #333; }
table { border-collapse: collapse; font-size: 12px; }
th, td { border: 1px solid #d7dce6; padding: 3px 8px; text-align: left; }
th { background: #f1f3f8; }
.legend span { display: inline-block; margin-right: 14px; font-size: 12px; }
.swatch { display: inline-block; width: 14px; height: 4px; vertical-align: middle; margin-right: 4px; }
</style></head><body>
<h1>Massive-activation analysis</h1>
<div class="meta" id="meta"></div>
<div class="summary" id="summary"></div>
<div class="controls">Profile step <select id="step"></select> Block <select id="block"></select>
Hierarchy of <select id="hblock"></select></div>
<h2>1. MA magnitude vs token index</h2>
<p class="note">A token's MA magnitude is the largest |h| over the block's massive-activation channels. Grey dashed lines
start each latent frame; the red band is latent frame 0 (first-frame tokens); orange bands are the boundary tokens
(head and tail of each later frame) that STAS steers. Values are bin maxima so single-token spikes stay visible.</p>
<div id="profile"></div>
<h2>2. Block &times; token heatmap</h2>
<p class="note">Rows are transformer blocks (0 at the top), columns tokens (binned), colour the log MA magnitude at the selected step.</p>
<div id="heatmap"></div>
<h2>3. First-frame / boundary / interior hierarchy over denoising steps</h2>
<p class="note">Mean MA magnitude of each token class per step. The shaded window is STAS's default steering window [0, K), K = round(0.4 N).</p>
<div id="hier"></div>
<h2>4. Massive-activation channels per block</h2>
<p class="note">Channels whose peak |h| over real tokens reaches tau &times; the layer median, aggregated over all steps and runs:
detection rate and mean peak/median ratio.</p>
<div id="channels"></div>
<script id="analysis" type="application/json">)HTML";

constexpr const char* kScript = R"HTML(</script>
<script>
"use strict";
const A = JSON.parse(document.getElementById("analysis").textContent);
const G = A.grid, P = A.profiles, NB = A.num_blocks, NS = A.num_steps;
const TPF = G.tokens_per_frame, L = G.tokens;
const COLORS = {first_frame: "#d62728", boundary: "#ff7f0e", interior: "#1f77b4"};
const NAMES = {first_frame: "first frame", boundary: "boundary", interior: "interior"};

function fmt(v) {
  if (v === null || v === undefined || !isFinite(v)) return "-";
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-2)) return v.toExponential(2);
  return Number(v.toPrecision(3)).toString();
}
function esc(s) { return String(s).replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c])); }
function rec(step, block) { return A.records.find(r => r.step === step && r.block === block); }
function finite(arr) { const out = []; for (const v of arr) if (v !== null && isFinite(v)) out.push(v); return out; }
function minmax(arr) { let lo = Infinity, hi = -Infinity; for (const v of arr) { if (v < lo) lo = v; if (v > hi) hi = v; } return [lo, hi]; }

// A line chart in SVG. opts: width, height, xmin, xmax, series [{x:[], y:[], color, width, name}],
// bands [{x0, x1, color}], vlines [x], xlabel, ylabel, log (y axis), xticks [{x, label}].
function lineChart(opts) {
  const W = opts.width || 1280, H = opts.height || 330, m = {l: 72, r: 16, t: 14, b: 44};
  const pw = W - m.l - m.r, ph = H - m.t - m.b;
  let ys = [];
  for (const s of opts.series) ys = ys.concat(finite(s.y).filter(v => !opts.log || v > 0));
  if (ys.length === 0) return "<p>no data</p>";
  let [lo, hi] = minmax(ys);
  if (opts.log) { lo = Math.max(lo, hi * 1e-6); if (lo === hi) { lo /= 2; hi *= 2; } }
  else { lo = Math.min(0, lo); if (lo === hi) hi = lo + 1; hi *= 1.05; }
  const X = x => m.l + (x - opts.xmin) / Math.max(1e-9, opts.xmax - opts.xmin) * pw;
  const Y = opts.log ? (v => m.t + ph - (Math.log10(Math.max(v, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo)) * ph)
                     : (v => m.t + ph - (v - lo) / (hi - lo) * ph);
  const o = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}">`];
  o.push(`<rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}" fill="#fbfcfe" stroke="#c9cfdb"/>`);
  for (const b of (opts.bands || [])) {
    const x0 = X(b.x0), x1 = Math.max(X(b.x1), x0 + 0.8);
    o.push(`<rect x="${x0.toFixed(2)}" y="${m.t}" width="${(x1 - x0).toFixed(2)}" height="${ph}" fill="${b.color}"/>`);
  }
  // y grid and ticks
  let yt = [];
  if (opts.log) {
    const mults = Math.log10(hi / lo) < 2.5 ? [1, 2, 5] : [1];
    for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++)
      for (const k of mults) { const v = k * Math.pow(10, e); if (v >= lo * 0.999 && v <= hi * 1.001) yt.push(v); }
  }
  else { const step = Math.pow(10, Math.floor(Math.log10((hi - lo) / 4))); const n = Math.ceil((hi - lo) / step / 6); for (let v = Math.ceil(lo / (step * n)) * step * n; v <= hi; v += step * n) yt.push(v); }
  for (const v of yt) {
    const y = Y(v).toFixed(1);
    o.push(`<line x1="${m.l}" x2="${m.l + pw}" y1="${y}" y2="${y}" stroke="#e3e7ef"/>`);
    o.push(`<text x="${m.l - 6}" y="${y}" text-anchor="end" dominant-baseline="middle">${fmt(v)}</text>`);
  }
  for (const x of (opts.vlines || [])) {
    const xx = X(x).toFixed(2);
    o.push(`<line x1="${xx}" x2="${xx}" y1="${m.t}" y2="${m.t + ph}" stroke="#7a8499" stroke-dasharray="3,3" stroke-width="0.8"/>`);
  }
  for (const t of (opts.xticks || [])) {
    const xx = X(t.x).toFixed(1);
    o.push(`<line x1="${xx}" x2="${xx}" y1="${m.t + ph}" y2="${m.t + ph + 4}" stroke="#333"/>`);
    o.push(`<text x="${xx}" y="${m.t + ph + 16}" text-anchor="middle">${t.label}</text>`);
  }
  for (const s of opts.series) {
    let d = "", pen = false;
    for (let i = 0; i < s.y.length; i++) {
      const v = s.y[i];
      if (v === null || !isFinite(v) || (opts.log && v <= 0)) { pen = false; continue; }
      d += (pen ? "L" : "M") + X(s.x[i]).toFixed(2) + "," + Y(v).toFixed(2);
      pen = true;
    }
    o.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="${s.width || 1.4}" stroke-linejoin="round"/>`);
    if (s.dots) for (let i = 0; i < s.y.length; i++) if (s.y[i] !== null && (!opts.log || s.y[i] > 0))
      o.push(`<circle cx="${X(s.x[i]).toFixed(1)}" cy="${Y(s.y[i]).toFixed(1)}" r="2.4" fill="${s.color}"/>`);
  }
  o.push(`<text x="${m.l + pw / 2}" y="${H - 6}" text-anchor="middle">${esc(opts.xlabel || "")}</text>`);
  o.push(`<text transform="translate(14,${m.t + ph / 2}) rotate(-90)" text-anchor="middle">${esc(opts.ylabel || "")}</text>`);
  o.push("</svg>");
  return o.join("");
}

function frameTicks() {
  const t = [], every = Math.max(1, Math.ceil(G.frames / 24));
  for (let f = 0; f < G.frames; f += every) t.push({x: f * TPF, label: "f" + f});
  return t;
}
function frameLines() { const v = []; for (let f = 1; f < G.frames; f++) v.push(f * TPF); return v; }
function boundaryBands() {
  const b = [{x0: 0, x1: TPF, color: "rgba(214,39,40,0.10)"}];
  const mk = A.mask;
  for (let f = 1; f < G.frames; f++) {
    const s = f * TPF;
    if (mk.mode === "rows") {
      const w = Math.min(mk.width, TPF);
      if (w <= 0) continue;
      if (2 * w >= TPF) { b.push({x0: s, x1: s + TPF, color: "rgba(255,127,14,0.16)"}); continue; }
      b.push({x0: s, x1: s + w, color: "rgba(255,127,14,0.22)"});
      b.push({x0: s + TPF - w, x1: s + TPF, color: "rgba(255,127,14,0.22)"});
    } else {
      const c = mk.chunk_frames, pos = (f - 1) % c;
      if (pos === 0 || pos === c - 1 || f === G.frames - 1) b.push({x0: s, x1: s + TPF, color: "rgba(255,127,14,0.16)"});
    }
  }
  return b;
}
function profileFor(step, block) {
  const d = P.data.find(e => e.step === step);
  return d && d.blocks[block] ? d.blocks[block] : [];
}

function drawProfile() {
  const step = +document.getElementById("step").value, block = +document.getElementById("block").value;
  const y = profileFor(step, block);
  const x = y.map((_, i) => i * P.bin_tokens);
  const r = rec(step, block);
  const detected = r && r.channels.length ? r.channels.map(c => c.channel).join(", ") : "none over tau (strongest candidate shown)";
  document.getElementById("profile").innerHTML =
    `<div class="legend"><span><i class="swatch" style="background:#1f4e9c"></i>block ${block}, step ${step}: MA channels ${esc(detected)}</span>` +
    `<span><i class="swatch" style="background:rgba(214,39,40,0.4)"></i>first frame</span>` +
    `<span><i class="swatch" style="background:rgba(255,127,14,0.5)"></i>boundary tokens</span></div>` +
    lineChart({xmin: 0, xmax: L, log: true, series: [{x, y, color: "#1f4e9c", width: 1.1}], bands: boundaryBands(),
               vlines: frameLines(), xticks: frameTicks(), xlabel: `token index (latent frame f = ${TPF} tokens; bin = ${P.bin_tokens} token(s))`,
               ylabel: "MA magnitude (log)"});
}

function viridis(t) {
  const s = [[68,1,84],[72,40,120],[62,74,137],[49,104,142],[38,130,142],[31,158,137],[53,183,121],[109,205,89],[180,222,44],[253,231,37]];
  t = Math.min(1, Math.max(0, t)) * (s.length - 1);
  const i = Math.min(s.length - 2, Math.floor(t)), f = t - i;
  return s[i].map((c, k) => Math.round(c + (s[i + 1][k] - c) * f));
}

function drawHeatmap() {
  const step = +document.getElementById("step").value;
  const d = P.data.find(e => e.step === step);
  const host = document.getElementById("heatmap");
  if (!d) { host.innerHTML = "<p>no profile at this step</p>"; return; }
  const bins = P.bins, W = 1350, ml = 72, mr = 86, mt = 6, rowH = Math.max(6, Math.min(22, Math.floor(420 / Math.max(1, NB))));
  const pw = 1280 - 72 - 16, H = mt + NB * rowH + 40;  // the same x scale as the line charts
  let vals = [];
  for (const row of d.blocks) vals = vals.concat(finite(row).filter(v => v > 0));
  let [lo, hi] = vals.length ? minmax(vals) : [1, 10];
  lo = Math.max(lo, hi * 1e-6);
  const l0 = Math.log10(lo), l1 = Math.log10(hi) + 1e-9;
  const img = document.createElement("canvas");
  img.width = Math.max(1, bins); img.height = Math.max(1, NB);
  const ictx = img.getContext("2d"), data = ictx.createImageData(img.width, img.height);
  for (let b = 0; b < NB; b++) {
    const row = d.blocks[b] || [];
    for (let i = 0; i < bins; i++) {
      const v = row[i];
      const c = (v === undefined || v === null || v <= 0) ? [235, 235, 235] : viridis((Math.log10(Math.max(v, lo)) - l0) / (l1 - l0));
      const p = 4 * (b * img.width + i);
      data.data[p] = c[0]; data.data[p + 1] = c[1]; data.data[p + 2] = c[2]; data.data[p + 3] = 255;
    }
  }
  ictx.putImageData(data, 0, 0);
  const cv = document.createElement("canvas");
  cv.width = W; cv.height = H;
  const ctx = cv.getContext("2d");
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, W, H);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(img, ml, mt, pw, NB * rowH);
  ctx.strokeStyle = "rgba(255,255,255,0.75)"; ctx.lineWidth = 1;
  for (const x of frameLines()) { const xx = Math.round(ml + x / L * pw) + 0.5; ctx.beginPath(); ctx.moveTo(xx, mt); ctx.lineTo(xx, mt + NB * rowH); ctx.stroke(); }
  ctx.fillStyle = "#333"; ctx.font = "11px sans-serif"; ctx.textAlign = "right"; ctx.textBaseline = "middle";
  const every = Math.max(1, Math.ceil(NB * 12 / (NB * rowH)));
  for (let b = 0; b < NB; b += every) ctx.fillText("block " + b, ml - 6, mt + (b + 0.5) * rowH);
  ctx.textAlign = "center"; ctx.textBaseline = "top";
  for (const t of frameTicks()) ctx.fillText(t.label, ml + t.x / L * pw, mt + NB * rowH + 4);
  ctx.fillText("token index (latent frames f0, f1, ...)", ml + pw / 2, mt + NB * rowH + 22);
  // colour bar
  const bx = ml + pw + 14, bh = NB * rowH;
  for (let i = 0; i < bh; i++) { const c = viridis(1 - i / bh); ctx.fillStyle = `rgb(${c[0]},${c[1]},${c[2]})`; ctx.fillRect(bx, mt + i, 14, 1); }
  ctx.fillStyle = "#333"; ctx.textAlign = "left"; ctx.textBaseline = "middle";
  ctx.fillText(fmt(hi), bx + 18, mt + 6); ctx.fillText(fmt(lo), bx + 18, mt + bh - 6);
  host.innerHTML = "";
  host.appendChild(cv);
}

function classSeries(block) {
  const out = {first_frame: [], boundary: [], interior: []}, xs = [];
  for (let s = 0; s < NS; s++) {
    xs.push(s);
    for (const k of Object.keys(out)) {
      let sum = 0, n = 0;
      for (let b = 0; b < NB; b++) {
        if (block >= 0 && b !== block) continue;
        const r = rec(s, b);
        if (r && r[k] !== null && isFinite(r[k])) { sum += r[k]; n++; }
      }
      out[k].push(n ? sum / n : null);
    }
  }
  return {xs, out};
}

function drawHierarchy() {
  const block = +document.getElementById("hblock").value;
  const {xs, out} = classSeries(block);
  const series = Object.keys(out).map(k => ({x: xs, y: out[k], color: COLORS[k], width: 2, dots: true, name: k}));
  const K = A.default_steered_steps;
  const ticks = [];
  const every = Math.max(1, Math.ceil(NS / 25));
  for (let s = 0; s < NS; s += every) ticks.push({x: s, label: String(s)});
  document.getElementById("hier").innerHTML =
    '<div class="legend">' + Object.keys(out).map(k => `<span><i class="swatch" style="background:${COLORS[k]}"></i>${NAMES[k]} tokens</span>`).join("") +
    `<span>${block < 0 ? "mean over all blocks" : "block " + block}</span></div>` +
    lineChart({xmin: -0.5, xmax: Math.max(0.5, NS - 0.5), log: true, series, height: 300,
               bands: K > 0 ? [{x0: -0.5, x1: K - 0.5, color: "rgba(44,160,44,0.08)"}] : [],
               xticks: ticks, xlabel: "denoising step", ylabel: "mean MA magnitude (log)"});
}

function drawChannels() {
  const rows = [];
  for (let b = 0; b < NB; b++) {
    const agg = {};
    let obs = 0, det = 0;
    for (const r of A.records) {
      if (r.block !== b) continue;
      obs += r.observations; det += r.detected_fraction * r.observations;
      for (const c of r.channels) {
        const a = agg[c.channel] || (agg[c.channel] = {n: 0, ratio: 0});
        a.n += c.detections; a.ratio += c.mean_ratio * c.detections;
      }
    }
    const list = Object.keys(agg).map(c => ({c: +c, n: agg[c].n, ratio: agg[c].ratio / agg[c].n}))
                   .sort((p, q) => q.n - p.n || q.ratio - p.ratio).slice(0, A.k);
    const cells = list.map(e => `${e.c} <small>(${fmt(e.ratio)}&times;, ${Math.round(100 * e.n / Math.max(1, obs))}%)</small>`).join(", ");
    const r0 = rec(0, b);
    rows.push(`<tr><td>${b}</td><td>${obs ? Math.round(100 * det / obs) : 0}%</td><td>${cells || "-"}</td>` +
              `<td>${r0 ? fmt(r0.first_frame) : "-"}</td><td>${r0 ? fmt(r0.boundary) : "-"}</td><td>${r0 ? fmt(r0.interior) : "-"}</td></tr>`);
  }
  document.getElementById("channels").innerHTML =
    "<table><tr><th>block</th><th>detected in</th><th>MA channels (mean peak/median, detection rate)</th>" +
    "<th>first frame @0</th><th>boundary @0</th><th>interior @0</th></tr>" + rows.join("") + "</table>";
}

function init() {
  const runs = A.runs || [];
  const prompts = runs.map(r => r.prompt).filter(p => p);
  document.getElementById("meta").innerHTML =
    `<b>model</b> ${esc(A.model)} &middot; <b>grid</b> ${G.frames} latent frames &times; ${G.rows} &times; ${G.cols} = ${L} tokens` +
    ` &middot; <b>blocks</b> ${NB} &middot; <b>steps</b> ${NS} &middot; <b>tau</b> ${A.tau} &middot; <b>k</b> ${A.k}` +
    ` &middot; <b>branch</b> ${esc(A.branch)} &middot; <b>mask</b> ${esc(A.mask.description)}` +
    ` &middot; <b>runs</b> ${runs.length}` + (prompts.length ? ` &middot; <b>prompt</b> &ldquo;${esc(prompts[0])}&rdquo;${prompts.length > 1 ? " +" + (prompts.length - 1) : ""}` : "");
  // Summary tiles at step 0, mean over blocks.
  const {out} = classSeries(-1);
  const ff = out.first_frame[0], bd = out.boundary[0], it = out.interior[0];
  const tiles = [["first frame / interior @ step 0", ff / it], ["boundary / interior @ step 0", bd / it],
                 ["first frame / boundary @ step 0", ff / bd],
                 ["tokens: first / boundary / interior", null, `${A.token_counts.first_frame} / ${A.token_counts.boundary} / ${A.token_counts.interior}`]];
  document.getElementById("summary").innerHTML = tiles.map(t =>
    `<div class="tile"><div class="v">${t[2] !== undefined ? t[2] : fmt(t[1]) + "&times;"}</div><div class="l">${t[0]}</div></div>`).join("");

  const stepSel = document.getElementById("step"), blockSel = document.getElementById("block"), hSel = document.getElementById("hblock");
  for (const d of P.data) stepSel.add(new Option("step " + d.step, d.step));
  hSel.add(new Option("mean over blocks", -1));
  let best = 0, bestV = -1;
  for (let b = 0; b < NB; b++) {
    blockSel.add(new Option("block " + b, b));
    hSel.add(new Option("block " + b, b));
    const r = P.data.length ? rec(P.data[0].step, b) : null;
    if (r && r.first_frame !== null && r.first_frame > bestV) { bestV = r.first_frame; best = b; }
  }
  blockSel.value = best;
  stepSel.onchange = () => { drawProfile(); drawHeatmap(); };
  blockSel.onchange = drawProfile;
  hSel.onchange = drawHierarchy;
  drawProfile(); drawHeatmap(); drawHierarchy(); drawChannels();
}
init();
</script>
</body></html>
)HTML";

}  // namespace

std::string RenderMaReportHtml(const Json& analysis) {
  std::string json = analysis.dump();
  // "</" can only occur inside JSON strings, where "<\/" means the same; this keeps "</script>" in a
  // prompt from ending the data block.
  std::string safe;
  safe.reserve(json.size());
  for (size_t i = 0; i < json.size(); ++i) {
    if (json[i] == '<' && i + 1 < json.size() && json[i + 1] == '/') {
      safe += "<\\/";
      ++i;
    } else {
      safe += json[i];
    }
  }
  const std::string title = "STAS MA analysis - " + analysis.value("model", std::string("model"));
  return std::string(kHead) + HtmlEscape(title) + kStyle + safe + kScript;
}

}  // namespace stas::steering
