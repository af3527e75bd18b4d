// focsam-onnx serve: the labelling page. Plain JavaScript, no build step, no network but this
// server. Every click goes to the server, which saves the masks as it answers.
"use strict";

// Instances of one class share its hue and differ in shade: six shades, then they repeat.
const SHADES = [[0.85, 0.55], [0.65, 0.40], [0.95, 0.70], [0.55, 0.32], [0.75, 0.62], [0.9, 0.47]];
const $ = (id) => document.getElementById(id);
const photo = $("photo"), masksCanvas = $("masks"), pointsCanvas = $("points");

const state = {
  images: [],            // [{name, objects}]
  classes: ["object"],   // class id i + 1 is classes[i]
  classId: 1,            // the class of new objects (and of the selected one)
  current: null,         // image name
  ready: false,          // embeddings ready for clicks
  width: 0, height: 0,
  objects: new Map(),    // object_id -> {prompts, iou, classId, instance, crop, tinted}
  activeId: null,        // object being clicked
  hidden: new Set(),     // object ids not drawn (this page only)
  solo: null,            // the one object drawn, or null for all
  deleted: [],           // [{image, objectId}] deletions that Shift+Z undoes, last first
  sessionId: null,
  negative: false,       // left click's label is negative
  brush: null,           // "brush" | "eraser" while touching up; null: clicks
  brushRadius: 8,        // image pixels
  chain: Promise.resolve(),  // clicks are sent one after another, in order
  openSeq: 0,
};
// Every click event the page handled, in order (the browser tests read it).
window.focsamEvents = [];

function enc(name) { return encodeURIComponent(name); }

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function failure(response) {
  let detail = response.statusText;
  try { detail = (await response.json()).detail; } catch (_) { /* not JSON */ }
  const error = new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
  error.status = response.status;
  return error;
}

