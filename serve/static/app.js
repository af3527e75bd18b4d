// focsam-onnx serve: the labelling page. Plain JavaScript, no build step, no network but this
// server. Every click goes to the server, which saves the masks as it answers.
"use strict";

const PALETTE = [[255, 99, 71], [60, 180, 255], [255, 200, 40], [170, 110, 255], [50, 220, 140],
                 [255, 120, 200], [0, 200, 200], [240, 140, 30], [150, 210, 60], [230, 80, 120]];
const $ = (id) => document.getElementById(id);
const photo = $("photo"), masksCanvas = $("masks"), pointsCanvas = $("points");

const state = {
  images: [],            // [{name, objects}]
  current: null,         // image name
  ready: false,          // embeddings ready for clicks
  width: 0, height: 0,
  objects: new Map(),    // object_id -> {prompts, iou, canvas}
  activeId: null,        // object being clicked
  sessionId: null,
  negative: false,       // left click's label is negative
  chain: Promise.resolve(),  // clicks are sent one after another, in order
  openSeq: 0,
};
// Every click event the page handled, in order (the browser tests read it).
window.focsamEvents = [];

function enc(name) { return encodeURIComponent(name); }

async function api(path, options = {}) {
  const response = await fetch(path, options);
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail; } catch (_) { /* not JSON */ }
    throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return response;
}
async function apiJson(path, options) { return (await api(path, options)).json(); }
function postJson(path, body) {
  return apiJson(path, {method: "POST", headers: {"Content-Type": "application/json"},
                        body: JSON.stringify(body ?? {})});
}

let messageTimer = null;
function showMessage(text) {
  const box = $("message");
  box.textContent = text;
  box.classList.add("shown");
  clearTimeout(messageTimer);
  messageTimer = setTimeout(() => box.classList.remove("shown"), 4000);
}

// masks

function colour(objectId) { return PALETTE[(objectId - 1) % PALETTE.length]; }

function maskCanvas(mask, rgb) {
  // Base64 row-major bits (most significant first) -> a canvas in the object's colour.
  const canvas = document.createElement("canvas");
  canvas.width = mask.width;
  canvas.height = mask.height;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(mask.width, mask.height);
  const pixels = new Uint32Array(image.data.buffer);
  const packed = ((255 << 24) | (rgb[2] << 16) | (rgb[1] << 8) | rgb[0]) >>> 0;  // little endian
  const bytes = atob(mask.bits);
  for (let i = 0; i < bytes.length; i++) {
    const byte = bytes.charCodeAt(i);
    if (byte === 0) continue;
    for (let bit = 0; bit < 8; bit++) {
      if (byte & (128 >> bit)) pixels[i * 8 + bit] = packed;
    }
  }
  ctx.putImageData(image, 0, 0);
  return canvas;
}

function setObject(objectId, prompts, mask, iou, version) {
  if (!mask) { state.objects.delete(objectId); return; }
  // version: the saved record's (undefined until this tab hears it was saved)
  state.objects.set(objectId, {prompts, iou, version, canvas: maskCanvas(mask, colour(objectId))});
}

function draw() {
  const ctx = masksCanvas.getContext("2d");
  ctx.clearRect(0, 0, masksCanvas.width, masksCanvas.height);
  for (const [id, obj] of state.objects) {
    ctx.globalAlpha = id === state.activeId ? 1.0 : 0.6;
    ctx.drawImage(obj.canvas, 0, 0);
  }
  ctx.globalAlpha = 1.0;
  const pts = pointsCanvas.getContext("2d");
  pts.clearRect(0, 0, pointsCanvas.width, pointsCanvas.height);
  const active = state.objects.get(state.activeId);
  const scale = state.width / Math.max(1, pointsCanvas.getBoundingClientRect().width);
  const radius = Math.max(2, 5 * scale);
  for (const {x, y, positive} of (active ? active.prompts.filter((p) => "x" in p) : [])) {
    pts.beginPath();
    pts.arc(x + 0.5, y + 0.5, radius, 0, 2 * Math.PI);
    pts.fillStyle = positive ? "#38d27a" : "#ff5a5f";
    pts.fill();
    pts.lineWidth = Math.max(1, 1.5 * scale);
    pts.strokeStyle = "#fff";
    pts.stroke();
  }
  renderObjects();
}

