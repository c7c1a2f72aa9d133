// depthstream page: camera (or a file) -> JPEG frames over a WebSocket -> colorized depth back.
// Wire protocol: see the README. At most MAX_IN_FLIGHT frames are unanswered at any time.
"use strict";

const MAX_IN_FLIGHT = 2;
const JPEG_QUALITY = 0.8;
const BACKOFF_MS = [500, 1000, 2000, 4000, 8000];
const PAUSE_AFTER_SERVER_ERROR_MS = 1000; // don't hammer a server that just said it can't
const TOKEN = new URLSearchParams(location.search).get("token"); // when the bridge requires one
const withToken = (url) => (TOKEN ? `${url}${url.includes("?") ? "&" : "?"}token=${encodeURIComponent(TOKEN)}` : url);

const $ = (id) => document.getElementById(id);
const ui = {
  model: $("model"), colormap: $("colormap"), resolution: $("resolution"), file: $("file"),
  start: $("start"), stop: $("stop"), save: $("save"), video: $("video"), still: $("still"),
  depth: $("depth"), fps: $("fps"), latency: $("latency"), dropped: $("dropped"), frames: $("frames"),
  depthModel: $("depth-model"), banner: $("banner"), bannerRandom: $("banner-random"),
  status: $("status"), sourceLabel: $("source-label"), modelWhy: $("model-why"),
  saveRaw: $("save-raw"), toggle3d: $("toggle-3d"), view3d: $("view3d"),
  colorbarRamp: $("colorbar-ramp"), colorbarName: $("colorbar-name"),
};

const state = {
  errorCodes: null, // from the server's hello: which codes are transient, which are about the model
  ws: null, connected: false, reconnects: 0, running: false, stream: null, fileUrl: null,
  source: "camera", // "camera" | "image" | "video"
  sentSeq: -1, answeredSeq: -1, sentAt: new Map(), pendingHeader: null, pausedUntil: 0,
  answeredTimes: [], framesShown: 0, models: {},
  pendingBinaries: [], // the binary messages of the current answer (its header lists them)
  view3d: false, rawSavePending: false, lastRaw: null, captures: new Map(), colormapStops: {},
};
const capture = document.createElement("canvas");
// the 3D view's colors are read back from the CPU: a canvas made for that (its first getContext fixes it)
const colorCapture = document.createElement("canvas");
const MAX_CAPTURES = MAX_IN_FLIGHT + 1; // camera snapshots kept for answers still to come

function showBanner(text, kind = "error") {
  ui.banner.textContent = text;
  ui.banner.className = `banner ${kind === "error" ? "" : kind}`;
  ui.banner.hidden = !text;
}
// "~16 fps": frames per second end to end, estimated from the model's speed on the serving machine
function speedLabel(model) {
  const fps = model.estimated_fps;
  if (!fps) return "";
  return ` — ~${fps >= 10 ? Math.round(fps) : fps.toFixed(1)} fps`;
}
function setStatus(text) { ui.status.textContent = text; }
function inFlight() { return state.sentSeq - state.answeredSeq; }

// --- models and colormaps from the bridge ------------------------------------------------
async function loadModels() {
  try {
    const response = await fetch(withToken("api/models"));
    if (response.status === 401) {
      showBanner("This server needs an access token: open the page as …/?token=YOUR_TOKEN");
      return false;
    }
    const info = await response.json();
    ui.model.replaceChildren(...info.models.map((m) => {
      state.models[m.name] = m;
      const option = new Option(`${m.title}${speedLabel(m)}${m.random_weights ? " (random weights)" : ""}${m.ready ? "" : " (not ready)"}`, m.name);
      option.disabled = !m.ready;
      if (m.ms_per_frame) option.title = `the model alone: ${Math.round(m.ms_per_frame)} ms per 640×480 frame, measured on ${m.measured_on}`;
      return option;
    }));
    ui.modelWhy.textContent = info.default_reason ? `Starts on ${info.default_reason}` : "";
    const firstReady = info.models.find((m) => m.ready);
    ui.model.value = state.models[info.default_model]?.ready ? info.default_model : (firstReady?.name ?? info.default_model);
    ui.model.disabled = false;
    ui.colormap.replaceChildren(...info.colormaps.map((c) => new Option(c, c)));
    ui.colormap.value = info.default_colormap;
    state.colormapStops = info.colormap_stops ?? {};
    showColorbar();
    if (!firstReady) showBanner("The model server has no model ready yet. Is Triton running? Retrying…");
    updateRandomBanner();
    return Boolean(firstReady);
  } catch (err) {
    showBanner("Cannot reach the depthstream server. Retrying…");
    return false;
  }
}

