// The Learn page: a session on the server trains; this script asks it to step, draws its state,
// and explains what is clicked. Every number comes from the server's state (mnist_mlp/learn/),
// except each link's gradient, which the page computes as the textbook writes it: the
// activation at the link's start times the sensitivity at its end.
"use strict";

const $ = (id) => document.getElementById(id);
const RED = [214, 39, 40], BLUE = [31, 119, 180];
const MINUS = "\u2212";
const STORE = "mnist_mlp.learn";
const HEARTBEAT_MS = 20000;
const MAX_LINKS = 200; // per layer pair: more lines than this are a hairball, not a picture

// One number format everywhere: `digits` significant digits, as 1.234e-5 when small or large.
function fmt(v, digits = 4) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (!Number.isFinite(v)) return v > 0 ? "∞" : `${MINUS}∞`;
  if (v === 0) return "0";
  const a = Math.abs(v);
  const text = a < 1e-3 || a >= 1e5 ? a.toExponential(digits - 1) : a.toPrecision(digits);
  return (v < 0 ? MINUS : "") + text;
}
const sig = (v) => fmt(v, 7); // the chain-rule checks: seven significant digits

const app = {
  id: null, state: null, playing: false, view: "forward", selected: null, layout: null,
  stepsPerFrame: 10, busy: false, reveal: 99, loop: null, trace: null, lesson: null,
  log: [], stats: { frames: 0, fps: 0, stepsPerSecond: 0, since: performance.now(), stepsSince: 0 },
};
window.learn = app; // for the browser tests and the curious

// --- talking to the server ---------------------------------------------------------------------

async function call(method, path, body) {
  const options = { method, headers: {} };
  if (body instanceof FormData) options.body = body;
  else if (body !== undefined) {
    options.body = JSON.stringify(body);
    options.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, options);
  if (response.status === 204) return null;
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || `${response.status}`);
  return data;
}
const api = (path) => `/api/learn${path}?compact=true`;

// A packed array (float64 bytes in base64) as the nested lists the drawing code reads.
function unpack(p) {
  if (!p || p.float64 === undefined) return p;
  const bin = atob(p.float64), bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  const flat = new Float64Array(bytes.buffer);
  if (p.shape.length === 1) return Array.from(flat);
  const cols = p.shape[1];
  return Array.from({ length: p.shape[0] }, (_, j) => Array.from(flat.subarray(j * cols, (j + 1) * cols)));
}

// dL/dW_l = a_{l-1} (outer) dz_l, and dL/db_l = dz_l, for the followed digit.
function gradients(state) {
  const f = state.follow, x = f.pixels.flat().map((v) => v * state.input.scale + state.input.offset);
  const inputs = [x, ...f.a.slice(0, -1)], grads = {};
  f.dz.forEach((dz, i) => {
    grads[`W${i + 1}`] = inputs[i].map((a) => dz.map((d) => a * d));
    grads[`b${i + 1}`] = dz.slice();
  });
  return grads;
}

function decode(state) {
  for (const k of Object.keys(state.params)) state.params[k] = unpack(state.params[k]);
  if (state.last_update) {
    const before = state.last_update.params_before;
    for (const k of Object.keys(before)) before[k] = unpack(before[k]);
  }
  state.follow.grads = gradients(state);
  return state;
}

// --- the settings, checked here first, in words ----------------------------------------------------

const RULES = {
  hidden: (v) => /^\s*\d+\s*([,x ]\s*\d+\s*)?$/.test(v) && v.split(/[ ,x]+/).filter(Boolean).every((n) => +n >= 1 && +n <= 64)
    ? null : "hidden layers: '16' or '32,16' (1 to 64 neurons each)",
  lr: (v) => v.trim() !== "" && +v > 0 && +v <= 10 ? null : "learning rate: a number above 0, at most 10",
  batch: (v) => /^\s*\d+\s*$/.test(v) && +v >= 1 && +v <= 256 ? null : "batch size: a whole number from 1 to 256",
  momentum: (v) => v.trim() !== "" && +v >= 0 && +v < 1 ? null : "momentum: a number from 0 up to (not including) 1",
  l2: (v) => v.trim() !== "" && +v >= 0 && Number.isFinite(+v) ? null : "L2: a number, 0 or more",
  seed: (v) => /^\s*\d+\s*$/.test(v) ? null : "seed: a whole number, 0 or more",
};

function settings() {
  for (const [id, rule] of Object.entries(RULES)) {
    const message = rule($(id).value);
    if (message) throw new Error(message);
  }
  return {
    hidden: $("hidden").value.split(/[ ,x]+/).filter(Boolean).map(Number),
    activation: $("activation").value, lr: Number($("lr").value),
    batch_size: Number($("batch").value), momentum: Number($("momentum").value),
    l2: Number($("l2").value), seed: Number($("seed").value),
  };
}

function fill(config) {
  $("hidden").value = config.hidden.join(","); $("activation").value = config.activation;
  $("lr").value = config.lr; $("batch").value = config.batch_size; $("momentum").value = config.momentum;
  $("l2").value = config.l2; $("seed").value = config.seed;
}