function renderObjects() {
  const list = $("objects");
  list.replaceChildren();
  for (const [id, obj] of [...state.objects].sort((a, b) => a[0] - b[0])) {
    const item = document.createElement("li");
    item.dataset.objectId = id;
    if (id === state.activeId) item.classList.add("active");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${colour(id).join(",")})`;
    const label = document.createElement("span");
    label.className = "label";
    const n = obj.prompts.length;
    label.textContent = `Object ${id} · ${n} click${n === 1 ? "" : "s"} · IoU ${obj.iou.toFixed(2)}`;
    const remove = document.createElement("button");
    remove.textContent = "×";
    remove.title = "Delete this object (Delete)";
    remove.addEventListener("click", (e) => { e.stopPropagation(); deleteObject(id); });
    item.append(swatch, label, remove);
    item.addEventListener("click", () => selectObject(id));
    list.append(item);
  }
  const row = [...$("images").children].find((li) => li.dataset.name === state.current);
  if (row) row.querySelector(".count").textContent = state.objects.size || "";
}

// images

async function loadImageList() {
  const data = await apiJson("/api/images");
  state.images = data.images;
  const list = $("images");
  list.replaceChildren();
  for (const image of state.images) {
    const item = document.createElement("li");
    item.dataset.name = image.name;
    item.classList.toggle("current", image.name === state.current);
    const name = document.createElement("span");
    name.textContent = image.name;
    const count = document.createElement("span");
    count.className = "count";
    count.textContent = image.objects || "";
    item.append(name, count);
    item.addEventListener("click", () => openImage(image.name));
    list.append(item);
  }
}

function formatSeconds(s) { return s == null ? "?" : `${s.toFixed(1)} s`; }

function showStatus(status) {
  let text;
  if (status.state === "ready") {
    text = status.from_cache ? "ready (embeddings from the cache)"
                             : `ready (encoded in ${formatSeconds(status.encode_s)})`;
  } else if (status.state === "error") {
    text = `cannot use this image: ${status.error}`;
  } else {
    text = `encoding… ${formatSeconds(status.elapsed_s)}`;
    if (status.expected_s != null) text += ` of about ${formatSeconds(status.expected_s)}`;
    if (status.queue_position > 0) text += ` (number ${status.queue_position} in the encoders' queue)`;
  }
  $("status").textContent = text;
  const bg = status.background;
  $("background").textContent = bg && (bg.running || bg.pending.length)
    ? `pre-encoding ${bg.running ?? ""}${bg.pending.length ? ` (+${bg.pending.length} waiting)` : ""}`
    : "";
}

async function openImage(name) {
  const seq = ++state.openSeq;
  Object.assign(state, {current: name, ready: false, activeId: null, sessionId: null});
  state.objects.clear();
  $("log").tBodies[0].replaceChildren();
  $("image-name").textContent = name;
  history.replaceState(null, "", `#image=${enc(name)}`);
  for (const li of $("images").children) li.classList.toggle("current", li.dataset.name === name);
  $("view").classList.add("waiting");
  let status;
  try {
    status = await postJson(`/api/images/${enc(name)}/open`);
  } catch (err) { showMessage(err.message); return; }
  showStatus(status);
  photo.src = `/api/images/${enc(name)}/image`;
  const decoded = photo.decode();  // this src's pixels (naturalWidth lags behind a new src)
  while (status.state === "encoding") {
    await new Promise((resolve) => setTimeout(resolve, 200));
    if (seq !== state.openSeq) return;
    status = await apiJson(`/api/images/${enc(name)}/status`);
    showStatus(status);
  }
  if (seq !== state.openSeq || status.state !== "ready") return;
  try {
    await decoded;
  } catch (_) {
    if (seq === state.openSeq) showMessage("the browser cannot show this image");
    return;
  }
  if (seq !== state.openSeq) return;
  fitPhoto();
  state.width = status.width;
  state.height = status.height;
  for (const c of [masksCanvas, pointsCanvas]) { c.width = state.width; c.height = state.height; }
  const saved = await apiJson(`/api/images/${enc(name)}/objects`);
  if (seq !== state.openSeq) return;
  for (const obj of saved.objects) setObject(obj.object_id, obj.prompts, obj.mask, obj.iou, obj.version);
  state.ready = true;
  $("view").classList.remove("waiting");
  document.body.dataset.ready = name;  // the browser tests wait for this
  draw();
}

function fitPhoto() {
  // Scale the image to the stage (up too: small images are clicked as comfortably as big ones).
  if (!photo.naturalWidth) return;
  const stage = $("stage");
  const fit = Math.min((stage.clientWidth - 20) / photo.naturalWidth,
                       (stage.clientHeight - 20) / photo.naturalHeight);
  photo.style.width = `${Math.max(1, Math.floor(photo.naturalWidth * fit))}px`;
  photo.style.height = `${Math.max(1, Math.floor(photo.naturalHeight * fit))}px`;
}