function updateRandomBanner(flag) {
  const random = flag ?? Boolean(state.models[ui.model.value]?.random_weights);
  ui.bannerRandom.hidden = !random;
}

// --- the WebSocket -----------------------------------------------------------------------
function connect() {
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${location.pathname.replace(/[^/]*$/, "")}ws`;
  const ws = new WebSocket(withToken(url));
  ws.binaryType = "arraybuffer";
  state.ws = ws;
  ws.onopen = () => {
    state.connected = true;
    state.reconnects = 0;
    state.sentSeq = -1; state.answeredSeq = -1; state.sentAt.clear(); state.pendingHeader = null;
    state.captures.clear(); state.lastRaw = null; // sequence numbers start again on a new socket
    if (ui.banner.dataset.kind === "network") showBanner("");
    sendConfig();
    setStatus(state.running ? "streaming" : "connected");
  };
  ws.onmessage = (event) => (typeof event.data === "string" ? onText(JSON.parse(event.data)) : onBinary(event.data));
  ws.onclose = () => {
    state.connected = false;
    const delay = BACKOFF_MS[Math.min(state.reconnects, BACKOFF_MS.length - 1)];
    state.reconnects += 1;
    showBanner(`Connection to the server lost; reconnecting in ${delay / 1000} s…`);
    ui.banner.dataset.kind = "network";
    setStatus("disconnected");
    setTimeout(connect, delay);
  };
}

// raw depth costs 5x the bytes of the JPEG: asked for only while the 3D view is on or a save waits
function wantedOutput() { return state.view3d || state.rawSavePending ? "both" : "color"; }

function sendConfig() {
  if (state.ws?.readyState === WebSocket.OPEN) {
    state.ws.send(JSON.stringify({ type: "config", model: ui.model.value, colormap: ui.colormap.value, output: wantedOutput() }));
  }
}

function showColorbar() {
  const stops = state.colormapStops[ui.colormap.value];
  ui.colorbarRamp.style.background = stops ? `linear-gradient(to right, ${stops.join(", ")})` : "";
  ui.colorbarName.textContent = ui.colormap.value;
}

function onText(message) {
  switch (message.type) {
    case "hello":
      state.errorCodes = message.error_codes; // what each error code means, from the server
      break;
    case "config":
      updateRandomBanner(message.random_weights);
      ui.depthModel.textContent = message.model;
      if (ui.banner.dataset.kind === "model") showBanner("");
      break;
    case "depth":
      state.pendingHeader = message;
      state.pendingBinaries = [];
      break;
    case "error":
      onError(message);
      break;
  }
}

function onError(message) {
  if (message.seq !== undefined) {
    state.answeredSeq = Math.max(state.answeredSeq, message.seq);
    forgetCaptures(message.seq);
  }
  const codes = state.errorCodes ?? { transient: [], model: [] }; // refusals come before hello
  if (codes.transient.includes(message.code)) {
    state.pausedUntil = performance.now() + PAUSE_AFTER_SERVER_ERROR_MS;
  }
  const text = message.message.charAt(0).toUpperCase() + message.message.slice(1);
  showBanner(text);
  ui.banner.dataset.kind = codes.model.includes(message.code) ? "model" : "frame";
}

function onBinary(buffer) {
  const header = state.pendingHeader;
  if (!header) return;
  state.pendingBinaries.push(buffer);
  const kinds = header.binary ?? ["jpeg"];
  if (state.pendingBinaries.length < kinds.length) return;
  const binaries = state.pendingBinaries;
  state.pendingHeader = null;
  state.pendingBinaries = [];
  const raw = kinds.indexOf("uint16le");
  if (raw >= 0) onRawDepth(header, binaries[raw]);
  const jpeg = kinds.indexOf("jpeg");
  if (jpeg >= 0) onDepthImage(header, binaries[jpeg]);
}

// an answer (depth or error) for a frame: its camera snapshot and older ones are no longer needed
function forgetCaptures(upToSeq) {
  for (const seq of state.captures.keys()) if (seq <= upToSeq) state.captures.delete(seq);
}

function onRawDepth(header, buffer) {
  state.lastRaw = { header, q: new Uint16Array(buffer) };
  const rgba = state.captures.get(header.seq) ?? null;
  forgetCaptures(header.seq);
  if (state.view3d) {
    window.dispatchEvent(new CustomEvent("depthstream:raw", { detail: { raw: header.raw, q: state.lastRaw.q, rgba } }));
  }
  if (state.rawSavePending) {
    state.rawSavePending = false;
    saveRawDepth();
    sendConfig(); // back to what the view needs
  }
}

async function onDepthImage(header, buffer) {
  state.answeredSeq = Math.max(state.answeredSeq, header.seq);
  const now = performance.now();
  const sent = state.sentAt.get(header.seq);
  for (const seq of state.sentAt.keys()) if (seq <= header.seq) state.sentAt.delete(seq);
  state.answeredTimes.push(now);
  while (state.answeredTimes.length && now - state.answeredTimes[0] > 2000) state.answeredTimes.shift();
  const bitmap = await createImageBitmap(new Blob([buffer], { type: "image/jpeg" }));
  ui.depth.width = bitmap.width;
  ui.depth.height = bitmap.height;
  ui.depth.getContext("2d").drawImage(bitmap, 0, 0);
  bitmap.close();
  state.framesShown += 1;
  ui.frames.textContent = state.framesShown;
  ui.dropped.textContent = header.dropped;
  ui.depthModel.textContent = header.model;
  ui.depth.dataset.model = header.model;
  if (sent !== undefined) ui.latency.textContent = Math.round(now - sent);
  const span = (now - state.answeredTimes[0]) / 1000;
  ui.fps.textContent = state.answeredTimes.length > 1 && span > 0 ? ((state.answeredTimes.length - 1) / span).toFixed(1) : "0.0";
  ui.save.disabled = false;
  ui.saveRaw.disabled = false;
  updateRandomBanner(header.random_weights);
  if (ui.banner.dataset.kind === "frame" || ui.banner.dataset.kind === "model") showBanner("");
}

// --- sources and the capture loop ---------------------------------------------------------
function captureSize() {
  const [w, h] = ui.resolution.value.split("x").map(Number);
  return { w, h };
}

async function startCamera() {
  const { w, h } = captureSize();
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: w }, height: { ideal: h } }, audio: false });
  } catch (err) {
    const denied = err.name === "NotAllowedError" || err.name === "SecurityError";
    showBanner(denied ? "Camera access was denied. Allow the camera in the browser, or pick an image or video file."
      : `No camera available (${err.name}). Pick an image or video file instead.`);
    return false;
  }
  ui.video.srcObject = state.stream;
  await ui.video.play().catch(() => {});
  return true;
}

function stopCamera() {
  state.stream?.getTracks().forEach((t) => t.stop());
  state.stream = null;
  ui.video.srcObject = null;
}

function currentSourceElement() {
  if (state.source === "image") return ui.still.complete && ui.still.naturalWidth ? ui.still : null;
  return ui.video.readyState >= 2 ? ui.video : null;
}

function sendFrame() {
  const element = currentSourceElement();
  if (!element) return;
  const srcW = element.videoWidth || element.naturalWidth;
  const srcH = element.videoHeight || element.naturalHeight;
  const { w, h } = captureSize();
  const scale = Math.min(1, w / srcW, h / srcH);
  capture.width = Math.max(2, Math.round(srcW * scale));
  capture.height = Math.max(2, Math.round(srcH * scale));
  capture.getContext("2d").drawImage(element, 0, 0, capture.width, capture.height);
  state.sentSeq += 1;
  const seq = state.sentSeq;
  // the 3D view colors each point with the camera pixel its depth came from
  if (state.view3d) {
    colorCapture.width = capture.width;
    colorCapture.height = capture.height;
    const context = colorCapture.getContext("2d", { willReadFrequently: true });
    context.drawImage(capture, 0, 0);
    state.captures.set(seq, context.getImageData(0, 0, capture.width, capture.height));
    while (state.captures.size > MAX_CAPTURES) state.captures.delete(state.captures.keys().next().value);
  }
  state.sentAt.set(seq, performance.now());
  capture.toBlob((blob) => {
    if (blob && state.ws?.readyState === WebSocket.OPEN) state.ws.send(blob);
  }, "image/jpeg", JPEG_QUALITY);
}

function loop() {
  if (!state.running) return;
  if (state.connected && inFlight() < MAX_IN_FLIGHT && performance.now() >= state.pausedUntil) sendFrame();
  requestAnimationFrame(loop);
}

async function start() {
  if (state.running) return;
  if (state.source === "camera" && !(await startCamera())) return;
  if (state.source === "video") await ui.video.play().catch(() => {});
  state.running = true;
  ui.start.disabled = true;
  ui.stop.disabled = false;
  setStatus(state.connected ? "streaming" : "waiting for the server");
  requestAnimationFrame(loop);
}

function stop() {
  state.running = false;
  if (state.source === "camera") stopCamera();
  if (state.source === "video") ui.video.pause();
  ui.start.disabled = false;
  ui.stop.disabled = true;
  setStatus("stopped");
}

function useFile(file) {
  stop();
  if (state.fileUrl) URL.revokeObjectURL(state.fileUrl);
  state.fileUrl = URL.createObjectURL(file);
  if (file.type.startsWith("video/")) {
    state.source = "video";
    ui.still.hidden = true;
    ui.video.hidden = false;
    ui.video.srcObject = null;
    ui.video.src = state.fileUrl;
    ui.video.loop = true;
  } else {
    state.source = "image";
    ui.still.src = state.fileUrl;
    ui.still.hidden = false;
    ui.video.hidden = true;
  }
  ui.sourceLabel.textContent = file.name;
}

function saveDepth() {
  ui.depth.toBlob((blob) => download(blob, `depth-${ui.depth.dataset.model || "frame"}-${Date.now()}.png`), "image/png");
}

// --- raw depth: a 16-bit PNG of the model's values ---------------------------------------------
const PNG_SIGNATURE = new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]);
const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32(bytes) {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function pngChunk(type, data) {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  out.set(new TextEncoder().encode(type), 4);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

// 16-bit grayscale PNG (big-endian samples, no filter), zlib by the browser's CompressionStream;
// tEXt chunks carry what maps the values back to the model's depth
async function png16(width, height, q, texts) {
  const header = new Uint8Array(13);
  const hv = new DataView(header.buffer);
  hv.setUint32(0, width);
  hv.setUint32(4, height);
  header[8] = 16; // bit depth; color type 0 (gray), no interlace
  const rows = new Uint8Array(height * (1 + 2 * width));
  const rv = new DataView(rows.buffer);
  for (let y = 0; y < height; y++) {
    const offset = y * (1 + 2 * width);
    for (let x = 0; x < width; x++) rv.setUint16(offset + 1 + 2 * x, q[y * width + x]);
  }
  const zipped = await new Response(new Blob([rows]).stream().pipeThrough(new CompressionStream("deflate"))).arrayBuffer();
  const text = Object.entries(texts).map(([key, value]) => pngChunk("tEXt", new TextEncoder().encode(`${key}\0${value}`)));
  return new Blob([PNG_SIGNATURE, pngChunk("IHDR", header), ...text, pngChunk("IDAT", new Uint8Array(zipped)), pngChunk("IEND", new Uint8Array())], { type: "image/png" });
}

function download(blob, name) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

async function saveRawDepth() {
  const { header, q } = state.lastRaw;
  const raw = header.raw;
  const blob = await png16(raw.width, raw.height, q, {
    "depthstream.model": header.model,
    "depthstream.seq": String(header.seq),
    "depthstream.min": String(raw.min),
    "depthstream.max": String(raw.max),
    "depthstream.mapping": "depth = min + q * (max - min) / 65535 (relative inverse depth: larger is closer)",
  });
  download(blob, `depth16-${header.model}-${header.seq}.png`);
}

function requestRawSave() {
  if (state.lastRaw && state.lastRaw.header.seq === state.answeredSeq) {
    saveRawDepth();
    return;
  }
  state.rawSavePending = true; // the next answer carries the raw depth
  sendConfig();
  if (!state.running) setStatus("press Start: the raw depth of the next frame will be saved");
}

function toggle3d() {
  state.view3d = !state.view3d;
  ui.toggle3d.setAttribute("aria-pressed", String(state.view3d));
  ui.view3d.hidden = !state.view3d;
  ui.depth.hidden = state.view3d;
  state.captures.clear();
  window.dispatchEvent(new CustomEvent("depthstream:view3d", { detail: { on: state.view3d } }));
  sendConfig();
}

ui.start.addEventListener("click", start);
ui.saveRaw.addEventListener("click", requestRawSave);
ui.toggle3d.addEventListener("click", toggle3d);
ui.stop.addEventListener("click", stop);
ui.save.addEventListener("click", saveDepth);
ui.model.addEventListener("change", () => { updateRandomBanner(); sendConfig(); });
ui.colormap.addEventListener("change", () => { showColorbar(); sendConfig(); });
ui.file.addEventListener("change", () => ui.file.files[0] && useFile(ui.file.files[0]));

(async function init() {
  let delay = 0;
  while (!(await loadModels())) {
    delay = BACKOFF_MS[Math.min(BACKOFF_MS.indexOf(delay) + 1, BACKOFF_MS.length - 1)];
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
  connect();
})();
