// The drawing page of `mlp serve`: draw (mouse, pen or finger) or drop a photo; after each
// stroke the drawing goes to POST /api/predict at full resolution, where it is prepared the
// way MNIST was made, and the answer is drawn: the digit, the ten probabilities, the 28x28
// input the network saw and its sensitivity map.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const canvas = $("canvas"), ctx = canvas.getContext("2d");
  const DEBOUNCE_MS = 150;
  const RED = [214, 39, 40], BLUE = [31, 119, 180]; // the colours of mnist_mlp.pictures.sensitivity_rgb

  let classes = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
  let strokes = [];       // each stroke: points [x, y] in units of the canvas side (0..1)
  let current = null;     // the stroke being drawn
  let background = null;  // an uploaded image, drawn under the strokes
  let uploaded = null;    // the uploaded file itself: sent as it is while nothing is drawn over it
  let sent = 0, timer = null;

  // --- drawing ---------------------------------------------------------------------------------

  function fitCanvas() {
    const side = canvas.getBoundingClientRect().width;
    const size = Math.max(1, Math.round(side * (window.devicePixelRatio || 1)));
    if (canvas.width !== size) { canvas.width = canvas.height = size; redraw(); }
  }

  function style() {
    ctx.lineCap = ctx.lineJoin = "round";
    ctx.strokeStyle = ctx.fillStyle = "#111";
    ctx.lineWidth = canvas.width / 15; // a marker's width; the server evens out any width anyway
  }

  function redraw() {
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    if (background) {
      const s = Math.min(canvas.width / background.width, canvas.height / background.height);
      const w = background.width * s, h = background.height * s;
      ctx.drawImage(background, (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
    }
    for (const points of strokes) drawStroke(points);
    $("placeholder").hidden = strokes.length > 0 || background !== null;
    $("undo").disabled = strokes.length === 0;
    $("clear").disabled = strokes.length === 0 && background === null;
  }

  function drawStroke(points, from = 0) {
    style();
    const side = canvas.width;
    if (points.length === 1) {
      ctx.beginPath();
      ctx.arc(points[0][0] * side, points[0][1] * side, ctx.lineWidth / 2, 0, 2 * Math.PI);
      ctx.fill();
      return;
    }
    ctx.beginPath();
    const start = Math.max(0, from - 1);
    ctx.moveTo(points[start][0] * side, points[start][1] * side);
    for (let i = start + 1; i < points.length; i++) ctx.lineTo(points[i][0] * side, points[i][1] * side);
    ctx.stroke();
  }

  function pointOf(e) {
    const r = canvas.getBoundingClientRect();
    return [(e.clientX - r.left) / r.width, (e.clientY - r.top) / r.height];
  }

  canvas.addEventListener("pointerdown", (e) => {
    if (e.pointerType === "mouse" && e.button !== 0) return;
    e.preventDefault();
    canvas.setPointerCapture(e.pointerId);
    clearTimeout(timer);
    uploaded = null; // the canvas, not the file, is what the user now means
    current = [pointOf(e)];
    strokes.push(current);
    redraw();
  });

  canvas.addEventListener("pointermove", (e) => {
    if (!current) return;
    e.preventDefault();
    const from = current.length;
    const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
    for (const ev of (events.length ? events : [e])) current.push(pointOf(ev));
    drawStroke(current, from);
  });

  function endStroke() {
    if (!current) return;
    current = null;
    schedule();
  }
  canvas.addEventListener("pointerup", endStroke);
  canvas.addEventListener("pointercancel", endStroke);
  canvas.addEventListener("lostpointercapture", endStroke);

  function undo() {
    if (!strokes.length) return;
    strokes.pop();
    redraw();
    if (strokes.length || background) schedule(); else reset();
  }

  function clearAll() {
    strokes = []; background = null; uploaded = null; current = null;
    clearTimeout(timer);
    sent++; // an answer still on its way is for a drawing that is gone
    redraw();
    reset();
  }

  $("undo").addEventListener("click", undo);
  $("clear").addEventListener("click", clearAll);
  document.addEventListener("keydown", (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key === "z") { e.preventDefault(); undo(); }
    if (e.key === "Escape") clearAll();
  });

  // --- photos: the file field and drag and drop ------------------------------------------------

  async function useFile(file) {
    if (!file) return;
    strokes = []; current = null; uploaded = file; background = null;
    try { background = await createImageBitmap(file); } catch (_) { /* the browser can't show it; the server may read it */ }
    redraw();
    send();
  }

  $("file").addEventListener("change", (e) => { useFile(e.target.files[0]); e.target.value = ""; });
  const drop = $("drop");
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); $("drop-hint").hidden = false; });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, () => { drop.classList.remove("over"); $("drop-hint").hidden = true; });
  }
  drop.addEventListener("drop", (e) => { e.preventDefault(); useFile(e.dataTransfer.files[0]); });

  // --- asking the server -----------------------------------------------------------------------

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(send, DEBOUNCE_MS);
  }

  async function send() {
    const id = ++sent;
    const body = uploaded || await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
    if (id !== sent) return;
    setStatus("Thinking…");
    document.body.dataset.state = "busy";
    let answer, ok;
    try {
      const response = await fetch("/api/predict?top_k=10", {
        method: "POST", headers: {"Content-Type": body.type || "application/octet-stream"}, body});
      ok = response.ok;
      answer = await response.json();
    } catch (err) {
      ok = false;
      answer = {error: "the server did not answer (is mlp serve still running?)"};
    }
    if (id !== sent) return; // a newer drawing's answer is on its way
    if (ok) show(answer); else showError(answer.error || "something went wrong");
  }

  // --- showing the answer ----------------------------------------------------------------------

  function setStatus(text, isError = false) {
    $("status").textContent = text;
    $("status").classList.toggle("error", isError);
  }

  function buildBars() {
    const list = $("bars");
    list.textContent = "";
    classes.forEach((name) => {
      const li = document.createElement("li");
      li.innerHTML = '<span class="name"></span><span class="track"><span class="fill"></span></span><span class="pct"></span>';
      li.querySelector(".name").textContent = name;
      li.querySelector(".name").title = name;
      list.appendChild(li);
    });
    setBars(new Array(classes.length).fill(0), -1);
  }

  function setBars(probs, top) {
    [...$("bars").children].forEach((li, i) => {
      li.querySelector(".fill").style.width = `${(100 * probs[i]).toFixed(1)}%`;
      li.querySelector(".pct").textContent = `${(100 * probs[i]).toFixed(1)}%`;
      li.classList.toggle("top", i === top);
    });
  }

  function show(a) {
    const probs = new Array(classes.length).fill(0);
    for (const [c, p] of a.top_k) probs[c] = p;
    const digit = $("digit");
    digit.textContent = a.label;
    digit.classList.toggle("long", a.label.length > 2);
    $("verdict").textContent = `It looks like ${/^\d$/.test(a.label) ? "a " : ""}${a.label}`;
    setStatus(`${(100 * a.probability).toFixed(1)}% sure`);
    setBars(probs, a.prediction);
    drawPixels($("seen"), a.input, (v) => { const g = Math.round(255 * (1 - v)); return [g, g, g]; });
    drawSensitivity(a.input, a.sensitivity);
    $("sentence").textContent = `Red pixels are where more ink would make the network more sure it is ` +
      `"${a.label}"; blue ones are where ink speaks against "${a.label}". The stronger the colour, the larger the effect.`;
    $("mini").innerHTML = "";
    $("mini").append(a.label, Object.assign(document.createElement("small"), {textContent: `${(100 * a.probability).toFixed(0)}%`}));
    document.body.dataset.prediction = String(a.prediction);
    document.body.dataset.state = "ready";
  }

  function showError(message) {
    $("mini").textContent = "?";
    $("digit").textContent = "?";
    $("digit").classList.remove("long");
    $("verdict").textContent = "No answer";
    setStatus(message, true);
    setBars(new Array(classes.length).fill(0), -1);
    document.body.dataset.prediction = "";
    document.body.dataset.state = "error";
  }

  function reset() {
    $("mini").textContent = "";
    $("digit").textContent = "?";
    $("digit").classList.remove("long");
    $("verdict").textContent = "Waiting for a digit";
    setStatus("");
    setBars(new Array(classes.length).fill(0), -1);
    for (const id of ["seen", "sensitivity"]) {
      const c = $(id).getContext("2d");
      c.clearRect(0, 0, 28, 28);
    }
    document.body.dataset.prediction = "";
    document.body.dataset.state = "empty";
  }

  function drawPixels(target, rows, colour) {
    const c = target.getContext("2d"), image = c.createImageData(28, 28);
    for (let y = 0; y < 28; y++) {
      for (let x = 0; x < 28; x++) {
        const [r, g, b] = colour(rows[y][x], y, x), k = 4 * (28 * y + x);
        image.data[k] = r; image.data[k + 1] = g; image.data[k + 2] = b; image.data[k + 3] = 255;
      }
    }
    c.putImageData(image, 0, 0);
  }

  function drawSensitivity(input, sens) {
    let peak = 0;
    for (const row of sens) for (const v of row) peak = Math.max(peak, Math.abs(v));
    drawPixels($("sensitivity"), input, (ink, y, x) => {
      const base = 255 - 130 * Math.min(Math.max(ink, 0), 1);
      const v = sens[y][x], alpha = peak > 0 ? 0.9 * Math.pow(Math.abs(v) / peak, 0.7) : 0;
      const tint = v > 0 ? RED : BLUE;
      return tint.map((t) => Math.round(base * (1 - alpha) + t * alpha));
    });
  }

  async function loadModel() {
    try {
      const m = await (await fetch("/api/model")).json();
      classes = m.classes;
      buildBars();
      const accuracy = m.test_accuracy == null ? "" :
        `, ${(100 * m.test_accuracy).toFixed(2)}% right on its ${m.test_images.toLocaleString("en")} test images`;
      const names = {mnist: "MNIST", "fashion-mnist": "Fashion-MNIST", relu: "ReLU"};
      $("model").textContent = `Serving ${m.checkpoint}: a ${m.layers.join("-")} ${names[m.activation] || m.activation} ` +
        `network trained on ${names[m.dataset] || m.dataset}${accuracy}.`;
    } catch (err) {
      $("model").textContent = "The model's description could not be loaded.";
    }
  }

  buildBars();
  reset();
  new ResizeObserver(fitCanvas).observe(canvas);
  fitCanvas();
  redraw();
  loadModel();
})();