async function refreshBackground() {
  if (!state.current) return;
  try { showStatus(await apiJson(`/api/images/${enc(state.current)}/status`)); } catch (_) { /* */ }
}

function step(delta) {
  if (!state.images.length) return;
  const at = state.images.findIndex((i) => i.name === state.current);
  const next = Math.min(state.images.length - 1, Math.max(0, at + delta));
  if (next !== at) openImage(state.images[next].name);
}

// objects and clicks

async function startSession(objectId) {
  const body = {image: state.current};
  if (objectId != null) body.object_id = objectId;
  const session = await postJson("/api/sessions", body);
  state.sessionId = session.session_id;
  state.activeId = session.object_id;
  return session;
}

function selectObject(objectId) {
  state.chain = state.chain.then(async () => {
    try {
      await startSession(objectId);
      $("log").tBodies[0].replaceChildren();
      draw();
    } catch (err) { showMessage(err.message); }
  });
}

function newObject() {
  state.chain = state.chain.then(() => {
    state.sessionId = null;
    state.activeId = null;
    $("log").tBodies[0].replaceChildren();
    draw();
  });
}

function logRow(ev, clientMs, row) {
  row = row ?? $("log").tBodies[0].insertRow(0);
  row.className = ev.event;
  const last = ev.prompts[ev.prompts.length - 1];
  const kind = "box" in last ? "box" : last.positive ? "+" : "−";
  const refiner = ev.event === "interim" ? "running…" : ev.refiner_ran ? "ran" : ev.decoded_on_refined ? "yes" : "no";
  row.replaceChildren(...[ev.prompts.length, kind, ev.server_ms.toFixed(1),
                          clientMs.toFixed(1), refiner, ev.iou.toFixed(3)].map((v) => {
    const cell = document.createElement("td");
    cell.textContent = v;
    return cell;
  }));
  return row;
}

function handleEvent(ev, clientMs, row) {
  window.focsamEvents.push({event: ev.event, prompts: ev.prompts?.length, object_id: ev.object_id,
                            decoded_on_refined: ev.decoded_on_refined});
  if (ev.event === "error") { showMessage(ev.detail); return row; }
  if (ev.event === "saved") {
    const obj = state.objects.get(ev.object_id);
    if (obj) obj.version = ev.version;
    return row;
  }
  setObject(ev.object_id, ev.prompts, ev.mask, ev.iou);
  draw();
  return logRow(ev, clientMs, row);
}

async function sendClick(x, y, positive) {
  if (!state.sessionId) await startSession(null);
  const started = performance.now();
  const response = await api(`/api/sessions/${enc(state.sessionId)}/clicks`, {
    method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({x, y, positive})});
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "", row = null;
  for (;;) {
    const {value, done} = await reader.read();
    if (value) buffer += decoder.decode(value, {stream: true});
    let newline;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + 1);
      if (line.trim()) row = handleEvent(JSON.parse(line), performance.now() - started, row);
    }
    if (done) break;
  }
}

function onCanvasMouse(e) {
  if (e.button !== 0 && e.button !== 2) return;
  e.preventDefault();
  if (!state.ready) { showMessage("the image is still being encoded"); return; }
  const rect = pointsCanvas.getBoundingClientRect();
  const x = Math.min(state.width - 1, Math.max(0, Math.floor((e.clientX - rect.left) * state.width / rect.width)));
  const y = Math.min(state.height - 1, Math.max(0, Math.floor((e.clientY - rect.top) * state.height / rect.height)));
  const positive = e.button === 2 ? false : !state.negative;
  const image = state.current;
  state.chain = state.chain.then(async () => {
    if (state.current !== image) return;
    try { await sendClick(x, y, positive); } catch (err) { showMessage(err.message); }
  });
}

function sessionCall(action) {
  state.chain = state.chain.then(async () => {
    if (!state.sessionId) { showMessage(`nothing to ${action}: click on an object first`); return; }
    try {
      const session = await postJson(`/api/sessions/${enc(state.sessionId)}/${action}`);
      const result = session.result;
      setObject(session.object_id, session.prompts, result && result.mask, result ? result.iou : 0);
      const rows = $("log").tBodies[0];
      if (action === "reset") rows.replaceChildren();
      else if (rows.rows.length) rows.deleteRow(0);
      window.focsamEvents.push({event: action, prompts: session.prompts.length,
                                object_id: session.object_id});
      draw();
    } catch (err) { showMessage(err.message); }
  });
}

