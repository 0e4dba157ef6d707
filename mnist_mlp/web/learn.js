// The Learn page: a session on the server trains; this script asks it to step, draws its state,
// and explains what is clicked. Every number comes from the server's state (mnist_mlp/learn/).
"use strict";

const $ = (id) => document.getElementById(id);
const RED = [214, 39, 40], BLUE = [31, 119, 180];
const fmt = (v, d = 4) => (v === null || v === undefined) ? "–" :
  (Math.abs(v) !== 0 && (Math.abs(v) < 1e-3 || Math.abs(v) >= 1e4)) ? v.toExponential(d - 1) : v.toFixed(d);

const app = {
  id: null, state: null, playing: false, view: "forward", selected: null, layout: null,
  stepsPerFrame: 10, busy: false, reveal: 99,
  stats: { frames: 0, fps: 0, stepsPerSecond: 0, since: performance.now(), stepsSince: 0 },
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

function settings() {
  const hidden = $("hidden").value.split(/[ ,x]+/).filter(Boolean).map(Number);
  return {
    hidden, activation: $("activation").value, lr: Number($("lr").value),
    batch_size: Number($("batch").value), momentum: Number($("momentum").value),
    l2: Number($("l2").value), seed: Number($("seed").value),
  };
}

function status(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

async function start() {
  stop();
  if (app.id) call("DELETE", `/api/learn/${app.id}`).catch(() => {});
  app.id = null;
  try {
    show(await call("POST", "/api/learn", settings()));
    app.id = app.state.id;
    status("A new network with random weights. Press Play to train it.");
  } catch (e) {
    status(e.message, true);
  }
}

async function stepOnce(steps) {
  if (!app.id || app.busy) return;
  app.busy = true;
  try {
    show(await call("POST", `/api/learn/${app.id}/step`, { steps }));
    app.stats.stepsSince += steps;
  } catch (e) {
    status(e.message, true);
  } finally {
    app.busy = false;
  }
}

async function play() {
  if (!app.id || app.busy) return;
  app.playing = true;
  app.busy = true;
  $("play").textContent = "Pause";
  // The next batch of steps is asked for before the last state is drawn, so that the server
  // trains while the page draws; the steps per request adapt to about 20 frames a second.
  let pending = null, sent = 0, last = null;
  try {
    while (app.playing) {
      const began = performance.now(), steps = app.stepsPerFrame;
      pending = call("POST", `/api/learn/${app.id}/step`, { steps });
      if (last) { show(last); app.stats.stepsSince += sent; }
      last = await pending;
      sent = steps;
      const took = performance.now() - began;
      app.stepsPerFrame = Math.max(1, Math.min(500, Math.round(steps * (took < 40 ? 1.25 : took > 55 ? 0.8 : 1))));
    }
    if (last) show(last);
  } catch (e) {
    stop();
    status(e.message, true);
  } finally {
    app.busy = false;
  }
}

function stop() {
  app.playing = false;
  $("play").textContent = "Play";
}

async function followIndex(index) {
  try { show(await call("POST", `/api/learn/${app.id}/follow`, { index })); } catch (e) { status(e.message, true); }
}

// --- the state on the page ----------------------------------------------------------------------

function show(state) {
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
  chart($("chart-acc"), h.step, h.val_acc, { min: 0, max: 1, colour: "#16a34a", percent: true });
  draw();
  if (app.selected) explain(app.selected);
  const now = performance.now(), s = app.stats;
  s.frames += 1;
  if (now - s.since > 1000) {
    s.fps = 1000 * s.framesInWindow / (now - s.since) || 0;
    s.stepsPerSecond = 1000 * s.stepsSince / (now - s.since);
    s.since = now; s.framesInWindow = 0; s.stepsSince = 0;
    if (app.playing) status(`training: ${s.stepsPerSecond.toFixed(0)} steps a second, ${s.fps.toFixed(0)} frames a second drawn`);
  }
  s.framesInWindow = (s.framesInWindow || 0) + 1;
}

const argmax = (a) => a.indexOf(Math.max(...a));
const sig = (v) => (v === 0 ? "0" : v.toPrecision(7)); // seven significant digits, any magnitude

function colour(v, peak) { // red for positive, blue for negative, white for 0
  const t = peak > 0 ? Math.min(1, Math.abs(v) / peak) : 0;
  const c = v >= 0 ? RED : BLUE;
  return [255 + (c[0] - 255) * t, 255 + (c[1] - 255) * t, 255 + (c[2] - 255) * t];
}

function pixels(canvas, values, signed, peak) {
  const ctx = canvas.getContext("2d"), img = ctx.createImageData(28, 28);
  if (peak === undefined) peak = signed ? Math.max(...values.map(Math.abs)) : 1;
  values.forEach((v, i) => {
    const c = signed ? colour(v, peak) : [255 * v, 255 * v, 255 * v];
    img.data.set([c[0], c[1], c[2], 255], 4 * i);
  });
  ctx.putImageData(img, 0, 0);
}

function chart(canvas, xs, ys, { log = false, min, max, colour: stroke, percent = false }) {
  const ctx = canvas.getContext("2d"), W = canvas.width, H = canvas.height, pad = 28;
  ctx.clearRect(0, 0, W, H);
  const pts = xs.map((x, i) => [x, ys[i]]).filter((p) => p[1] !== null && isFinite(p[1]) && (!log || p[1] > 0));
  ctx.fillStyle = "#6b7280"; ctx.font = "11px system-ui";
  if (pts.length < 2) { ctx.fillText("press Play", W / 2 - 25, H / 2); return; }
  const f = log ? Math.log10 : (v) => v;
  const lo = min !== undefined ? min : Math.min(...pts.map((p) => f(p[1])));
  const hi = max !== undefined ? max : Math.max(...pts.map((p) => f(p[1])));
  const x0 = pts[0][0], x1 = pts[pts.length - 1][0] || 1;
  const X = (x) => pad + (W - pad - 6) * (x - x0) / Math.max(1, x1 - x0);
  const Y = (y) => H - 16 - (H - 24) * (f(y) - lo) / Math.max(1e-9, hi - lo);
  ctx.strokeStyle = "#e5e7eb"; ctx.beginPath(); ctx.moveTo(pad, 6); ctx.lineTo(pad, H - 16); ctx.lineTo(W - 4, H - 16); ctx.stroke();
  ctx.fillText(percent ? `${(100 * (log ? 10 ** hi : hi)).toFixed(0)}%` : fmt(log ? 10 ** hi : hi, 2), 1, 12);
  ctx.fillText(percent ? `${(100 * (log ? 10 ** lo : lo)).toFixed(0)}%` : fmt(log ? 10 ** lo : lo, 2), 1, H - 18);
  ctx.fillText(`step ${x1.toLocaleString("en")}`, W - 80, H - 3);
  ctx.strokeStyle = stroke; ctx.lineWidth = 1.6; ctx.beginPath();
  pts.forEach(([x, y], i) => (i ? ctx.lineTo(X(x), Y(y)) : ctx.moveTo(X(x), Y(y))));
  ctx.stroke();
}

// --- the network ----------------------------------------------------------------------------------

function layout(canvas, state) {
  const W = canvas.clientWidth, H = canvas.clientHeight;
  const sizes = [784, ...state.config.hidden, 10], L = sizes.length - 1; // L weight layers
  const narrow = W < 560;
  const inputSize = narrow ? 56 : 96;
  const columns = [{ x: 8, kind: "input" }];
  const usable = W - inputSize - (narrow ? 80 : 120);
  const n1 = sizes[1], cols = Math.max(1, Math.ceil(n1 / 8)), rows = Math.ceil(n1 / cols);
  // as large as the height allows, leaving room for the links and the outputs
  const tile = Math.max(8, Math.floor(Math.min((H - 30) / rows - 6, (usable * 0.45) / cols - 6, narrow ? 40 : 72)));
  const nodes = [[]]; // per layer: {x, y, r|size, layer, index}
  const x1 = inputSize + 24 + (narrow ? 6 : 30);
  const top1 = (H - rows * (tile + 6)) / 2;
  nodes.push(Array.from({ length: n1 }, (_, j) => ({ layer: 1, index: j, tile,
    x: x1 + (j % cols) * (tile + 6), y: top1 + Math.floor(j / cols) * (tile + 6) })));
  const right = W - (narrow ? 70 : 110);
  for (let l = 2; l <= L; l++) {
    const n = sizes[l], gap = Math.min(narrow ? 36 : 48, (H - 20) / n);
    const x = l === L ? right : x1 + cols * (tile + 6) + (right - x1 - cols * (tile + 6)) / 2;
    const r = Math.max(4, Math.min(l === L ? (narrow ? 12 : 15) : 9, gap / 2 - 2));
    nodes.push(Array.from({ length: n }, (_, k) => ({ layer: l, index: k, r, x, y: H / 2 + (k - (n - 1) / 2) * gap })));
  }
  return { W, H, sizes, L, nodes, inputSize, narrow };
}

// the point where layer l's neuron sends its links out, and where it receives them
const outPort = (n) => n.tile ? [n.x + n.tile, n.y + n.tile / 2] : [n.x + n.r, n.y];
const inPort = (n) => n.tile ? [n.x, n.y + n.tile / 2] : [n.x - n.r, n.y];

function draw() {
  const state = app.state, canvas = $("net");
  if (!state) return;
  const dpr = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(canvas.clientWidth * dpr)) {
    canvas.width = Math.round(canvas.clientWidth * dpr); canvas.height = Math.round(canvas.clientHeight * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  const lay = app.layout = layout(canvas, state), f = state.follow, back = app.view === "backward";
  ctx.clearRect(0, 0, lay.W, lay.H);
  // the input: the followed digit (forward) or its pixels' sensitivity (backward)
  const inputCanvas = document.createElement("canvas");
  inputCanvas.width = inputCanvas.height = 28;
  if (back) pixels(inputCanvas, f.dx, true); else pixels(inputCanvas, f.pixels.flat().map((v) => v / 255), false);
  ctx.imageSmoothingEnabled = false;
  const iy = (lay.H - lay.inputSize) / 2;
  ctx.drawImage(inputCanvas, 8, iy, lay.inputSize, lay.inputSize);
  ctx.fillStyle = "#6b7280"; ctx.font = "12px system-ui";
  ctx.fillText(back ? "dL/dx" : `input: a ${f.label}`, 8, iy - 6);
  ctx.fillText("784 pixels", 8, iy + lay.inputSize + 14);
  // links between the neuron layers: colour = sign, width = size, of the weight or of its gradient
  for (let l = 2; l <= lay.L; l++) {
    if (app.reveal < l) break;
    const W = state.params[`W${l}`], G = f.grads[`W${l}`];
    const M = back ? G : W, peak = Math.max(...M.flat().map(Math.abs)) || 1;
    lay.nodes[l - 1].forEach((a, j) => lay.nodes[l].forEach((b, k) => {
      const v = M[j][k], t = Math.abs(v) / peak;
      if (t < 0.02) return;
      const c = v >= 0 ? RED : BLUE;
      ctx.strokeStyle = `rgba(${c[0]},${c[1]},${c[2]},${0.15 + 0.75 * t})`;
      ctx.lineWidth = 0.4 + 3 * t;
      const [ax, ay] = outPort(a), [bx, by] = inPort(b);
      ctx.beginPath(); ctx.moveTo(ax, ay); ctx.lineTo(bx, by); ctx.stroke();
    }));
  }
  // the first hidden layer: each neuron's 784 incoming links as a 28x28 picture
  const W1 = state.params.W1, G1 = f.grads.W1, n1 = lay.sizes[1];
  const act1 = f.a[0], dz1 = f.dz[0];
  const peakA = Math.max(...act1.map(Math.abs)) || 1, peakD = Math.max(...dz1.map(Math.abs)) || 1;
  // one colour scale for every picture, so that a weak neuron looks weak
  const M1 = back ? G1 : W1, peak1 = Math.max(...M1.map((r) => Math.max(...r.map(Math.abs)))) || 1;
  lay.nodes[1].forEach((node, j) => {
    const column = M1.map((row) => row[j]);
    const tileCanvas = document.createElement("canvas");
    tileCanvas.width = tileCanvas.height = 28;
    pixels(tileCanvas, column, true, peak1);
    ctx.globalAlpha = app.reveal >= 1 ? 1 : 0.25;
    ctx.drawImage(tileCanvas, node.x, node.y, node.tile, node.tile);
    ctx.globalAlpha = 1;
    // the frame says what the neuron does for the followed digit
    const v = back ? dz1[j] : act1[j];
    const c = back ? colour(v, peakD) : [255 * (1 - Math.abs(v) / peakA), 255 * (1 - Math.abs(v) / peakA), 255 * (1 - Math.abs(v) / peakA)];
    ctx.strokeStyle = `rgb(${c.join(",")})`; ctx.lineWidth = 3;
    ctx.strokeRect(node.x - 1.5, node.y - 1.5, node.tile + 3, node.tile + 3);
    if (isSelected(1, j)) { ctx.strokeStyle = "#f59e0b"; ctx.lineWidth = 2; ctx.strokeRect(node.x - 4, node.y - 4, node.tile + 8, node.tile + 8); }
  });
  // the other layers as circles; outputs with their digit and probability
  for (let l = 2; l <= lay.L; l++) {
    const values = back ? f.dz[l - 1] : f.a[l - 1], peak = Math.max(...values.map(Math.abs)) || 1;
    lay.nodes[l].forEach((node, k) => {
      const v = values[k];
      const c = back ? colour(v, peak) : (l === lay.L ? colour(v, 1) : colour(Math.abs(v), peak));
      ctx.globalAlpha = app.reveal >= l ? 1 : 0.25;
      ctx.fillStyle = `rgb(${c.join(",")})`; ctx.strokeStyle = "#9ca3af"; ctx.lineWidth = 1;
      ctx.beginPath(); ctx.arc(node.x, node.y, node.r, 0, 2 * Math.PI); ctx.fill(); ctx.stroke();
      ctx.globalAlpha = 1;
      if (isSelected(l, k)) { ctx.strokeStyle = "#f59e0b"; ctx.lineWidth = 2.5; ctx.beginPath(); ctx.arc(node.x, node.y, node.r + 4, 0, 2 * Math.PI); ctx.stroke(); }
      if (l === lay.L) {
        ctx.fillStyle = k === f.label ? "#111827" : "#374151"; ctx.font = `${k === f.label ? "bold " : ""}13px system-ui`;
        ctx.fillText(String(k), node.x - 4, node.y + 4.5);
        const p = f.probabilities[k], w = lay.narrow ? 40 : 70;
        ctx.fillStyle = "#e5e7eb"; ctx.fillRect(node.x + node.r + 6, node.y - 4, w, 8);
        ctx.fillStyle = k === argmax(f.probabilities) ? "#2563eb" : "#94a3b8"; ctx.fillRect(node.x + node.r + 6, node.y - 4, w * p, 8);
        ctx.fillStyle = "#6b7280"; ctx.font = "10px system-ui";
        ctx.fillText(back ? fmt(v, 3) : `${(100 * p).toFixed(0)}%`, node.x + node.r + 6, node.y + 15);
      }
    });
  }
  const sel = app.selected;
  if (sel && sel.kind === "link") {
    const a = lay.nodes[sel.layer - 1][sel.j], b = lay.nodes[sel.layer][sel.k];
    ctx.strokeStyle = "#f59e0b"; ctx.lineWidth = 4;
    const [ax, ay] = outPort(a), [bx, by] = inPort(b);
    ctx.beginPath(); ctx.moveTo(ax, ay); ctx.lineTo(bx, by); ctx.stroke();
  }
  $("legend").textContent = back
    ? "Backward: each neuron's sensitivity dL/dz for the followed digit (red: raising its z would raise the loss, blue: lower it). Each picture shows its links' gradients; each line a link's gradient (its input's activation × the sensitivity it leads to)."
    : "Forward: each picture shows a hidden neuron's 784 incoming weights (red positive, blue negative); its frame is darker the more it is active for the followed digit. Lines: the links to the outputs (red positive, blue negative, wider = larger). The outputs' bars: the probabilities.";
}

const isSelected = (layer, index) => app.selected && app.selected.kind === "neuron" && app.selected.layer === layer && app.selected.index === index;

function pick(x, y) {
  const lay = app.layout;
  if (!lay) return null;
  for (let l = 1; l <= lay.L; l++) {
    for (const n of lay.nodes[l]) {
      const hit = n.tile ? (x >= n.x - 2 && x <= n.x + n.tile + 2 && y >= n.y - 2 && y <= n.y + n.tile + 2)
        : Math.hypot(x - n.x, y - n.y) <= n.r + 4;
      if (hit) return { kind: "neuron", layer: l, index: n.index };
    }
  }
  let best = null, bestD = 6;
  for (let l = 2; l <= lay.L; l++) {
    lay.nodes[l - 1].forEach((a) => lay.nodes[l].forEach((b) => {
      const [ax, ay] = outPort(a), [bx, by] = inPort(b);
      const dx = bx - ax, dy = by - ay, t = Math.max(0, Math.min(1, ((x - ax) * dx + (y - ay) * dy) / (dx * dx + dy * dy)));
      const d = Math.hypot(x - ax - t * dx, y - ay - t * dy);
      if (d < bestD) { bestD = d; best = { kind: "link", layer: l, j: a.index, k: b.index }; }
    }));
  }
  return best;
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

function explain(sel) {
  const s = app.state, f = s.follow, act = s.config.activation, L = s.config.hidden.length + 1;
  $("d-check").hidden = sel.kind !== "link" && !(sel.kind === "neuron" && sel.layer === 1);
  $("check-out").hidden = true;
  if (sel.kind === "neuron" && sel.layer === L) {
    const k = sel.index, p = f.probabilities[k], target = k === f.label ? 1 : 0;
    $("d-title").textContent = `Output neuron ${k}`;
    $("d-body").innerHTML = `<p>Its sum z = <b>${fmt(f.z[L - 1][k], 6)}</b>; softmax turns the ten sums into probabilities: p = <b>${fmt(p, 6)}</b>.</p>
      <p>Its sensitivity is p − target: the loss is lowered by pushing p towards ${target} (this digit is a ${f.label}).</p>
      <table class="nums">${row(["p", fmt(p, 8)])}${row(["target", target])}${row(["sensitivity dL/dz", `<span id="d-sens">${fmt(f.dz[L - 1][k], 8)}</span>`], "total")}</table>`;
    return;
  }
  if (sel.kind === "neuron") {
    const l = sel.layer, j = sel.index, z = f.z[l - 1][j], a = f.a[l - 1][j];
    const Wn = s.params[`W${l + 1}`], next = f.dz[l];
    const terms = next.map((d, k) => ({ k, w: Wn[j][k], d, t: Wn[j][k] * d })).sort((p, q) => Math.abs(q.t) - Math.abs(p.t));
    const sum = terms.reduce((acc, t) => acc + t.t, 0), fp = fprime(act, z, a);
    const shown = terms.slice(0, 6);
    const nextName = l + 1 === L ? "output" : `layer ${l + 1} neuron`;
    $("d-title").textContent = `Hidden neuron ${j} of layer ${l}`;
    $("d-body").innerHTML = `<p>Forward: z = <b>${fmt(z, 6)}</b> (its ${l === 1 ? "784 pixels" : "inputs"} times their weights, plus its bias), a = ${act}(z) = <b>${fmt(a, 6)}</b>.</p>
      <p>Backward: its sensitivity is f′(z) times the sum, over the neurons it feeds, of link weight × their sensitivity.</p>
      <table class="nums"><tr><th>to ${nextName}</th><th>weight</th><th>× its dL/dz</th><th>= term</th></tr>
      ${shown.map((t) => row([t.k, fmt(t.w, 4), fmt(t.d, 4), fmt(t.t, 4)])).join("")}
      ${terms.length > shown.length ? row([`${terms.length - shown.length} more`, "", "", fmt(terms.slice(6).reduce((acc, t) => acc + t.t, 0), 4)]) : ""}
      </table>
      <table class="nums">
      ${row(["sum of the terms", `<span id="d-sum">${sig(sum)}</span>`], "total")}
      ${row([`f′(z) = ${act === "sigmoid" ? "a(1 − a)" : act === "tanh" ? "1 − a²" : "1 if z > 0, else 0"}`, `<span id="d-fprime">${sig(fp)}</span>`])}
      ${row(["sum × f′(z)", `<span id="d-product">${sig(sum * fp)}</span>`], "total")}
      ${row(["its sensitivity dL/dz, from the server", `<span id="d-sens">${sig(f.dz[l - 1][j])}</span>`])}</table>`;
    app.checkTarget = l === 1 ? { param: "b1", index: [j] } : { param: `b${l}`, index: [j] };
    return;
  }
  const { layer: l, j, k } = sel, w = s.params[`W${l}`][j][k], a = f.a[l - 2][j], d = f.dz[l - 1][k];
  const g = f.grads[`W${l}`][j][k], lr = s.config.lr;
  $("d-title").textContent = `The link from neuron ${j} to ${l === L ? "output" : "neuron"} ${k}`;
  $("d-body").innerHTML = `<p>Its gradient is the activation at its start times the sensitivity at its end.</p>
    <table class="nums">${row(["weight W" + l + `[${j}, ${k}]`, fmt(w, 8)])}
    ${row(["its input's activation a", fmt(a, 8)])}${row(["× sensitivity it carries", fmt(d, 8)])}
    ${row(["= gradient dL/dw", `<span id="d-grad">${fmt(g, 8)}</span>`], "total")}
    ${row([`update: −lr × gradient (lr ${lr})`, fmt(-lr * g, 8)])}${row(["new weight, stepping on this digit alone", fmt(w - lr * g, 8)])}</table>`;
  app.checkTarget = { param: `W${l}`, index: [j, k] };
}

async function gradcheck() {
  if (!app.checkTarget) return;
  try {
    const r = await call("POST", `/api/learn/${app.id}/gradcheck`, app.checkTarget);
    const out = $("check-out");
    out.innerHTML = `${row([`backprop (${r.param}[${r.index.join(", ")}])`, fmt(r.backprop, 10)])}${row(["finite difference, float64", fmt(r.numeric, 10)])}
      ${row(["relative error", `<span id="d-relerr">${r.rel_error.toExponential(2)}</span>`], "total")}`;
    out.hidden = false;
  } catch (e) { status(e.message, true); }
}

// --- one digit, forward then backward, animated ---------------------------------------------------

async function oneDigit() {
  stop();
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

function setupPad() {
  const pad = $("pad"), ctx = pad.getContext("2d");
  const clear = () => { ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, pad.width, pad.height); $("follow-own").disabled = true; };
  clear();
  let last = null;
  const at = (e) => { const r = pad.getBoundingClientRect(); return [(e.clientX - r.left) * pad.width / r.width, (e.clientY - r.top) * pad.height / r.height]; };
  pad.addEventListener("pointerdown", (e) => { last = at(e); pad.setPointerCapture(e.pointerId); });
  pad.addEventListener("pointermove", (e) => {
    if (!last) return;
    const p = at(e);
    ctx.strokeStyle = "#000"; ctx.lineWidth = 14; ctx.lineCap = "round";
    ctx.beginPath(); ctx.moveTo(...last); ctx.lineTo(...p); ctx.stroke();
    last = p; $("follow-own").disabled = false;
  });
  pad.addEventListener("pointerup", () => { last = null; });
  $("clear-own").addEventListener("click", clear);
  $("follow-own").addEventListener("click", () => pad.toBlob(async (blob) => {
    const form = new FormData();
    form.append("file", blob, "digit.png");
    form.append("label", $("label").value);
    try {
      show(await call("POST", `/api/learn/${app.id}/follow`, form));
      status(`Following your ${$("label").value}.`);
    } catch (e) { status(e.message, true); }
  }, "image/png"));
}

// --- wiring ------------------------------------------------------------------------------------------

$("play").addEventListener("click", () => (app.playing ? stop() : play()));
$("step").addEventListener("click", () => { stop(); stepOnce(1); });
$("reset").addEventListener("click", start);
$("one").addEventListener("click", oneDigit);
$("another").addEventListener("click", () => followIndex(Math.floor(Math.random() * 60000)));
$("view-forward").addEventListener("click", () => setView("forward"));
$("view-backward").addEventListener("click", () => setView("backward"));
$("check").addEventListener("click", gradcheck);
$("form").addEventListener("submit", (e) => { e.preventDefault(); start(); });
$("net").addEventListener("click", (e) => {
  const r = $("net").getBoundingClientRect(), hit = pick(e.clientX - r.left, e.clientY - r.top);
  app.selected = hit;
  if (hit) explain(hit);
  draw();
});
document.addEventListener("keydown", (e) => {
  if (e.key === " " && e.target === document.body) { e.preventDefault(); app.playing ? stop() : play(); }
});
window.addEventListener("resize", draw);
window.addEventListener("pagehide", () => { if (app.id) fetch(`/api/learn/${app.id}`, { method: "DELETE", keepalive: true }); });
if (window.matchMedia("(max-width: 720px)").matches) $("settings").open = false;
setupPad();
start();
