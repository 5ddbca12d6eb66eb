"""The bragg_dask page's HTML: one static document whose script polls ``state.json`` once a second and
swaps the frame's picture when new tiles have landed (no dependency beyond the browser)."""

PAGE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>bragg_dask</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { margin: 0; font: 14px/1.4 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222;
         background: #f6f7f9; }
  header { display: flex; align-items: center; gap: 18px; padding: 8px 16px; background: #ececec;
           border-bottom: 1px solid #d4d4d4; }
  header b { font-size: 16px; }
  header a { color: #333; text-decoration: none; }
  header a:hover { text-decoration: underline; }
  main { display: grid; grid-template-columns: minmax(320px, 560px) minmax(320px, 1fr); gap: 18px; padding: 16px; }
  section { background: #fff; border: 1px solid #dcdcdc; border-radius: 4px; padding: 12px 14px; }
  h2 { font-size: 14px; margin: 0 0 8px 0; color: #555; font-weight: 600; }
  #frame { width: 100%; image-rendering: pixelated; background: #111; display: block; }
  table { border-collapse: collapse; width: 100%; }
  td, th { padding: 3px 6px; text-align: left; border-bottom: 1px solid #eee; }
  td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
  .bar { height: 14px; background: #e4e6ea; border-radius: 3px; overflow: hidden; margin: 8px 0; }
  .bar div { height: 100%; background: #3d7bd9; width: 0; }
  .phase { display: inline-block; padding: 1px 8px; border-radius: 10px; background: #3d7bd9; color: #fff;
           font-size: 12px; }
  .phase.complete { background: #2e9d57; } .phase.failed, .phase.interrupted { background: #c8412f; }
  #thumbs { display: flex; flex-wrap: wrap; gap: 8px; }
  #thumbs figure { margin: 0; text-align: center; font-size: 12px; color: #555; }
  #thumbs img { width: 112px; height: 112px; object-fit: contain; background: #111; image-rendering: pixelated; }
  .legend span { display: inline-block; width: 12px; height: 12px; vertical-align: middle; margin: 0 4px 0 10px; }
  .muted { color: #777; }
  #rate { width: 100%; height: 90px; }
  .wide { grid-column: 1 / span 2; }
</style>
</head>
<body>
<header><b>bragg_dask</b><a id="dask-status" href="status">Dask status</a><a id="dask-workers" href="workers">Workers</a>
<a id="dask-tasks" href="tasks">Task stream</a><span id="runs" class="muted"></span></header>
<main>
<section>
  <h2>Current frame <span id="frame-label" class="muted"></span></h2>
  <img id="frame" alt="the current frame, log scale">
  <div class="legend muted">log(1 + photons), to the frame's maximum<span style="background:linear-gradient(90deg,#040618,#281860,#8c2878,#ec6c34,#fcc448,#fffcd6)"></span>
    <span style="background:repeating-linear-gradient(45deg,#3a3e46 0 3px,#585e68 3px 6px)"></span>tiles not done
    <span style="background:#000;border:1px solid #999"></span>nothing rendered</div>
</section>
<section>
  <h2 id="title">bragg_dask: waiting for a run</h2>
  <div><span id="phase" class="phase">-</span> <span id="store" class="muted"></span></div>
  <div class="bar"><div id="bar"></div></div>
  <table id="figures">
    <tr><td>tiles done</td><td class="n" id="tiles"></td></tr>
    <tr><td>frames done</td><td class="n" id="frames"></td></tr>
    <tr><td>rate</td><td class="n" id="rate-now"></td></tr>
    <tr><td>elapsed</td><td class="n" id="elapsed"></td></tr>
    <tr><td>time left (estimate)</td><td class="n" id="eta"></td></tr>
    <tr><td>run</td><td class="n" id="config"></td></tr>
  </table>
  <h2 style="margin-top:12px">Evaluations per second</h2>
  <svg id="rate" viewBox="0 0 400 90" preserveAspectRatio="none"><polyline id="rate-line" fill="none"
    stroke="#3d7bd9" stroke-width="1.5" points=""/></svg>
  <div class="muted" id="rate-scale"></div>
  <h2 style="margin-top:12px">Tasks on the scheduler</h2>
  <table id="tasks"><tr><th>task</th><th class="n">waiting</th><th class="n">processing</th><th class="n">finished</th><th class="n">erred</th></tr></table>
</section>
<section class="wide">
  <h2>Last finished frames <span class="muted">(a dataset's frames are pictured at most one a second per
    worker)</span></h2>
  <div id="thumbs" class="muted">none yet</div>
</section>
</main>
<script>
"use strict";
const base = location.pathname.replace(/\/+$/, "");
const root = base.replace(/bragg$/, "");
for (const [id, page] of [["dask-status", "status"], ["dask-workers", "workers"], ["dask-tasks", "tasks"]])
  document.getElementById(id).href = root + page;
const params = new URLSearchParams(location.search);
let run = params.get("run") || "", shown = "", thumbsShown = "";
const $ = (id) => document.getElementById(id);
const num = (x) => x.toLocaleString("en-US");
const esc = (t) => String(t).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"})[c]);
function si(x) {
  if (!x) return "0";
  const units = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];
  for (const [v, u] of units) if (x >= v) return (x / v).toFixed(x / v >= 100 ? 0 : 2) + " " + u;
  return x.toFixed(0);
}
function hms(s) {
  if (s === null || s === undefined) return "-";
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor(s % 3600 / 60), r = s % 60;
  return (h ? h + ":" + String(m).padStart(2, "0") : m) + ":" + String(r).padStart(2, "0");
}
function tasks(t) {
  let rows = '<tr><th>task</th><th class="n">waiting</th><th class="n">processing</th><th class="n">finished</th>' +
             '<th class="n">erred</th></tr>';
  for (const [name, c] of Object.entries(t)) {
    const waiting = (c.waiting || 0) + (c.queued || 0) + (c["no-worker"] || 0);
    const done = (c.memory || 0) + (c.released || 0);
    rows += `<tr><td>${esc(name)}</td><td class="n">${num(waiting)}</td><td class="n">${num(c.processing || 0)}</td>` +
            `<td class="n">${num(done)}</td><td class="n">${num(c.erred || 0)}</td></tr>`;
  }
  $("tasks").innerHTML = rows;
}
function plot(h) {
  if (!h.length) { $("rate-line").setAttribute("points", ""); $("rate-scale").textContent = ""; return; }
  const t1 = Math.max(h[h.length - 1][0], 1), top = Math.max(...h.map((p) => p[1]), 1);
  $("rate-scale").textContent = `peak ${si(top)}evaluations/s over 1 s; the last ${hms(t1)} of the run`;
  $("rate-line").setAttribute("points", h.map((p) => `${(p[0] / t1 * 400).toFixed(1)},${(88 - p[1] / top * 84).toFixed(1)}`).join(" "));
}
function show(s) {
  const r = s.run;
  $("runs").innerHTML = s.runs.length > 1 ? "runs: " + s.runs.map((x) =>
    `<a href="?run=${encodeURIComponent(x.run)}">${esc(x.title)} (${esc(x.phase)})</a>`).join(" | ") : "";
  tasks(s.tasks);
  if (!r) return;
  const i = r.info;
  $("title").textContent = i.title || r.run;
  $("store").textContent = i.store || "";
  $("phase").textContent = r.phase + (r.error ? ": " + r.error : "");
  $("phase").className = "phase " + r.phase;
  const done = r.tiles_complete, total = r.tiles_total;
  $("bar").style.width = (100 * Math.max(done, r.tiles_before + r.tiles_computed) / Math.max(total, 1)).toFixed(1) + "%";
  $("tiles").textContent = `${num(done)} of ${num(total)}` + (r.tiles_before ? ` (${num(r.tiles_before)} before this run)` : "") +
                           (r.tiles_computed > r.tiles_stored ? `, ${num(r.tiles_computed - r.tiles_stored)} computed, being written` : "");
  $("frames").textContent = `${num(r.frames_done)} of ${num(r.frames_total)}`;
  $("rate-now").textContent = si(r.rate) + "evaluations/s";
  $("elapsed").textContent = hms(r.elapsed);
  $("eta").textContent = r.phase === "complete" ? "0:00" : hms(r.eta);
  $("config").textContent = `${i.shape[0]} x ${i.shape[1]} px, tiles ${i.tile[0]} x ${i.tile[1]}, ${i.dtype}, ${i.device}, parity ${i.parity}`;
  plot(r.history);
  const key = r.run + "/" + r.version;
  if (key !== shown) {
    shown = key;
    const f = r.current_frame === null ? "" : r.current_frame;
    $("frame").src = `${base}/frame.png?run=${encodeURIComponent(r.run)}&frame=${f}&v=${r.version}`;
    $("frame-label").textContent = f === "" ? "(no tile yet)" : `frame ${f} of ${r.frames_total}`;
  }
  const tk = r.run + "/" + r.thumbs.join(",");
  if (tk !== thumbsShown) {
    thumbsShown = tk;
    $("thumbs").innerHTML = r.thumbs.length ? r.thumbs.map((f) => `<figure><img src="${base}/thumb.png?run=` +
      `${encodeURIComponent(r.run)}&frame=${f}" alt="frame ${f}" onerror="this.parentNode.remove()"><figcaption>frame ${f}</figcaption></figure>`).join("") : "none yet";
  }
}
async function poll() {
  try {
    const resp = await fetch(`${base}/state.json?run=${encodeURIComponent(run)}`, {cache: "no-store"});
    if (resp.ok) show(await resp.json());
  } catch (e) { $("phase").textContent = "scheduler not answering"; }
  setTimeout(poll, 1000);
}
poll();
</script>
</body>
</html>
"""