async function api(path, options = {}) {
  // A request the server did not receive (it is restarting) is tried again for a while.
  for (let attempt = 0; ; attempt++) {
    let response;
    try {
      response = await fetch(path, options);
    } catch (err) {
      if (attempt >= 40) throw new Error("the server is not answering");
      await sleep(250);
      continue;
    }
    if (!response.ok) throw await failure(response);
    return response;
  }
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

function className(classId) { return state.classes[classId - 1] ?? `class ${classId}`; }

function hsl(h, s, l) {
  const k = (n) => (n + h / 30) % 12, a = s * Math.min(l, 1 - l);
  const f = (n) => l - a * Math.max(-1, Math.min(k(n) - 3, 9 - k(n), 1));
  return [f(0), f(8), f(4)].map((v) => Math.round(v * 255));
}

function colour(obj) {
  // Classes far apart in hue (the golden angle); instances of a class in its shades.
  const [s, l] = SHADES[(obj.instance - 1) % SHADES.length];
  return hsl(((obj.classId - 1) * 137.508 + 8) % 360, s, l);
}

function numberInstances() {
  // Instance n of a class: its n-th object by id.
  const counts = new Map();
  for (const [, obj] of [...state.objects].sort((a, b) => a[0] - b[0])) {
    counts.set(obj.classId, (counts.get(obj.classId) ?? 0) + 1);
    obj.instance = counts.get(obj.classId);
  }
}

async function maskCrop(mask) {
  // The server's mask: its bounding box as a 1-bit PNG (scaled down past 1 MP) -> a canvas,
  // white where the object is, transparent elsewhere, placed at (x, y) in image pixels.
  if (!mask.png) return null;
  const bytes = Uint8Array.from(atob(mask.png), (c) => c.charCodeAt(0));
  const bitmap = await createImageBitmap(new Blob([bytes], {type: "image/png"}));
  const canvas = document.createElement("canvas");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  const image = ctx.getImageData(0, 0, canvas.width, canvas.height);
  for (let i = 0; i < image.data.length; i += 4) image.data[i + 3] = image.data[i];
  ctx.putImageData(image, 0, 0);
  return {canvas, x: mask.x, y: mask.y, w: mask.crop_width, h: mask.crop_height};
}

async function setObject(objectId, prompts, mask, iou, classId, version) {
  // version: the saved record's (undefined until this tab hears it was saved)
  if (!mask) { state.objects.delete(objectId); return; }
  const crop = await maskCrop(mask);
  state.objects.set(objectId, {prompts, iou, classId: classId ?? 1, instance: 1, crop,
                               tinted: null, version});
}

function tinted(obj) {
  // The object's crop in its colour, made once per colour.
  const rgb = colour(obj).join(",");
  if (obj.tinted?.rgb !== rgb) {
    const canvas = document.createElement("canvas");
    canvas.width = obj.crop.canvas.width;
    canvas.height = obj.crop.canvas.height;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(obj.crop.canvas, 0, 0);
    ctx.globalCompositeOperation = "source-in";
    ctx.fillStyle = `rgb(${rgb})`;
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    obj.tinted = {rgb, canvas};
  }
  return obj.tinted.canvas;
}

function draw() {
  numberInstances();
  const ctx = masksCanvas.getContext("2d");
  ctx.clearRect(0, 0, masksCanvas.width, masksCanvas.height);
  ctx.imageSmoothingEnabled = false;
  for (const [id, obj] of state.objects) {
    if (!obj.crop || !shown(id)) continue;
    ctx.globalAlpha = id === state.activeId ? 1.0 : 0.6;
    ctx.drawImage(tinted(obj), obj.crop.x, obj.crop.y, obj.crop.w, obj.crop.h);
  }
  ctx.globalAlpha = 1.0;
  const pts = pointsCanvas.getContext("2d");
  pts.clearRect(0, 0, pointsCanvas.width, pointsCanvas.height);
  const active = state.objects.get(state.activeId);
  const scale = state.width / Math.max(1, pointsCanvas.getBoundingClientRect().width);
  const radius = Math.max(2, 5 * scale);
  pts.lineWidth = Math.max(1, 2 * scale);
  pts.setLineDash([6 * scale, 4 * scale]);
  for (const p of (active ? active.prompts.filter((q) => "box" in q) : [])) {
    pts.strokeStyle = "#ffd84d";
    pts.strokeRect(p.box[0], p.box[1], p.box[2] - p.box[0], p.box[3] - p.box[1]);
  }
  if (boxDrag) {
    pts.strokeStyle = "#fff";
    const b = boxDrag;
    pts.strokeRect(Math.min(b.x0, b.x1), Math.min(b.y0, b.y1), Math.abs(b.x1 - b.x0) + 1,
                   Math.abs(b.y1 - b.y0) + 1);
  }
  pts.setLineDash([]);
  if (strokeDrag) {
    pts.strokeStyle = strokeDrag.erase ? "rgba(255, 90, 95, 0.6)" : "rgba(255, 255, 255, 0.6)";
    pts.fillStyle = pts.strokeStyle;
    pts.lineWidth = 2 * state.brushRadius + 1;
    pts.lineCap = pts.lineJoin = "round";
    pts.beginPath();
    strokeDrag.points.forEach(([x, y], i) => (i ? pts.lineTo(x + 0.5, y + 0.5) : pts.moveTo(x + 0.5, y + 0.5)));
    if (strokeDrag.points.length === 1) pts.arc(strokeDrag.points[0][0] + 0.5, strokeDrag.points[0][1] + 0.5, state.brushRadius + 0.5, 0, 2 * Math.PI);
    pts.stroke();
  }
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
    swatch.style.background = `rgb(${colour(obj).join(",")})`;
    const label = document.createElement("span");
    label.className = "label";
    label.title = `object ${id}`;
    const n = obj.prompts.length;
    label.textContent = `${className(obj.classId)} ${obj.instance} · ${n} click${n === 1 ? "" : "s"} · IoU ${obj.iou.toFixed(2)}`;
    const remove = document.createElement("button");
    remove.textContent = "×";
    remove.title = "Delete this object (Delete)";
    remove.addEventListener("click", (e) => { e.stopPropagation(); deleteObject(id); });
    const eye = document.createElement("button");
    eye.className = "eye";
    eye.textContent = shown(id) ? "◉" : "○";
    eye.title = "Show / hide (H); S shows the selected object alone";
    eye.addEventListener("click", (e) => { e.stopPropagation(); toggleHidden(id); });
    item.classList.toggle("hidden", !shown(id));
    item.append(eye, swatch, label, remove);
    item.addEventListener("click", () => selectObject(id));
    list.append(item);
  }
  const row = [...$("images").children].find((li) => li.dataset.name === state.current);
  if (row) row.querySelector(".count").textContent = state.objects.size || "";
  const entry = state.images.find((i) => i.name === state.current);
  if (entry && entry.objects !== state.objects.size) {
    entry.objects = state.objects.size;
    if (row) { row.dataset.state = imageState(entry); row.title = `${entry.name} (${imageState(entry)})`; }
  }
}