function status(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

function remember() {
  try { localStorage.setItem(STORE, JSON.stringify({ id: app.id, config: app.state.config, log: app.log })); } catch (e) { /* private mode */ }
}

// A new session with the settings; the old one is closed only once the new one exists.
async function start() {
  await halt();
  let values;
  try { values = settings(); } catch (e) { status(e.message, true); return; }
  try {
    const state = await call("POST", api(""), values);
    const old = app.id;
    app.id = state.id; app.log = [];
    show(state); setSelected(null);
    if (old) call("DELETE", `/api/learn/${old}`).catch(() => {});
    status("A new network with random weights. Press Play to train it.");
  } catch (e) {
    status(e.message, true);
  }
}

// Back to the session this page had before a reload, if the server still keeps it.
async function resume() {
  let saved = null;
  try { saved = JSON.parse(localStorage.getItem(STORE) || "null"); } catch (e) { saved = null; }
  if (saved && saved.config) fill(saved.config);
  if (saved && saved.id) {
    try {
      const state = await call("GET", api(`/${saved.id}`));
      app.id = state.id; app.log = saved.log || [];
      show(state);
      status(`Back where you were: step ${state.step.toLocaleString("en")}. Press Play to go on.`);
      return;
    } catch (e) { /* closed or reclaimed: start again with the same settings */ }
  }
  await start();
}

function logSteps(n) {
  const last = app.log[app.log.length - 1];
  if (last && last[0] === "advance") last[1] += n; else app.log.push(["advance", n]);
}

async function stepOnce(steps) {
  if (!app.id || app.busy) return;
  app.busy = true;
  try {
    const state = await call("POST", api(`/${app.id}/step`), { steps });
    logSteps(steps);
    show(state);
    app.stats.stepsSince += steps;
    status(`Step ${app.state.step.toLocaleString("en")}: one batch of ${app.state.config.batch_size} digits.`);
  } catch (e) {
    status(e.message, true);
  } finally {
    app.busy = false;
  }
}

function play() {
  if (!app.id || app.busy) return;
  app.loop = playLoop();
}

async function playLoop() {
  app.playing = true;
  app.busy = true;
  $("play").textContent = "Pause";
  // The next steps are asked for before the last state is drawn, so that the server trains while
  // the page draws; the steps per request are sized so that their computing takes ~25 ms.
  let pending = null, sent = 0, last = null;
  try {
    while (app.playing) {
      const steps = app.stepsPerFrame;
      pending = call("POST", api(`/${app.id}/step`), { steps });
      if (last) { logSteps(sent); show(last); app.stats.stepsSince += sent; }
      last = await pending;
      sent = steps;
      const took = Math.max(1e-4, last.compute_seconds || 1e-4);
      app.stepsPerFrame = Math.max(1, Math.min(2000, Math.round(steps * Math.min(2, Math.max(0.5, 0.025 / took)))));
      if (last.health && last.health.diverged) app.playing = false;
    }
    if (last) { logSteps(sent); show(last); }
    status(app.state.health.diverged
      ? `Paused at step ${app.state.step.toLocaleString("en")}: the loss blew up (see below).`
      : `Paused at step ${app.state.step.toLocaleString("en")}.`, app.state.health.diverged);
  } catch (e) {
    status(e.message, true);
  } finally {
    app.playing = false;
    $("play").textContent = "Play";
    app.busy = false;
  }
}

function stop() { app.playing = false; }

async function halt() { // stop playing, and wait for the last request to land
  stop();
  if (app.loop) await app.loop;
  app.loop = null;
}

async function followIndex(index) {
  await halt();
  try {
    const state = await call("POST", api(`/${app.id}/follow`), { index });
    app.log.push(["follow", index]);
    show(state);
    $("update").hidden = true;
  } catch (e) { status(e.message, true); }
}

async function stepOnDigit() {
  await halt();
  const prior = app.state;
  try {
    const state = await call("POST", api(`/${app.id}/follow/step`));
    app.log.push(["one"]);
    show(state);
    showUpdate(prior);
  } catch (e) { status(e.message, true); }
}

// --- the state on the page ----------------------------------------------------------------------

function show(raw) {
  const state = decode(raw);
  const previous = app.state;
  app.state = state;
  const h = state.history;
  $("n-step").textContent = state.step.toLocaleString("en");
  const losses = h.loss.filter((v) => v !== null), accs = h.val_acc.filter((v) => v !== null);
  $("n-loss").textContent = losses.length ? fmt(losses[losses.length - 1], 3) : "–";
  $("n-acc").textContent = accs.length ? (100 * accs[accs.length - 1]).toFixed(1) + "%" : "–";
  const f = state.follow;
  $("follow-caption").textContent = (f.index === null ? "your digit" : `training digit ${f.index}`) +
    `, a ${f.label}: the net says ${argmax(f.probabilities)} (${(100 * Math.max(...f.probabilities)).toFixed(1)}%), loss ${fmt(f.loss, 3)}`;
  pixels($("follow-input"), f.pixels.flat().map((v) => v / 255), false);
  pixels($("follow-dx"), f.dx, true);
  chart($("chart-loss"), h.step, h.loss, { log: true, colour: "#2563eb" });
  chart($("chart-acc"), h.step, h.val_acc, { colour: "#16a34a", percent: true });
  if (previous && previous.config.hidden.join() !== state.config.hidden.join()) setSelected(null);
  traceSelected();
  draw();
  sayHealth(state.health, state.config);
  if (app.selected) explain(app.selected);
  if (!state.last_update) $("update").hidden = true; // trained since, or another digit
  if (app.lesson !== null) lessonShow();
  pythonPanel();
  remember();
  const now = performance.now(), s = app.stats;
  s.frames += 1;
  s.framesInWindow = (s.framesInWindow || 0) + 1;
  if (now - s.since > 1000) {
    s.fps = 1000 * s.framesInWindow / (now - s.since) || 0;
    s.stepsPerSecond = 1000 * s.stepsSince / (now - s.since);
    s.since = now; s.framesInWindow = 0; s.stepsSince = 0;
    if (app.playing) status(`training: ${s.stepsPerSecond.toFixed(0)} steps a second, ${s.fps.toFixed(0)} frames a second drawn`);
  }
}

const argmax = (a) => a.indexOf(Math.max(...a));

// --- health, said in words ---------------------------------------------------------------------------

function sayHealth(health, config) {
  const box = $("health"), n = config.hidden.reduce((a, b) => a + b, 0);
  const count = (lists) => lists.reduce((a, l) => a + l.length, 0);
  const dead = count(health.dead), saturated = count(health.saturated);
  let text = "", bad = false;
  if (health.diverged) {
    bad = true;
    text = `The loss blew up (${health.loss === null ? "not a number any more" : fmt(health.loss, 3)}): the steps are too large ` +
      `for this net, so each one overshoots and the weights grow without bound. Training is paused. Try a smaller learning rate, ` +
      `ten times smaller (${+(config.lr / 10).toPrecision(2)}), and press Reset.`;
  } else if (dead === n) {
    bad = true;
    text = `Every ReLU is dead: no digit makes any hidden neuron's z positive, so f′(z) = 0 everywhere, no gradient ` +
      `flows back, and the net cannot learn any more (it guesses one class). Press Reset, with a smaller learning rate.`;
  } else if (dead > 0) {
    text = `${dead} of ${n} hidden ReLUs are dead (z ≤ 0 for every digit: they output 0 and get no gradient). ` +
      `They are drawn crossed out. A few are normal; many mean the learning rate is too high.`;
  } else if (saturated > 0) {
    bad = saturated === n;
    text = `${saturated} of ${n} hidden neurons are saturated: their |z| is so large that f′(z) is almost 0 for every ` +
      `digit, so almost no gradient passes through them and they barely learn. They are drawn crossed out. ` +
      `A smaller learning rate (and Reset) keeps the sums in the range where ${config.activation} bends.`;
  }
  box.hidden = !text;
  box.textContent = text;
  box.classList.toggle("bad", bad);
}

const unwell = (layer, index) => {
  const h = app.state.health;
  if (!h || layer < 1 || layer > h.dead.length) return null;
  if (h.dead[layer - 1].includes(index)) return "dead";
  if (h.saturated[layer - 1].includes(index)) return "saturated";
  return null;
};

// --- colours and charts -------------------------------------------------------------------------------

function colour(v, peak) { // red for positive, blue for negative, white for 0
  const t = peak > 0 ? Math.min(1, Math.abs(v) / peak) : 0;
  const c = v >= 0 ? RED : BLUE;
  return [255 + (c[0] - 255) * t, 255 + (c[1] - 255) * t, 255 + (c[2] - 255) * t];
}

// A colour scale's end: the 99th percentile of |v|, so that one exploded value cannot wash out
// the rest (it simply shows at full colour).
function robustPeak(values) {
  const a = Float64Array.from(values, Math.abs).filter(Number.isFinite).sort();
  if (!a.length) return 1;
  return a[Math.min(a.length - 1, Math.floor(0.99 * (a.length - 1)))] || a[a.length - 1] || 1;
}

function pixels(canvas, values, signed, peak) {
  const ctx = canvas.getContext("2d"), img = ctx.createImageData(28, 28);
  if (peak === undefined) peak = signed ? robustPeak(values) : 1;
  values.forEach((v, i) => {
    const c = signed ? colour(v, peak) : [255 * v, 255 * v, 255 * v];
    img.data.set([c[0], c[1], c[2], 255], 4 * i);
  });
  ctx.putImageData(img, 0, 0);
}

function chart(canvas, xs, ys, { log = false, colour: stroke, percent = false }) {
  const ctx = canvas.getContext("2d"), W = canvas.width, H = canvas.height, pad = 34;
  ctx.clearRect(0, 0, W, H);
  const pts = xs.map((x, i) => [x, ys[i]]).filter((p) => p[1] !== null && isFinite(p[1]) && (!log || p[1] > 0));
  ctx.fillStyle = "#6b7280"; ctx.font = "11px system-ui";
  if (pts.length < 2) { ctx.fillText("press Play", W / 2 - 25, H / 2); return; }
  const f = log ? Math.log10 : (v) => v;
  // the accuracy zooms on its last three quarters: the first jump would flatten the rest
  const recent = log ? pts : pts.slice(Math.floor(pts.length / 4));
  let lo = Math.min(...recent.map((p) => f(p[1]))), hi = Math.max(...recent.map((p) => f(p[1])));
  if (log) { lo = Math.floor(lo); hi = Math.max(lo + 1, Math.ceil(hi)); } // whole decades
  else { const m = Math.max(0.005, 0.08 * (hi - lo)); lo = Math.max(0, lo - m); hi = Math.min(1, hi + m); }
  canvas.dataset.range = log ? `1e${lo} to 1e${hi}, log scale` : `${lo} to ${hi}`; // what the axis spans
  const x0 = pts[0][0], x1 = pts[pts.length - 1][0] || 1;
  const X = (x) => pad + (W - pad - 6) * (x - x0) / Math.max(1, x1 - x0);
  const Y = (y) => H - 16 - (H - 24) * (y - lo) / Math.max(1e-9, hi - lo);
  const label = (y) => percent ? `${(100 * y).toFixed(hi - lo < 0.05 ? 1 : 0)}%` : log ? `1e${y}` : fmt(y, 2);
  const ticks = log ? Array.from({ length: hi - lo + 1 }, (_, i) => lo + i) : [lo, (lo + hi) / 2, hi];
  ticks.forEach((t) => {
    ctx.strokeStyle = "#eef0f3"; ctx.beginPath(); ctx.moveTo(pad, Y(t)); ctx.lineTo(W - 4, Y(t)); ctx.stroke();
    ctx.fillText(label(t), 1, Math.max(10, Math.min(H - 14, Y(t) + 4)));
  });
  ctx.strokeStyle = "#d1d5db"; ctx.beginPath(); ctx.moveTo(pad, 6); ctx.lineTo(pad, H - 16); ctx.lineTo(W - 4, H - 16); ctx.stroke();
  ctx.fillText(`step ${x1.toLocaleString("en")}`, W - 80, H - 3);
  if (log) ctx.fillText("log scale", pad + 4, H - 3);
  ctx.save(); ctx.beginPath(); ctx.rect(pad, 0, W - pad, H - 16); ctx.clip(); // below the zoom: cut off
  ctx.strokeStyle = stroke; ctx.lineWidth = 1.6; ctx.beginPath();
  pts.forEach(([x, y], i) => (i ? ctx.lineTo(X(x), Y(f(y))) : ctx.moveTo(X(x), Y(f(y)))));
  ctx.stroke(); ctx.restore();
}

// The selected link's weight and gradient (or a neuron's bias and dL/db) over the steps.
function traceSelected() {
  const sel = app.selected, s = app.state, f = s.follow;
  if (!sel || (sel.kind === "neuron" && sel.layer === 0)) { $("trace").hidden = true; return; }
  const key = sel.kind === "link" ? `W${sel.layer}[${sel.j}, ${sel.k}]` : `b${sel.layer}[${sel.index}]`;
  if (!app.trace || app.trace.key !== key) app.trace = { key, step: [], w: [], g: [] };
  const t = app.trace;
  const w = sel.kind === "link" ? s.params[`W${sel.layer}`][sel.j][sel.k] : s.params[`b${sel.layer}`][sel.index];
  const g = sel.kind === "link" ? f.grads[`W${sel.layer}`][sel.j][sel.k] : f.dz[sel.layer - 1][sel.index];
  if (t.step.length && t.step[t.step.length - 1] === s.step + s.one_steps / 1e6) { t.w[t.w.length - 1] = w; t.g[t.g.length - 1] = g; }
  else { t.step.push(s.step + s.one_steps / 1e6); t.w.push(w); t.g.push(g); }
  if (t.step.length > 600) for (const k of ["step", "w", "g"]) t[k] = t[k].filter((_, i) => i % 2 === 0 || i > 300);
  $("trace").hidden = false;
  $("trace-caption").textContent = `${sel.kind === "link" ? "The weight" : "The bias"} ${key} (blue, left scale) and its gradient for the followed digit (orange, right scale), since it was selected: now ${fmt(w)} and ${fmt(g)}.`;
  const canvas = $("chart-trace"), ctx = canvas.getContext("2d"), W = canvas.width, H = canvas.height;
  ctx.clearRect(0, 0, W, H);
  ctx.font = "11px system-ui"; ctx.fillStyle = "#6b7280";
  if (t.step.length < 2) { ctx.fillText("press Play or Step to see it change", W / 2 - 90, H / 2); return; }
  const line = (ys, stroke, side) => {
    let lo = Math.min(...ys), hi = Math.max(...ys);
    if (hi - lo < 1e-12) { lo -= 1e-6 + Math.abs(lo) * 0.01; hi += 1e-6 + Math.abs(hi) * 0.01; }
    const X = (i) => 40 + (W - 80) * (t.step[i] - t.step[0]) / Math.max(1e-9, t.step[t.step.length - 1] - t.step[0]);
    const Y = (y) => H - 16 - (H - 24) * (y - lo) / (hi - lo);
    ctx.strokeStyle = stroke; ctx.lineWidth = 1.5; ctx.beginPath();
    ys.forEach((y, i) => (i ? ctx.lineTo(X(i), Y(y)) : ctx.moveTo(X(i), Y(y))));
    ctx.stroke();
    ctx.fillStyle = stroke;
    ctx.fillText(fmt(hi, 3), side ? W - 38 : 0, 12); ctx.fillText(fmt(lo, 3), side ? W - 38 : 0, H - 18);
  };
  line(t.w, "#2563eb", false);
  line(t.g, "#ea580c", true);
  ctx.fillStyle = "#6b7280"; ctx.fillText(`step ${Math.floor(t.step[t.step.length - 1]).toLocaleString("en")}`, W / 2 - 30, H - 3);
}

// --- the network ----------------------------------------------------------------------------------

function column(n, x, top, bottom, maxR) { // n circles in as many columns as legibility needs
  const perColumn = Math.max(1, Math.floor((bottom - top) / 14)), cols = Math.ceil(n / perColumn);
  const rows = Math.ceil(n / cols), gap = Math.min(48, (bottom - top) / rows);
  const r = Math.max(3.5, Math.min(maxR, gap / 2 - 1.5)), dx = 2 * r + 6;
  return Array.from({ length: n }, (_, k) => ({
    r, x: x + (Math.floor(k / rows) - (cols - 1) / 2) * dx,
    y: (top + bottom) / 2 + ((k % rows) - (rows - 1) / 2) * gap,
  }));
}

function layout(canvas, state) {
  const W = canvas.clientWidth, H = canvas.clientHeight;
  const sizes = [784, ...state.config.hidden, 10], L = sizes.length - 1; // L weight layers
  const narrow = W < 560;
  const inputSize = narrow ? 56 : 96;
  const usable = W - inputSize - (narrow ? 80 : 120);
  const n1 = sizes[1], share = L > 2 ? 0.38 : 0.45;
  // the grid of pictures whose tiles are largest, leaving room for the links and the outputs
  const size = (c) => Math.floor(Math.min((H - 30) / Math.ceil(n1 / c) - 6, (usable * share) / c - 6, narrow ? 40 : 72));
  let cols = 1;
  for (let c = 2; c <= n1; c++) if (size(c) > size(cols)) cols = c;
  const rows = Math.ceil(n1 / cols), tile = Math.max(8, size(cols));
  const nodes = [[]]; // per layer: {x, y, r|tile, layer, index}
  const x1 = inputSize + 24 + (narrow ? 6 : 30);
  const top1 = (H - rows * (tile + 6)) / 2;
  nodes.push(Array.from({ length: n1 }, (_, j) => ({ layer: 1, index: j, tile,
    x: x1 + (j % cols) * (tile + 6), y: top1 + Math.floor(j / cols) * (tile + 6) })));
  const right = W - (narrow ? 70 : 110), after1 = x1 + cols * (tile + 6);
  for (let l = 2; l <= L; l++) {
    const x = l === L ? right : after1 + (right - after1) / 2;
    const spots = column(sizes[l], x, 10, H - 10, l === L ? (narrow ? 12 : 15) : 9);
    nodes.push(spots.map((p, k) => ({ layer: l, index: k, ...p })));
  }
  return { W, H, sizes, L, nodes, inputSize, narrow, links: [] };
}

// the point where layer l's neuron sends its links out, and where it receives them
const outPort = (n) => n.tile ? [n.x + n.tile, n.y + n.tile / 2] : [n.x + n.r, n.y];
const inPort = (n) => n.tile ? [n.x, n.y + n.tile / 2] : [n.x - n.r, n.y];

// The links worth a line: each at least 2% of its layer's scale, the strongest MAX_LINKS of
// them, in the order they are drawn (the strongest last, on top).
function visibleLinks(lay, state, back) {
  const out = [];
  for (let l = 2; l <= lay.L; l++) {
    const M = back ? state.follow.grads[`W${l}`] : state.params[`W${l}`];
    const peak = robustPeak(M.flat()), layer = [];
    lay.nodes[l - 1].forEach((a, j) => lay.nodes[l].forEach((b, k) => {
      const v = M[j][k], t = Math.min(1, Math.abs(v) / peak);
      if (t >= 0.02) layer.push({ layer: l, j, k, v, t });
    }));
    layer.sort((p, q) => p.t - q.t);
    const kept = layer.slice(-MAX_LINKS);
    kept.total = layer.length;
    for (const link of kept) {
      const [ax, ay] = outPort(lay.nodes[l - 1][link.j]), [bx, by] = inPort(lay.nodes[l][link.k]);
      Object.assign(link, { ax, ay, bx, by, width: 0.6 + (kept.total > MAX_LINKS ? 1.6 : 3) * link.t });
    }
    out.push(kept);
  }
  return out;
}

function drawInput(ctx, lay, f, back) {
  const inputCanvas = document.createElement("canvas");
  inputCanvas.width = inputCanvas.height = 28;
  if (back) pixels(inputCanvas, f.dx, true); else pixels(inputCanvas, f.pixels.flat().map((v) => v / 255), false);
  ctx.imageSmoothingEnabled = false;
  const iy = (lay.H - lay.inputSize) / 2;
  ctx.drawImage(inputCanvas, 8, iy, lay.inputSize, lay.inputSize);
  ctx.fillStyle = "#6b7280"; ctx.font = "12px system-ui";
  ctx.fillText(back ? "dL/dx" : `input: a ${f.label}`, 8, iy - 6);
  ctx.fillText("784 pixels", 8, iy + lay.inputSize + 14);
}

function crossOut(ctx, x0, y0, x1, y1) {
  ctx.strokeStyle = "rgba(55, 65, 81, .85)"; ctx.lineWidth = 1.5;
  ctx.beginPath(); ctx.moveTo(x0, y0); ctx.lineTo(x1, y1); ctx.moveTo(x1, y0); ctx.lineTo(x0, y1); ctx.stroke();
}

function drawFirstLayer(ctx, lay, state, back) {
  const f = state.follow, W1 = back ? f.grads.W1 : state.params.W1;
  const act1 = f.a[0], dz1 = f.dz[0];
  const peakA = robustPeak(act1), peakD = robustPeak(dz1);
  // one colour scale for the layer's pictures, so that a weak neuron looks weak
  const peak1 = robustPeak(W1.flat());
  lay.nodes[1].forEach((node, j) => {
    const tileCanvas = document.createElement("canvas");
    tileCanvas.width = tileCanvas.height = 28;
    pixels(tileCanvas, W1.map((row) => row[j]), true, peak1);
    const ill = unwell(1, j);
    ctx.globalAlpha = app.reveal >= 1 ? (ill ? 0.35 : 1) : 0.25;
    ctx.drawImage(tileCanvas, node.x, node.y, node.tile, node.tile);
    ctx.globalAlpha = 1;
    // the frame says what the neuron does for the followed digit
    const v = back ? dz1[j] : act1[j], shade = 255 * (1 - Math.min(1, Math.abs(v) / peakA));
    const c = back ? colour(v, peakD) : [shade, shade, shade];
    ctx.strokeStyle = `rgb(${c.join(",")})`; ctx.lineWidth = 3;
    ctx.strokeRect(node.x - 1.5, node.y - 1.5, node.tile + 3, node.tile + 3);
    if (ill) crossOut(ctx, node.x, node.y, node.x + node.tile, node.y + node.tile);
    if (isSelected(1, j)) { ctx.strokeStyle = "#f59e0b"; ctx.lineWidth = 2; ctx.strokeRect(node.x - 4, node.y - 4, node.tile + 8, node.tile + 8); }
  });
}

function drawCircles(ctx, lay, state, back) {
  const f = state.follow;
  for (let l = 2; l <= lay.L; l++) {
    const values = back ? f.dz[l - 1] : f.a[l - 1], peak = robustPeak(values);
    lay.nodes[l].forEach((node, k) => {
      const v = values[k], ill = l < lay.L ? unwell(l, k) : null;
      const c = back ? colour(v, peak) : (l === lay.L ? colour(v, 1) : colour(Math.abs(v), peak));
      ctx.globalAlpha = app.reveal >= l ? 1 : 0.25;
      ctx.fillStyle = ill ? "#e5e7eb" : `rgb(${c.join(",")})`; ctx.strokeStyle = "#9ca3af"; ctx.lineWidth = 1;
      ctx.beginPath(); ctx.arc(node.x, node.y, node.r, 0, 2 * Math.PI); ctx.fill(); ctx.stroke();
      ctx.globalAlpha = 1;
      if (ill) crossOut(ctx, node.x - node.r * 0.7, node.y - node.r * 0.7, node.x + node.r * 0.7, node.y + node.r * 0.7);
      if (isSelected(l, k)) { ctx.strokeStyle = "#f59e0b"; ctx.lineWidth = 2.5; ctx.beginPath(); ctx.arc(node.x, node.y, node.r + 4, 0, 2 * Math.PI); ctx.stroke(); }
      if (l === lay.L) drawOutputLabel(ctx, lay, node, k, f, back, v);
    });
  }
}

function drawOutputLabel(ctx, lay, node, k, f, back, v) {
  ctx.fillStyle = k === f.label ? "#111827" : "#374151"; ctx.font = `${k === f.label ? "bold " : ""}13px system-ui`;
  ctx.fillText(String(k), node.x - 4, node.y + 4.5);
  const p = f.probabilities[k], w = lay.narrow ? 40 : 70;
  ctx.fillStyle = "#e5e7eb"; ctx.fillRect(node.x + node.r + 6, node.y - 4, w, 8);
  ctx.fillStyle = k === argmax(f.probabilities) ? "#2563eb" : "#94a3b8"; ctx.fillRect(node.x + node.r + 6, node.y - 4, w * p, 8);
  ctx.fillStyle = "#6b7280"; ctx.font = "10px system-ui";
  ctx.fillText(back ? fmt(v, 3) : `${(100 * p).toFixed(0)}%`, node.x + node.r + 6, node.y + 15);
}

function draw() {
  const state = app.state, canvas = $("net");
  if (!state) return;
  const dpr = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(canvas.clientWidth * dpr)) {
    canvas.width = Math.round(canvas.clientWidth * dpr); canvas.height = Math.round(canvas.clientHeight * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  const lay = app.layout = layout(canvas, state), back = app.view === "backward";
  ctx.clearRect(0, 0, lay.W, lay.H);
  drawInput(ctx, lay, state.follow, back);
  lay.links = visibleLinks(lay, state, back);
  lay.links.forEach((links) => {
    if (app.reveal < links[0]?.layer) return;
    for (const link of links) {
      const c = link.v >= 0 ? RED : BLUE;
      ctx.strokeStyle = `rgba(${c[0]},${c[1]},${c[2]},${0.15 + 0.75 * link.t})`;
      ctx.lineWidth = link.width;
      ctx.beginPath(); ctx.moveTo(link.ax, link.ay); ctx.lineTo(link.bx, link.by); ctx.stroke();
    }
  });
  drawFirstLayer(ctx, lay, state, back);
  drawCircles(ctx, lay, state, back);
  const sel = app.selected;
  if (sel && sel.kind === "link") {
    const a = lay.nodes[sel.layer - 1][sel.j], b = lay.nodes[sel.layer][sel.k];
    ctx.strokeStyle = "#f59e0b"; ctx.lineWidth = 4;
    const [ax, ay] = outPort(a), [bx, by] = inPort(b);
    ctx.beginPath(); ctx.moveTo(ax, ay); ctx.lineTo(bx, by); ctx.stroke();
  }
  $("legend").textContent = legend(lay, back);
}

function legend(lay, back) {
  const thinned = lay.links.filter((ls) => ls.total > ls.length).map((ls) => `${ls.length} strongest of ${ls.total.toLocaleString("en")}`);
  const lines = lay.L > 2 ? "the links between the neuron layers" : "the links to the outputs";
  const note = thinned.length ? ` Lines shown: ${thinned.join("; ")}.` : "";
  return (back
    ? `Backward: each neuron's sensitivity dL/dz for the followed digit (red: raising its z would raise the loss, blue: lower it). Each picture shows its links' gradients; each line, ${lines}, a link's gradient (its input's activation × the sensitivity it leads to). Colours scale per layer.`
    : `Forward: each picture shows a hidden neuron's 784 incoming weights (red positive, blue negative); its frame is darker the more it is active for the followed digit. Lines: ${lines} (red positive, blue negative, wider = larger). The outputs' bars: the probabilities. Crossed out: a saturated or dead neuron.`) + note;
}

const isSelected = (layer, index) => app.selected && app.selected.kind === "neuron" && app.selected.layer === layer && app.selected.index === index;

// What is under (x, y): a neuron if the point is inside its shape, else the topmost drawn line
// whose stroke covers it, else the nearest line within `slack` pixels (more for a finger).
function pick(x, y, slack = 5) {
  const lay = app.layout;
  if (!lay) return null;
  for (let l = 1; l <= lay.L; l++) {
    for (const n of lay.nodes[l]) {
      const hit = n.tile ? (x >= n.x - 1.5 && x <= n.x + n.tile + 1.5 && y >= n.y - 1.5 && y <= n.y + n.tile + 1.5)
        : Math.hypot(x - n.x, y - n.y) <= n.r + 1;
      if (hit) return { kind: "neuron", layer: l, index: n.index };
    }
  }
  let best = null, bestD = slack;
  for (const links of lay.links) {
    for (const link of links) {
      const dx = link.bx - link.ax, dy = link.by - link.ay;
      const t = Math.max(0, Math.min(1, ((x - link.ax) * dx + (y - link.ay) * dy) / (dx * dx + dy * dy)));
      const d = Math.hypot(x - link.ax - t * dx, y - link.ay - t * dy);
      const covers = d <= link.width / 2;
      // a covering stroke drawn later lies on top: it wins over anything drawn before it
      if (covers || d < bestD) { bestD = covers ? -1 : d; best = { kind: "link", layer: link.layer, j: link.j, k: link.k }; }
    }
  }
  return best;
}

function setSelected(sel) {
  app.selected = sel;
  app.trace = null;
  if (!sel) {
    $("d-title").textContent = "Click a neuron or a link";
    $("d-body").innerHTML = "<p>Each square in the middle is a hidden <b>neuron</b>; its picture shows its 784 incoming links, one per pixel (red: a positive weight, blue: a negative one). Click one to see how its sensitivity is computed from the neurons it feeds, click an output for the softmax and the loss, or click a line to follow one link.</p>";
    $("d-check").hidden = true;
    $("trace").hidden = true;
  } else {
    explain(sel);
    traceSelected();
  }
  draw();
}

// --- the chain rule in numbers -----------------------------------------------------------------

function fprime(act, z, a) {
  if (act === "sigmoid") return a * (1 - a);
  if (act === "tanh") return 1 - a * a;
  return z > 0 ? 1 : 0;
}

function row(cells, cls = "") {
  return `<tr class="${cls}">${cells.map((c) => `<td>${c}</td>`).join("")}</tr>`;
}

function explainOutput(k) {
  const f = app.state.follow, o = f.output, label = f.label;
  $("d-title").textContent = `Output neuron ${k}`;
  const rows = o.z.map((z, i) => row([i === label ? `<b>${i}</b>` : i, fmt(z, 4), fmt(o.exp[i], 4), fmt(o.p[i], 4), fmt(o.dz[i], 4)], i === k ? "hl" : ""));
  $("d-body").innerHTML = `<p>Softmax turns the ten sums z into probabilities: p = exp(z − m) / Σ exp(z − m), with m = ${fmt(o.shift, 5)}, the largest z
    (taking the same m from every z changes no p, and keeps exp from overflowing).</p>
    <table class="nums wide"><tr><th>k</th><th>z</th><th>e<sup>z−m</sup></th><th>p</th><th>p − target</th></tr>${rows.join("")}
    ${row(["Σ", "", `<span id="d-sumexp">${fmt(o.sum_exp, 6)}</span>`, "1", ""], "total")}</table>
    <p class="note">The target is 1 for the true class (in bold) and 0 for the others.</p>
    <p>This digit is a ${label}, so the loss is −ln p of output ${label}: −ln(${fmt(o.p[label], 6)}) = <b id="d-loss">${fmt(o.loss, 7)}</b>.</p>
    <p>Output ${k}'s sensitivity dL/dz = p − target = ${fmt(o.p[k], 7)} − ${o.target[k]} = <b id="d-sens">${fmt(o.dz[k], 7)}</b>:
    ${k === label ? "negative, so raising its z lowers the loss" : "positive, so raising its z would raise the loss"}.</p>`;
  app.checkTarget = { param: `b${app.state.config.hidden.length + 1}`, index: [k] };
  $("d-check").hidden = false;
}

function explainHidden(l, j) {
  const s = app.state, f = s.follow, act = s.config.activation, L = s.config.hidden.length + 1;
  const z = f.z[l - 1][j], a = f.a[l - 1][j], Wn = s.params[`W${l + 1}`], next = f.dz[l];
  const terms = next.map((d, k) => ({ k, w: Wn[j][k], d, t: Wn[j][k] * d })).sort((p, q) => Math.abs(q.t) - Math.abs(p.t));
  const sum = terms.reduce((acc, t) => acc + t.t, 0), fp = fprime(act, z, a), shown = terms.slice(0, 6);
  const nextName = l + 1 === L ? "output" : `layer ${l + 1} neuron`, ill = unwell(l, j);
  $("d-title").textContent = `Hidden neuron ${j} of layer ${l}`;
  $("d-body").innerHTML = `<p>Forward: z = <b>${fmt(z, 6)}</b> (its ${l === 1 ? "784 pixels" : "inputs"} times their weights, plus its bias), a = ${act}(z) = <b>${fmt(a, 6)}</b>.</p>
    ${ill ? `<p class="health">This neuron is ${ill}: ${ill === "dead" ? "z ≤ 0 for every digit, so f′(z) = 0 and it passes no gradient back" : "|z| is so large for every digit that f′(z) is almost 0, so it hardly learns"}.</p>` : ""}
    <p>Backward: its sensitivity is f′(z) times the sum, over the neurons it feeds, of link weight × their sensitivity.</p>
    <table class="nums"><tr><th>to ${nextName}</th><th>weight</th><th>× its dL/dz</th><th>= term</th></tr>
    ${shown.map((t) => row([t.k, fmt(t.w, 4), fmt(t.d, 4), fmt(t.t, 4)])).join("")}
    ${terms.length > shown.length ? row([`${terms.length - shown.length} more`, "", "", fmt(terms.slice(6).reduce((acc, t) => acc + t.t, 0), 4)]) : ""}
    </table>
    <table class="nums">
    ${row(["sum of the terms", `<span id="d-sum">${sig(sum)}</span>`], "total")}
    ${row([`f′(z) = ${act === "sigmoid" ? "a(1 − a)" : act === "tanh" ? "1 − a²" : "1 if z > 0, else 0"}`, `<span id="d-fprime">${sig(fp)}</span>`])}
    ${row(["sum × f′(z)", `<span id="d-product">${sig(sum * fp)}</span>`], "total")}
    ${row(["its sensitivity dL/dz, from the server", `<span id="d-sens">${sig(f.dz[l - 1][j])}</span>`])}</table>
    <p class="note">Its bias's gradient dL/db is this same sensitivity: z grows one for one with b. The numerical check below tests it.</p>`;
  app.checkTarget = { param: `b${l}`, index: [j] };
  $("d-check").hidden = false;
}

function explainLink(l, j, k) {
  const s = app.state, f = s.follow, L = s.config.hidden.length + 1;
  const w = s.params[`W${l}`][j][k], a = l === 1 ? null : f.a[l - 2][j], d = f.dz[l - 1][k];
  const g = f.grads[`W${l}`][j][k], lr = s.config.lr, l2 = s.config.l2;
  $("d-title").textContent = `The link from neuron ${j} to ${l === L ? "output" : "neuron"} ${k}`;
  $("d-body").innerHTML = `<p>Its weight now: W${l}[${j}, ${k}] = <b id="d-weight">${sig(w)}</b>.</p>
    <p>Its gradient for the followed digit is the activation at its start times the sensitivity at its end:</p>
    <table class="nums">${row(["activation a at its start", sig(a)])}${row(["sensitivity dL/dz at its end", sig(d)])}
    ${row(["gradient dL/dw = a × dL/dz", `<span id="d-grad">${sig(g)}</span>`], "total")}</table>
    <p>A step goes <i>against</i> the gradient, because the gradient points the way the loss grows: the weight changes by
    −lr × dL/dw = −${lr} × ${sig(g)} = <b>${sig(-lr * g)}</b>${l2 ? `, and by −lr × L2 × w = <b>${sig(-lr * l2 * w)}</b> for the L2 term` : ""}.
    (The write-up's "add a fraction of the sensitivity" is the same step: its sensitivity is defined with the opposite sign.)
    Press <b>Step on this digit alone</b> to take exactly this step and see the weight change.</p>`;
  app.checkTarget = { param: `W${l}`, index: [j, k] };
  $("d-check").hidden = false;
}

function explain(sel) {
  const L = app.state.config.hidden.length + 1;
  $("check-out").hidden = true;
  if (sel.kind === "neuron" && sel.layer === L) explainOutput(sel.index);
  else if (sel.kind === "neuron") explainHidden(sel.layer, sel.index);
  else explainLink(sel.layer, sel.j, sel.k);
}

// What the last "Step on this digit alone" did: the probabilities, the loss, and the selected
// link's weight, before and after, with the sum that checks it.
function showUpdate(prior) {
  const u = app.state.last_update, box = $("update");
  if (!u || !prior) { box.hidden = true; return; }
  const label = u.label, sel = app.selected;
  let weight = "<p class=\"note\">Select a link to see its weight before and after.</p>";
  if (sel && sel.kind === "link") {
    const key = `W${sel.layer}`, before = u.params_before[key][sel.j][sel.k];
    const g = prior.follow.grads[key][sel.j][sel.k]; // a × dL/dz as this page computed it before the step
    const decay = -u.lr * u.l2 * before, predicted = before - u.lr * g + decay;
    weight = `<table class="nums"><tr><th>${key}[${sel.j}, ${sel.k}]</th><th></th></tr>
      ${row(["before", `<span id="u-before">${sig(before)}</span>`])}
      ${row([`− lr × dL/dw = −${u.lr} × ${sig(g)}`, `<span id="u-step">${sig(-u.lr * g)}</span>`])}
      ${u.l2 ? row([`− lr × L2 × w, the L2 term`, sig(decay)]) : ""}
      ${row(["= the sum, worked out here", `<span id="u-predicted">${sig(predicted)}</span>`], "total")}
      ${row(["after, from the server", `<span id="u-after">${sig(app.state.params[key][sel.j][sel.k])}</span>`])}</table>`;
  }
  box.innerHTML = `<p><b>One step on this digit alone</b> (lr ${u.lr}${u.l2 ? `, L2 ${u.l2}` : ""}, no momentum): every weight moved against its gradient, so this digit's loss fell.</p>
    <table class="nums"><tr><th></th><th>before</th><th>after</th></tr>
    ${row([`p(${label})`, `<span id="u-p-before">${fmt(u.before.probabilities[label], 6)}</span>`, `<span id="u-p-after">${fmt(u.after.probabilities[label], 6)}</span>`])}
    ${row(["loss", `<span id="u-loss-before">${fmt(u.before.loss, 6)}</span>`, `<span id="u-loss-after">${fmt(u.after.loss, 6)}</span>`], "total")}</table>
    ${weight}`;
  box.hidden = false;
}

async function gradcheck() {
  if (!app.checkTarget) return;
  try {
    const r = await call("POST", `/api/learn/${app.id}/gradcheck`, app.checkTarget);
    const out = $("check-out");
    out.innerHTML = `${row([`backprop: dL/d${r.param}[${r.index.join(", ")}]`, fmt(r.backprop, 10)])}${row(["finite difference, float64", fmt(r.numeric, 10)])}
      ${row(["relative error", `<span id="d-relerr">${r.rel_error.toExponential(2)}</span>`], "total")}
      ${row([r.rel_error < 1e-6 ? "below 1e-6: they agree to (at least) six digits, so backprop is right here" : "above 1e-6: worth a look (near a ReLU's kink, a finite difference can straddle it)", ""])}`;
    out.hidden = false;
  } catch (e) { status(e.message, true); }
}

// --- the guided lesson: one digit from its pixels to one weight's update ---------------------------

function lessonPlan() {
  const s = app.state, f = s.follow, L = s.config.hidden.length + 1, act = s.config.activation;
  const label = f.label, o = f.output;
  const j = argmax(f.a[L - 2].map(Math.abs)); // the last hidden layer's most active neuron
  const hl = L - 1, x = f.pixels.flat().map((v) => v * s.input.scale + s.input.offset);
  const inputs = hl === 1 ? x : f.a[hl - 2], W = s.params[`W${hl}`], b = s.params[`b${hl}`][j];
  const terms = inputs.map((a, i) => ({ i, a, w: W[i][j], t: a * W[i][j] })).filter((t) => t.a !== 0)
    .sort((p, q) => Math.abs(q.t) - Math.abs(p.t));
  const sum = terms.reduce((acc, t) => acc + t.t, 0), z = f.z[hl - 1][j], a = f.a[hl - 1][j];
  const what = hl === 1 ? "pixel" : `layer ${hl - 1} neuron`;
  const lr = s.config.lr, g = f.grads[`W${L}`][j][label], w = s.params[`W${L}`][j][label];
  return [
    { title: "1. One neuron's sum z", code: "model.forward", select: { kind: "neuron", layer: hl, index: j },
      html: `<p>Hidden neuron ${j} of layer ${hl} (the most active for this digit) adds up its inputs times their weights, plus a bias: z = Σ a·w + b.</p>
      <table class="nums"><tr><th>${what}</th><th>a</th><th>× w</th><th>= a·w</th></tr>
      ${terms.slice(0, 4).map((t) => row([t.i, fmt(t.a, 4), fmt(t.w, 4), fmt(t.t, 4)])).join("")}
      ${row([`${terms.length - 4 > 0 ? terms.length - 4 : 0} more inputs`, "", "", fmt(terms.slice(4).reduce((acc, t) => acc + t.t, 0), 4)])}
      ${row(["bias b", "", "", fmt(b, 4)])}${row(["z", "", "", `<span class="hl" id="l-z">${sig(sum + b)}</span>`], "total")}</table>
      <p class="note">The server's z: ${sig(z)}.</p>` },
    { title: "2. Its activation a", code: `model.forward (model.${act})`, select: { kind: "neuron", layer: hl, index: j },
      html: `<p>The neuron passes on a = ${act}(z) = ${act}(${fmt(z, 6)}) = <b class="hl" id="l-a">${sig(a)}</b>. ${act === "relu" ? "ReLU keeps a positive z and zeroes a negative one." : act === "sigmoid" ? "Sigmoid squeezes any z into (0, 1): 1 / (1 + exp(−z))." : "tanh squeezes any z into (−1, 1)."}</p>` },
    { title: "3. The softmax", code: "model.softmax", select: { kind: "neuron", layer: L, index: label },
      html: `<p>Each output neuron sums its inputs the same way, with no activation. Softmax turns the ten sums into probabilities that add up to 1: p = exp(z) / Σ exp(z).</p>
      <p>Here Σ exp(z − m) = <span class="hl">${fmt(o.sum_exp, 6)}</span> and p of a ${label} = <span class="hl" id="l-p">${fmt(o.p[label], 6)}</span>; the table on the right has all ten.</p>` },
    { title: "4. The loss", code: "model.cross_entropy", select: { kind: "neuron", layer: L, index: label },
      html: `<p>The loss is −ln of the probability given to the true class, a ${label}: −ln(${fmt(o.p[label], 6)}) = <b class="hl" id="l-loss">${sig(o.loss)}</b>. It is 0 only when p = 1, and it grows without bound as p falls towards 0.</p>` },
    { title: "5. The output's sensitivity", code: "model.cross_entropy_grad", select: { kind: "neuron", layer: L, index: label },
      html: `<p>How much does the loss change when output ${label}'s z moves? For softmax and this loss together, dL/dz = p − target: ${fmt(o.p[label], 6)} − 1 = <b class="hl" id="l-dz">${sig(o.dz[label])}</b>. For every other output, the target is 0 and dL/dz = p.</p>
      <p>This is where backpropagation starts: every other sensitivity is built from these ten.</p>` },
    { title: "6. A hidden sensitivity", code: "model.backward", select: { kind: "neuron", layer: hl, index: j },
      html: `<p>Neuron ${j}'s sensitivity collects the sensitivities of the neurons it feeds, each times the weight of the link: f′(z) × Σ w × dL/dz. The table on the right adds them up: <b class="hl">${sig(f.dz[hl - 1][j])}</b>.</p>` },
    { title: "7. A link's gradient", code: "model.backward", select: { kind: "link", layer: L, j, k: label },
      html: `<p>The link from neuron ${j} to output ${label}: its gradient is the activation at its start times the sensitivity at its end, ${fmt(a, 6)} × ${fmt(o.dz[label], 6)} = <b class="hl" id="l-grad">${sig(g)}</b>.</p>
      <p>Press "Check this gradient numerically": the server nudges the weight up and down and measures the loss.</p>` },
    { title: "8. The update", code: "optim.sgd_step", select: { kind: "link", layer: L, j, k: label },
      html: `<p>Training moves the weight against its gradient: w − lr × dL/dw = ${fmt(w, 6)} − ${lr} × ${fmt(g, 6)} = <b class="hl" id="l-new">${sig(w - lr * g)}</b>.</p>
      <p>Press <b>Step on this digit alone</b> (under the digit) to take exactly this step, and see this digit's loss fall. Training proper averages the gradients of a batch of digits and takes that step.</p>` },
  ];
}

function lessonShow() {
  const plan = lessonPlan(), i = Math.max(0, Math.min(plan.length - 1, app.lesson)), screen = plan[i];
  app.lesson = i;
  $("lesson").hidden = false;
  $("lesson-title").textContent = screen.title;
  $("lesson-count").textContent = `(${i + 1} of ${plan.length}, on ${app.state.follow.index === null ? "your digit" : `training digit ${app.state.follow.index}`})`;
  $("lesson-body").innerHTML = screen.html;
  $("lesson-code").textContent = screen.code;
  $("lesson-back").disabled = i === 0;
  $("lesson-next").disabled = i === plan.length - 1;
  const sel = screen.select, same = app.selected && JSON.stringify(app.selected) === JSON.stringify(sel);
  if (!same) { app.selected = sel; app.trace = null; explain(sel); draw(); }
}

async function lessonStart() {
  await halt();
  app.lesson = 0;
  setView("forward");
  lessonShow();
  const url = new URL(location.href);
  url.searchParams.set("lesson", "1");
  history.replaceState(null, "", url);
  $("details").scrollIntoView({ block: "nearest" });
}

function lessonEnd() {
  app.lesson = null;
  $("lesson").hidden = true;
  const url = new URL(location.href);
  url.searchParams.delete("lesson");
  history.replaceState(null, "", url);
}

// --- the same in Python ---------------------------------------------------------------------------

function pythonPanel() {
  const c = app.state.config, f = app.state.follow;
  const lines = [
    "from mnist_mlp.learn import Digits, LearnConfig, Session",
    "",
    `config = LearnConfig(hidden=[${c.hidden.join(", ")}], activation="${c.activation}", lr=${c.lr},`,
    `                     batch_size=${c.batch_size}, momentum=${c.momentum}, l2=${c.l2}, seed=${c.seed})`,
    "session = Session(config, Digits.load())",
  ];
  for (const [what, n] of app.log) {
    if (what === "advance") lines.push(`session.advance(${n})  # ${n} SGD steps, one batch each`);
    else if (what === "follow") lines.push(`session.follow(index=${n})`);
    else if (what === "one") lines.push("session.step_on_followed()  # one step on the followed digit alone");
    else if (what === "own") lines.push("session.follow(pixels=my_28x28_pixels, label=...)  # your drawing");
  }
  lines.push(
    "",
    "f = session.followed()  # forward and back, in model.py's functions",
    `print(f["output"]["p"])  # the probabilities: ${fmt(f.probabilities[f.label], 6)} for a ${f.label}`,
    `print(f["loss"])         # ${sig(f.loss)}`,
    `print(f["dz"][-1])       # the outputs' sensitivities, p - target`,
  );
  $("python-code").textContent = lines.join("\n");
}

// --- one digit, forward then backward, animated ---------------------------------------------------

async function oneDigit() {
  await followIndex(Math.floor(Math.random() * 60000));
  const L = app.state.config.hidden.length + 1;
  setView("forward");
  for (let r = 0; r <= L; r++) { app.reveal = r; draw(); await sleep(350); }
  setView("backward");
  for (let r = L; r >= 0; r--) { app.reveal = 99; draw(); await sleep(250); }
  app.reveal = 99;
  status(`Followed training digit ${app.state.follow.index} forward, then its error back. Click a neuron for its numbers.`);
}
const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

function setView(view) {
  app.view = view;
  $("view-forward").classList.toggle("on", view === "forward");
  $("view-backward").classList.toggle("on", view === "backward");
  $("view-forward").setAttribute("aria-selected", String(view === "forward"));
  $("view-backward").setAttribute("aria-selected", String(view === "backward"));
  draw();
}

// --- drawing one's own digit -----------------------------------------------------------------------

// The ink's extent on the pad, in pad pixels: a tap is a dot, not a digit.
function inkExtent(ctx, size) {
  const data = ctx.getImageData(0, 0, size, size).data;
  let x0 = size, y0 = size, x1 = -1, y1 = -1;
  for (let y = 0; y < size; y++) for (let x = 0; x < size; x++) {
    if (data[4 * (y * size + x)] < 128) { x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y); }
  }
  return x1 < 0 ? 0 : Math.max(x1 - x0, y1 - y0) + 1;
}

function setupPad() {
  const pad = $("pad"), ctx = pad.getContext("2d", { willReadFrequently: true });
  const clear = () => { ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, pad.width, pad.height); $("follow-own").disabled = true; };
  clear();
  let last = null;
  const at = (e) => { const r = pad.getBoundingClientRect(); return [(e.clientX - r.left) * pad.width / r.width, (e.clientY - r.top) * pad.height / r.height]; };
  const ink = (from, to) => {
    ctx.strokeStyle = "#000"; ctx.lineWidth = 14; ctx.lineCap = "round";
    ctx.beginPath(); ctx.moveTo(...from); ctx.lineTo(...to); ctx.stroke();
    $("follow-own").disabled = false;
  };
  pad.addEventListener("pointerdown", (e) => { last = at(e); pad.setPointerCapture(e.pointerId); ink(last, last); });
  pad.addEventListener("pointermove", (e) => { if (!last) return; const p = at(e); ink(last, p); last = p; });
  pad.addEventListener("pointerup", () => { last = null; });
  $("clear-own").addEventListener("click", clear);
  $("follow-own").addEventListener("click", () => {
    if (inkExtent(ctx, pad.width) < 0.2 * pad.width) {
      status("That is a dot, not a digit: draw the whole digit, about as tall as the pad, then follow it.", true);
      return;
    }
    pad.toBlob(async (blob) => {
      const form = new FormData();
      form.append("file", blob, "digit.png");
      form.append("label", $("label").value);
      await halt();
      try {
        const state = await call("POST", api(`/${app.id}/follow`), form);
        app.log.push(["own"]);
        show(state);
        $("update").hidden = true;
        const f = app.state.follow;
        status(`Following your ${f.label}: the net says ${argmax(f.probabilities)} (${(100 * Math.max(...f.probabilities)).toFixed(1)}%). Its pixels are on the left of the network.`);
        if (window.matchMedia("(max-width: 720px)").matches) $("network").scrollIntoView({ behavior: "smooth" });
      } catch (e) { status(e.message, true); }
    }, "image/png");
  });
}