function deleteObject(objectId) {
  state.chain = state.chain.then(async () => {
    try {
      await apiJson(`/api/images/${enc(state.current)}/objects/${objectId}`, {method: "DELETE"});
      state.objects.delete(objectId);
      if (state.activeId === objectId) { state.activeId = null; state.sessionId = null; }
      draw();
    } catch (err) { showMessage(err.message); }
  });
}

// other tabs and people on the same image: their saves show here within a second

let syncQueued = false;
function queueSync() {
  if (syncQueued || !state.ready || document.visibilityState !== "visible") return;
  syncQueued = true;
  const image = state.current;
  // In the click chain, so that no answer of this tab's is in flight while the saved
  // records replace what the page shows.
  state.chain = state.chain.then(async () => {
    try { if (state.current === image && state.ready) await syncObjects(image); } catch (_) {
      /* the server is away: the next poll tries again */
    } finally { syncQueued = false; }
  });
}

async function syncObjects(image) {
  const saved = (await apiJson(`/api/images/${enc(image)}/objects?masks=false`)).objects;
  if (state.current !== image) return;
  const savedIds = new Set(saved.map((o) => o.object_id));
  let changed = false;
  for (const id of [...state.objects.keys()]) {
    if (savedIds.has(id)) continue;
    state.objects.delete(id);
    changed = true;
    if (id === state.activeId) {
      Object.assign(state, {activeId: null, sessionId: null});
      showMessage(`object ${id} was deleted elsewhere`);
    }
  }
  for (const entry of saved) {
    if (state.objects.get(entry.object_id)?.version === entry.version) continue;
    const obj = await apiJson(`/api/images/${enc(image)}/objects/${entry.object_id}`);
    if (state.current !== image) return;
    setObject(obj.object_id, obj.prompts, obj.mask, obj.iou, obj.version);
    changed = true;
  }
  if (changed) {
    window.focsamEvents.push({event: "synced", objects: state.objects.size});
    draw();
  }
}

function toggleMode() {
  state.negative = !state.negative;
  const button = $("mode");
  button.textContent = `Left click: ${state.negative ? "negative" : "positive"}`;
  button.classList.toggle("negative", state.negative);
}

function setOpacity(value) {
  const v = Math.min(100, Math.max(0, value));
  $("opacity").value = v;
  masksCanvas.style.opacity = v / 100;
}

async function upload(file) {
  try {
    const data = await apiJson(`/api/images?filename=${enc(file.name)}`, {method: "POST", body: file});
    await loadImageList();
    openImage(data.image);
  } catch (err) { showMessage(`upload failed: ${err.message}`); }
}

// wiring

pointsCanvas.addEventListener("mousedown", onCanvasMouse);
pointsCanvas.addEventListener("contextmenu", (e) => e.preventDefault());
$("undo").addEventListener("click", () => sessionCall("undo"));
$("reset").addEventListener("click", () => sessionCall("reset"));
$("new").addEventListener("click", newObject);
$("mode").addEventListener("click", toggleMode);
$("prev").addEventListener("click", () => step(-1));
$("next").addEventListener("click", () => step(1));
$("opacity").addEventListener("input", (e) => setOpacity(Number(e.target.value)));
$("upload").addEventListener("change", (e) => { if (e.target.files[0]) upload(e.target.files[0]); });
new ResizeObserver(draw).observe(photo);
window.addEventListener("resize", fitPhoto);

document.addEventListener("keydown", (e) => {
  if (e.target.tagName === "INPUT" && e.target.type !== "range") return;
  const key = e.key.toLowerCase();
  if ((e.ctrlKey || e.metaKey) && key === "z") { e.preventDefault(); sessionCall("undo"); return; }
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const actions = {
    u: () => sessionCall("undo"), r: () => sessionCall("reset"), n: newObject, enter: newObject,
    t: toggleMode, arrowright: () => step(1), d: () => step(1), arrowleft: () => step(-1),
    a: () => step(-1), delete: () => state.activeId && deleteObject(state.activeId),
    backspace: () => state.activeId && deleteObject(state.activeId),
    "[": () => setOpacity(Number($("opacity").value) - 10),
    "]": () => setOpacity(Number($("opacity").value) + 10),
  };
  if (actions[key]) { e.preventDefault(); actions[key](); }
});

(async function start() {
  try {
    await loadImageList();
  } catch (err) { $("status").textContent = `cannot reach the server: ${err.message}`; return; }
  const wanted = new URLSearchParams(location.hash.slice(1)).get("image");
  const first = state.images.find((i) => i.name === wanted) ?? state.images[0];
  if (first) openImage(first.name);
  else $("status").textContent = "no images in the folder: upload one";
  setInterval(refreshBackground, 1500);
  setInterval(queueSync, 700);
})();