// images

function renderClasses() {
  const filter = $("class-filter").value.trim().toLowerCase();
  const list = $("classes");
  list.replaceChildren();
  state.classes.forEach((name, i) => {
    if (filter && !name.toLowerCase().includes(filter)) return;
    const item = document.createElement("li");
    item.dataset.classId = i + 1;
    item.classList.toggle("current", i + 1 === state.classId);
    const key = document.createElement("kbd");
    key.textContent = i < 9 ? String(i + 1) : "";
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${colour({classId: i + 1, instance: 1}).join(",")})`;
    const label = document.createElement("span");
    label.textContent = name;
    item.append(key, swatch, label);
    item.addEventListener("click", () => pickClass(i + 1));
    list.append(item);
  });
}

function pickClass(classId) {
  // The class of the next objects, and of the selected object (changed in its record).
  if (classId < 1 || classId > state.classes.length) return;
  state.classId = classId;
  renderClasses();
  const image = state.current;
  state.chain = state.chain.then(async () => {  // after the clicks before it, on their object
    const objectId = state.activeId;
    if (objectId == null || state.current !== image) return;
    if (!state.objects.has(objectId)) { state.sessionId = null; state.activeId = null; return; }
    try {
      const saved = await apiJson(`/api/images/${enc(image)}/objects/${objectId}`, {
        method: "PATCH", headers: {"Content-Type": "application/json"},
        body: JSON.stringify({category_id: classId})});
      const obj = state.objects.get(objectId);
      if (obj && state.current === image) Object.assign(obj, {classId, version: saved.version});
      window.focsamEvents.push({event: "class", object_id: objectId, category_id: classId});
      draw();
    } catch (err) { showMessage(err.message); }
  });
}

async function loadImageList() {
  const data = await apiJson("/api/images");
  state.images = data.images;
  state.classes = data.classes;
  renderClasses();
  renderImages();
}

function imageState(image) {
  return image.done ? "done" : image.objects ? "in progress" : "new";
}

function renderImages() {
  // The folder's images with their progress, filtered by name; "n of N done" above them.
  const filter = $("image-filter").value.trim().toLowerCase();
  const list = $("images");
  list.replaceChildren();
  for (const image of state.images) {
    if (filter && !image.name.toLowerCase().includes(filter)) continue;
    const item = document.createElement("li");
    item.dataset.name = image.name;
    item.dataset.state = imageState(image);
    item.title = `${image.name} (${imageState(image)})`;
    item.classList.toggle("current", image.name === state.current);
    const mark = document.createElement("span");
    mark.className = "mark";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = image.name;
    const count = document.createElement("span");
    count.className = "count";
    count.textContent = image.objects || "";
    item.append(mark, name, count);
    item.addEventListener("click", () => openImage(image.name));
    list.append(item);
  }
  const done = state.images.filter((i) => i.done).length;
  $("progress").textContent = `${done} of ${state.images.length} done`;
}

function markDone() {
  // Toggle the current image's done mark; marking it done moves on to the next image not done.
  const image = state.images.find((i) => i.name === state.current);
  if (!image) return;
  const done = !image.done;
  postJson(`/api/images/${enc(image.name)}/done`, {done}).then((entry) => {
    Object.assign(image, entry);
    renderImages();
    window.focsamEvents.push({event: "done", image: image.name, done});
    if (done) nextUnlabelled();
  }).catch((err) => showMessage(err.message));
}

function nextUnlabelled() {
  // The next image after the current one (wrapping round) that is not marked done.
  const at = state.images.findIndex((i) => i.name === state.current);
  for (let k = 1; k <= state.images.length; k++) {
    const image = state.images[(at + k) % state.images.length];
    if (!image.done) { if (image.name !== state.current) openImage(image.name); return; }
  }
  showMessage("every image is marked done");
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
  Object.assign(state, {current: name, ready: false, activeId: null, sessionId: null,
                        hidden: new Set(), solo: null});
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
  // The picture shows at once, fitted, while the embeddings are made (the status line counts
  // the seconds against an estimate from the last encodes).
  decoded.then(() => {
    if (seq !== state.openSeq) return;
    fitPhoto();
    window.focsamEvents.push({event: "shown", image: name, ready: state.ready,
                              width: photo.getBoundingClientRect().width});
  }, () => {});
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
  for (const obj of saved.objects) {
    await setObject(obj.object_id, obj.prompts, obj.mask, obj.iou, obj.category_id, obj.version);
  }
  if (seq !== state.openSeq) return;
  state.ready = true;
  $("view").classList.remove("waiting");
  document.body.dataset.ready = name;  // the browser tests wait for this
  draw();
}

// zoom and pan: the image is shown at `view.scale` CSS pixels per image pixel, its top-left
// corner at (view.x, view.y) in the stage. Clicks are mapped through the canvas's on-screen
// rectangle, so they land on the right image pixel at every zoom.
const view = {scale: 1, x: 0, y: 0, fit: 1};
const ZOOM_STEP = 1.5, MAX_SCALE = 32;

function applyView() {
  if (!photo.naturalWidth) return;
  photo.style.width = `${photo.naturalWidth * view.scale}px`;
  photo.style.height = `${photo.naturalHeight * view.scale}px`;
  $("view").style.transform = `translate(${view.x}px, ${view.y}px)`;
  $("zoom").textContent = `${Math.round(100 * view.scale / view.fit)} %`;
}

function fitPhoto() {
  // The whole image in the stage (scaled up too: small images are clicked as comfortably).
  if (!photo.naturalWidth) return;
  const stage = $("stage");
  view.fit = view.scale = Math.min((stage.clientWidth - 20) / photo.naturalWidth,
                                   (stage.clientHeight - 20) / photo.naturalHeight);
  view.x = (stage.clientWidth - photo.naturalWidth * view.scale) / 2;
  view.y = (stage.clientHeight - photo.naturalHeight * view.scale) / 2;
  applyView();
}

function zoomAt(factor, clientX, clientY) {
  // Zoom keeping the image point under (clientX, clientY) where it is.
  const stage = $("stage").getBoundingClientRect();
  const sx = (clientX ?? stage.left + stage.width / 2) - stage.left;
  const sy = (clientY ?? stage.top + stage.height / 2) - stage.top;
  const scale = Math.min(MAX_SCALE, Math.max(view.fit / 4, view.scale * factor));
  view.x = sx - (sx - view.x) * scale / view.scale;
  view.y = sy - (sy - view.y) * scale / view.scale;
  view.scale = scale;
  applyView();
}

let pan = null;  // {x, y} of the last pointer position while dragging the image
let spaceDown = false;

function startPan(e) {
  pan = {x: e.clientX, y: e.clientY};
  $("stage").classList.add("panning");
}

function movePan(e) {
  if (!pan) return false;
  view.x += e.clientX - pan.x;
  view.y += e.clientY - pan.y;
  pan = {x: e.clientX, y: e.clientY};
  applyView();
  return true;
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
  // A session on saved object `objectId` (its clicks replayed), or on a new object. If the
  // server has forgotten the image (it restarted), it is opened again first.
  const body = {image: state.current, category_id: state.classId};
  if (objectId != null) body.object_id = objectId;
  let session;
  try {
    session = await postJson("/api/sessions", body);
  } catch (err) {
    if (err.status !== 404 && err.status !== 503) throw err;
    await reopenImage();
    session = await postJson("/api/sessions", body);
  }
  state.sessionId = session.session_id;
  state.activeId = session.object_id;
  return session;
}

async function reopenImage() {
  const path = `/api/images/${enc(state.current)}`;
  let status = await postJson(`${path}/open`);
  while (status.state === "encoding") {
    await sleep(200);
    status = await apiJson(`${path}/status`);
  }
  if (status.state !== "ready") throw new Error(`cannot use this image: ${status.error}`);
}

async function objectRequest(action, body) {
  // POST to the active object's session. The server forgets sessions when it restarts or
  // after a long idle time: then the object is opened again (its saved clicks replayed)
  // and the request repeated, so the annotator notices nothing.
  if (!state.sessionId) await startSession(state.objects.has(state.activeId) ? state.activeId : null);
  for (let attempt = 0; ; attempt++) {
    const response = await api(`/api/sessions/${enc(state.sessionId)}/${action}`, {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify(body ?? {})}).catch((err) => err);
    if (!(response instanceof Error)) return response;
    if (response.status !== 404 || attempt > 0) throw response;
    const saved = state.objects.has(state.activeId) ? state.activeId : null;
    state.sessionId = null;
    window.focsamEvents.push({event: "recovered", object_id: saved});
    await startSession(saved);
  }
}

function selectObject(objectId) {
  const obj = state.objects.get(objectId);
  if (obj) { state.classId = obj.classId; renderClasses(); }
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

async function handleEvent(ev, clientMs, row) {
  if (ev.event === "error") { showMessage(ev.detail); }
  else if (ev.event !== "saved") await setObject(ev.object_id, ev.prompts, ev.mask, ev.iou, ev.category_id);
  window.focsamEvents.push({event: ev.event, prompts: ev.prompts?.length, object_id: ev.object_id,
                            decoded_on_refined: ev.decoded_on_refined});
  if (ev.event === "saved") {
    const obj = state.objects.get(ev.object_id);
    if (obj) obj.version = ev.version;
  }
  if (ev.event === "error" || ev.event === "saved") return row;
  draw();
  return logRow(ev, clientMs, row);
}

function sendClick(x, y, positive) { return sendPrompt("clicks", {x, y, positive}); }

async function sendPrompt(kind, body) {
  // A click or a box: the answer streams interim / final / saved events.
  const started = performance.now();
  const response = await objectRequest(kind, body);
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
      if (line.trim()) row = await handleEvent(JSON.parse(line), performance.now() - started, row);
    }
    if (done) break;
  }
}

function imagePixel(e) {
  // The image pixel under a pointer event, whatever the zoom.
  const rect = pointsCanvas.getBoundingClientRect();
  return [Math.min(state.width - 1, Math.max(0, Math.floor((e.clientX - rect.left) * state.width / rect.width))),
          Math.min(state.height - 1, Math.max(0, Math.floor((e.clientY - rect.top) * state.height / rect.height)))];
}

let boxDrag = null;  // {x0, y0, x1, y1} in image pixels while a box is drawn
let strokeDrag = null;  // {points: [[x, y], ...], erase} while a brush or eraser stroke is drawn
const MIN_BOX = 3;   // a drag shorter than this (image pixels, both sides) is a click

function onCanvasMouse(e) {
  if (e.button === 1 || (e.button === 0 && spaceDown)) { e.preventDefault(); startPan(e); return; }
  if (e.button !== 0 && e.button !== 2) return;
  e.preventDefault();
  if (!state.ready) {
    showMessage(`not yet: the image is being prepared for clicks (${$("status").textContent}); ` +
                "click again when the status says ready");
    return;
  }
  const [x, y] = imagePixel(e);
  if (e.button === 0 && state.brush) {
    strokeDrag = {points: [[x, y]], erase: state.brush === "eraser"};
    draw();
    return;
  }
  if (e.button === 0 && (state.boxMode || e.shiftKey)) {
    boxDrag = {x0: x, y0: y, x1: x, y1: y};
    return;
  }
  queueClick(x, y, e.button === 2 ? false : !state.negative);
}

function queueClick(x, y, positive) {
  const image = state.current;
  state.chain = state.chain.then(async () => {
    if (state.current !== image) return;
    try { await sendClick(x, y, positive); } catch (err) { showMessage(err.message); }
  });
}

function onPointerMove(e) {
  if (movePan(e)) return;
  if (strokeDrag) {
    const [x, y] = imagePixel(e);
    const last = strokeDrag.points[strokeDrag.points.length - 1];
    if (x !== last[0] || y !== last[1]) { strokeDrag.points.push([x, y]); draw(); }
    return;
  }
  if (!boxDrag) return;
  [boxDrag.x1, boxDrag.y1] = imagePixel(e);
  draw();
}

function onPointerUp(e) {
  if (pan) { pan = null; $("stage").classList.remove("panning"); return; }
  if (strokeDrag) { sendStroke(strokeDrag); strokeDrag = null; return; }
  if (!boxDrag) return;
  const b = boxDrag;
  boxDrag = null;
  [b.x1, b.y1] = imagePixel(e);
  const [x0, x1] = [Math.min(b.x0, b.x1), Math.max(b.x0, b.x1) + 1];
  const [y0, y1] = [Math.min(b.y0, b.y1), Math.max(b.y0, b.y1) + 1];
  if (x1 - x0 < MIN_BOX && y1 - y0 < MIN_BOX) { draw(); queueClick(b.x0, b.y0, !state.negative); return; }
  const image = state.current;
  state.chain = state.chain.then(async () => {
    if (state.current !== image) return;
    try { await sendPrompt("box", {x0, y0, x1, y1}); } catch (err) { showMessage(err.message); }
  });
}

function sendStroke(stroke) {
  // Paint or erase on the selected object (a new one if none), after its clicks.
  const image = state.current, radius = state.brushRadius;
  state.chain = state.chain.then(async () => {
    if (state.current !== image) return;
    try {
      const session = await (await objectRequest("strokes", {
        points: stroke.points, radius, erase: stroke.erase})).json();
      const result = session.result;
      await setObject(session.object_id, session.prompts, result && result.mask,
                      result ? result.iou : 0, session.category_id);
      window.focsamEvents.push({event: "stroke", object_id: session.object_id,
                                strokes: session.strokes.length});
      draw();
    } catch (err) { showMessage(err.message); }
  });
}

function setBrush(tool) {
  // "brush", "eraser", or null (back to clicks).
  state.brush = state.brush === tool ? null : tool;
  $("brush").classList.toggle("on", state.brush === "brush");
  $("eraser").classList.toggle("on", state.brush === "eraser");
  $("stage").classList.toggle("painting", state.brush != null);
}

function setBrushRadius(radius) {
  state.brushRadius = Math.max(0, Math.min(512, Math.round(radius)));
  $("brush-radius").textContent = `${state.brushRadius} px`;
}

function toggleBoxMode() {
  state.boxMode = !state.boxMode;
  $("box-mode").classList.toggle("on", state.boxMode);
  $("box-mode").textContent = `Box tool: ${state.boxMode ? "on" : "off"}`;
}

function sessionCall(action) {
  state.chain = state.chain.then(async () => {
    if (state.activeId == null) { showMessage(`nothing to ${action}: click on an object first`); return; }
    try {
      const session = await (await objectRequest(action)).json();
      const result = session.result;
      await setObject(session.object_id, session.prompts, result && result.mask,
                      result ? result.iou : 0, session.category_id);
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
  const image = state.current;
  state.chain = state.chain.then(async () => {
    try {
      const obj = state.objects.get(objectId);
      await apiJson(`/api/images/${enc(image)}/objects/${objectId}`, {method: "DELETE"});
      state.objects.delete(objectId);
      state.deleted.push({image, objectId});
      if (state.activeId === objectId) { state.activeId = null; state.sessionId = null; }
      window.focsamEvents.push({event: "deleted", object_id: objectId});
      draw();
      if (obj) showMessage(`deleted ${className(obj.classId)} ${obj.instance}: Shift+Z brings it back`);
    } catch (err) { showMessage(err.message); }
  });
}

function restoreDeleted() {
  // Undo the last deletion made on this image.
  const image = state.current;
  const at = state.deleted.findLastIndex((d) => d.image === image);
  if (at < 0) { showMessage("no deleted object to bring back on this image"); return; }
  const {objectId} = state.deleted.splice(at, 1)[0];
  state.chain = state.chain.then(async () => {
    try {
      const obj = await postJson(`/api/images/${enc(image)}/objects/${objectId}/restore`);
      if (state.current !== image) return;
      await setObject(obj.object_id, obj.prompts, obj.mask, obj.iou, obj.category_id);
      window.focsamEvents.push({event: "restored", object_id: objectId});
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
    await setObject(obj.object_id, obj.prompts, obj.mask, obj.iou, obj.category_id, obj.version);
    changed = true;
  }
  if (changed) {
    window.focsamEvents.push({event: "synced", objects: state.objects.size});
    draw();
  }
}

function toggleHidden(objectId) {
  if (objectId == null) return;
  if (state.hidden.has(objectId)) state.hidden.delete(objectId); else state.hidden.add(objectId);
  draw();
}

function toggleSolo(objectId) {
  // Show the selected object alone, or every object again.
  state.solo = state.solo === objectId || objectId == null ? null : objectId;
  draw();
}

function shown(id) {
  return !state.hidden.has(id) && (state.solo == null || state.solo === id);
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
window.addEventListener("mousemove", onPointerMove);
window.addEventListener("mouseup", onPointerUp);
$("stage").addEventListener("wheel", (e) => {
  e.preventDefault();
  zoomAt(Math.exp(-e.deltaY * 0.0015), e.clientX, e.clientY);
}, {passive: false});
$("stage").addEventListener("auxclick", (e) => e.preventDefault());
$("box-mode").addEventListener("click", toggleBoxMode);
$("brush").addEventListener("click", () => setBrush("brush"));
$("eraser").addEventListener("click", () => setBrush("eraser"));
$("zoom-in").addEventListener("click", () => zoomAt(ZOOM_STEP));
$("zoom-out").addEventListener("click", () => zoomAt(1 / ZOOM_STEP));
$("zoom-fit").addEventListener("click", fitPhoto);
document.addEventListener("keyup", (e) => { if (e.key === " ") { spaceDown = false; $("stage").classList.remove("pan-ready"); } });
pointsCanvas.addEventListener("contextmenu", (e) => e.preventDefault());
$("undo").addEventListener("click", () => sessionCall("undo"));
$("reset").addEventListener("click", () => sessionCall("reset"));
$("new").addEventListener("click", newObject);
$("mode").addEventListener("click", toggleMode);
$("prev").addEventListener("click", () => step(-1));
$("next").addEventListener("click", () => step(1));
$("opacity").addEventListener("input", (e) => setOpacity(Number(e.target.value)));
$("class-filter").addEventListener("input", renderClasses);
$("image-filter").addEventListener("input", renderImages);
$("image-filter").addEventListener("keydown", (e) => {
  if (e.key === "Escape" || e.key === "Enter") e.target.blur();
});
$("mark-done").addEventListener("click", markDone);
$("next-unlabelled").addEventListener("click", nextUnlabelled);
$("class-filter").addEventListener("keydown", (e) => {
  if (e.key === "Enter") {
    const first = $("classes").querySelector("li");
    if (first) pickClass(Number(first.dataset.classId));
  }
  if (e.key === "Enter" || e.key === "Escape") { e.target.value = ""; renderClasses(); e.target.blur(); }
});
$("upload").addEventListener("change", (e) => { if (e.target.files[0]) upload(e.target.files[0]); });
new ResizeObserver(draw).observe(photo);
window.addEventListener("resize", fitPhoto);

document.addEventListener("keydown", (e) => {
  if (e.target.tagName === "INPUT" && e.target.type !== "range") return;
  const key = e.key.toLowerCase();
  if (key === " ") { e.preventDefault(); spaceDown = true; $("stage").classList.add("pan-ready"); return; }
  if ((e.ctrlKey || e.metaKey) && key === "z") { e.preventDefault(); sessionCall("undo"); return; }
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.shiftKey && key === "z") { e.preventDefault(); restoreDeleted(); return; }
  const actions = {
    u: () => sessionCall("undo"), r: () => sessionCall("reset"), n: newObject, enter: newObject,
    t: toggleMode, arrowright: () => step(1), d: () => step(1), arrowleft: () => step(-1),
    a: () => step(-1), delete: () => state.activeId && deleteObject(state.activeId),
    backspace: () => state.activeId && deleteObject(state.activeId),
    "[": () => setOpacity(Number($("opacity").value) - 10),
    "]": () => setOpacity(Number($("opacity").value) + 10),
    c: () => $("class-filter").focus(),
    h: () => toggleHidden(state.activeId), s: () => toggleSolo(state.activeId),
    p: () => setBrush("brush"), e: () => setBrush("eraser"),
    ",": () => setBrushRadius(state.brushRadius / 1.25), ".": () => setBrushRadius(state.brushRadius * 1.25 + 1),
    b: toggleBoxMode, m: markDone, g: nextUnlabelled, "/": () => $("image-filter").focus(), "+": () => zoomAt(ZOOM_STEP), "=": () => zoomAt(ZOOM_STEP),
    "-": () => zoomAt(1 / ZOOM_STEP), 0: fitPhoto, f: fitPhoto,
  };
  if (/^[1-9]$/.test(key)) { e.preventDefault(); pickClass(Number(key)); return; }
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