// --- wiring ------------------------------------------------------------------------------------------

$("play").addEventListener("click", () => (app.playing ? stop() : play()));
$("step").addEventListener("click", async () => { await halt(); stepOnce(1); });
$("reset").addEventListener("click", start);
$("one").addEventListener("click", oneDigit);
$("another").addEventListener("click", () => followIndex(Math.floor(Math.random() * 60000)));
$("one-step").addEventListener("click", stepOnDigit);
$("view-forward").addEventListener("click", () => setView("forward"));
$("view-backward").addEventListener("click", () => setView("backward"));
$("check").addEventListener("click", gradcheck);
$("lesson-start").addEventListener("click", lessonStart);
$("lesson-next").addEventListener("click", () => { app.lesson += 1; lessonShow(); });
$("lesson-back").addEventListener("click", () => { app.lesson -= 1; lessonShow(); });
$("lesson-end").addEventListener("click", lessonEnd);
$("form").addEventListener("submit", (e) => { e.preventDefault(); start(); });
$("net").addEventListener("pointerup", (e) => {
  const r = $("net").getBoundingClientRect();
  setSelected(pick(e.clientX - r.left, e.clientY - r.top, e.pointerType === "touch" ? 12 : 5));
  // on a phone the numbers are below the network: bring their heading into sight
  if (app.selected && window.matchMedia("(max-width: 720px)").matches) {
    const top = $("details").getBoundingClientRect().top;
    if (top > window.innerHeight - 120) window.scrollBy({ top: top - window.innerHeight + 240, behavior: "smooth" });
  }
});
document.addEventListener("keydown", (e) => {
  if (e.key === " " && e.target === document.body) { e.preventDefault(); app.playing ? stop() : play(); }
});
window.addEventListener("resize", draw);
// While the page is open, the server hears from it at least every 20 s; a page that has gone
// stops, and its session is the first to make room for a new one.
setInterval(() => { if (app.id && !app.playing) fetch(`/api/learn/${app.id}/heartbeat`, { method: "POST" }).catch(() => {}); }, HEARTBEAT_MS);
if (window.matchMedia("(max-width: 720px)").matches) $("settings").open = false;
setupPad();
resume().then(() => { if (new URLSearchParams(location.search).get("lesson")) lessonStart(); });
