// depthstream page: camera (or a file) -> JPEG frames over a WebSocket -> colorized depth back.
// This module wires the others: ui.js (elements, banner), models.js (the model list),
// connection.js (the socket and its reconnect policy), accounting.js (every frame's outcome),
// capture.js (sources, pacing), view2d.js, view3d.js, measure.js, save.js, record.js.
// Wire protocol: docs/protocol.md.
import { ui, showBanner, clearBanner, setStatus, withToken } from "./ui.js";
import { FrameBook } from "./accounting.js";
import { Connection, retryDelayMs } from "./connection.js";
import { Capture } from "./capture.js";
import { pageTimings } from "./timings.js";
import * as view2d from "./view2d.js";
import { download, saveCloud, saveColorized, saveRaw } from "./save.js";
import { loadModels, updateRandomBanner } from "./models.js";
import { Recorder, recordingSupported } from "./record.js";
import { DEFAULT_HFOV_DEG, fovDegrees } from "./geometry.js";
import { clickedFraction, measureAt } from "./measure.js";

const PAUSE_AFTER_SERVER_ERROR_MS = 1000; // don't hammer a server that just said it can't
const CONFIG_GAP_MS = 250; // the server takes at most 5 control messages a second: send the latest
const STALL_GRACE_MS = 5000; // beyond the server's own deadline, before the page gives up a socket

const book = new FrameBook();
const page = {
  errorCodes: { transient: [], model: [] }, stallMs: 15000, framesShown: 0,
  pendingHeader: null, pendingBinaries: [], // an answer's JSON and the binaries it announced
  view3d: false, lastRaw: null, rawSavePending: false, colorSavePending: false,
  cloudSavePending: false, measurePending: null, picks: [], hfov: DEFAULT_HFOV_DEG,
  estimated: null, // the camera the model estimated (the depth header's), null: none
  fovPinned: false, // the user pinned the field of view over the model's estimate
  newScene: false, // the source changed: the next config says so
  steadyChosen: false, // the user ticked or unticked Steady depth
  shownSeq: -1, // the answer on screen: the picture drawn, or the 3D view's points placed
};
const connection = new Connection({ onOpen, onText, onBinary, onClosed });
const capture = new Capture(book, (blob, snapshot) => {
  if (connection.send(blob)) book.sent(snapshot);
});
window.depthstream = { connection, book }; // what the browser tests read

// --- the stream ----------------------------------------------------------------------------------
function onOpen(hello) {
  book.reset(); // sequence numbers start again on a new socket
  page.pendingHeader = null;
  page.lastRaw = null;
  view2d.forgetShown();
  page.errorCodes = hello.error_codes; // what each error code means, from the server
  // the server's default (BRIDGE_STEADY) until the user chooses; then the user's choice, kept
  // across reconnects
  if (!page.steadyChosen && typeof hello.steady === "boolean") ui.steady.checked = hello.steady;
  page.stallMs = hello.request_timeout_s * 1000 + STALL_GRACE_MS;
  capture.pace(hello.max_fps);
  clearBanner("network", "stall");
  sendConfig();
  setStatus(capture.running ? "streaming" : "connected");
}

function onClosed({ text, retryMs }) {
  book.reset();
  setStatus("disconnected");
  if (retryMs === null) {
    showBanner(`${text}.`, "refused", { label: "Try again", run: () => connection.connect() });
  } else {
    showBanner(`${text}; reconnecting in ${Math.max(1, Math.round(retryMs / 1000))} s…`, "network");
  }
}

// raw depth costs 5x the bytes of the JPEG: the 3D view asks for "points" (every second pixel
// each way, 150 KB at 640x480); a save or a measurement waits for the full-resolution depth
function wantedOutput() {
  // between a first and a second click, the full depth keeps coming: the second is measured at once
  const measuring = page.measurePending || page.picks.length === 1;
  const fullDepth = page.rawSavePending || page.cloudSavePending || measuring;
  if (page.view3d) return fullDepth ? "raw" : "points"; // points: a quarter of the depth, no JPEG
  return fullDepth ? "both" : "color";
}

// the latest choice, at most one message per CONFIG_GAP_MS (scrolling a select with the arrow keys
// fires a change per option: the ones in between are never sent)
let configTimer = null;
let lastConfigAt = -Infinity;
function sendConfig() {
  clearTimeout(configTimer);
  const wait = lastConfigAt + CONFIG_GAP_MS - performance.now();
  if (wait > 0) {
    configTimer = setTimeout(sendConfig, wait);
    return;
  }
  lastConfigAt = performance.now();
  const config = { type: "config", model: ui.model.value, colormap: ui.colormap.value, output: wantedOutput(), steady: ui.steady.checked };
  if (page.newScene) config.new_scene = true; // another source: the alignment starts again
  connection.send(JSON.stringify(config));
  page.newScene = false; // unsent (no socket): the next connection is a new stream anyway
}

function onText(message) {
  switch (message.type) {
    case "config":
      // a reply to an older choice (or one the server refused): the latest goes out again
      if (message.model !== ui.model.value || message.colormap !== ui.colormap.value || message.steady !== ui.steady.checked) sendConfig();
      updateRandomBanner(message.random_weights);
      ui.depthModel.textContent = message.model;
      clearBanner("model");
      break;
    case "depth":
      page.pendingHeader = message;
      page.pendingBinaries = [];
      followCamera(message);
      break;
    case "dropped": // frames the server will not answer: settled, so the page never waits for them
      book.settleRanges(message.seqs);
      view2d.showStats({ dropped: message.dropped });
      break;
    case "error":
      onError(message);
      break;
  }
}

function onError(message) {
  if (message.seq !== undefined) book.settle(message.seq);
  else if (message.code === "rate_limited") sendConfig(); // a refused control message: send the latest again
  if (page.errorCodes.transient.includes(message.code)) {
    capture.pausedUntil = performance.now() + PAUSE_AFTER_SERVER_ERROR_MS;
  }
  const text = message.message.charAt(0).toUpperCase() + message.message.slice(1);
  showBanner(text, page.errorCodes.model.includes(message.code) ? "model" : "frame");
}

function onBinary(buffer) {
  const header = page.pendingHeader;
  if (!header) return;
  page.pendingBinaries.push(buffer);
  const kinds = header.binary ?? ["jpeg"];
  if (page.pendingBinaries.length < kinds.length) return;
  const binaries = page.pendingBinaries;
  page.pendingHeader = null;
  page.pendingBinaries = [];
  const { sentAt, snapshot } = book.settle(header.seq);
  book.answered();
  connection.markServed();
  const raw = kinds.indexOf("uint16le");
  if (raw >= 0) onRawDepth(header, binaries[raw], snapshot);
  const jpeg = kinds.indexOf("jpeg");
  if (jpeg >= 0) onDepthImage(header, binaries[jpeg], sentAt);
  else showAnswered(header, sentAt, performance.now()); // the 3D view's points: no picture
}

// The 3D view and three.js (2.1 MB) load when the view is first opened, not with the page.
let view3d = null;
async function load3d() {
  try {
    view3d ??= await import("./view3d.js");
  } catch (error) {
    return { ok: false, reason: `The 3D view could not load (${error.message ?? error}).` };
  }
  view3d.setFieldOfView(fieldOfView());
  return view3d.show();
}

function onRawDepth(header, buffer, snapshot) {
  const last = { header, q: new Uint16Array(buffer), rgba: snapshot ?? null };
  if (page.view3d && view3d) view3d.showFrame({ raw: header.raw, q: last.q, rgba: last.rgba, width: header.width, height: header.height, fov: cameraOf(header) });
  if (header.raw.step) return; // the 3D view's grid: saving and measuring wait for the full depth
  page.lastRaw = last;
  const waited = page.rawSavePending || page.cloudSavePending || page.measurePending;
  if (page.rawSavePending) {
    page.rawSavePending = false;
    saveRaw(page.lastRaw);
  }
  if (page.cloudSavePending && page.lastRaw.rgba) {
    page.cloudSavePending = false;
    capture.withSnapshots = page.view3d;
    saveCloud(page.lastRaw, cameraOf(page.lastRaw.header));
  }
  if (page.measurePending) {
    const pick = page.measurePending;
    page.measurePending = null;
    measure(pick);
  }
  if (waited) sendConfig(); // back to what the view needs
}

async function onDepthImage(header, buffer, sentAt) {
  const now = performance.now();
  if (!(await view2d.drawDepth(header, buffer))) return; // a newer frame was drawn meanwhile
  pageTimings.draw.add(performance.now() - now);
  showAnswered(header, sentAt, now);
  if (page.colorSavePending && header.colormap === ui.colormap.value) {
    page.colorSavePending = false;
    saveColorized();
  }
}

// an answer shown (the picture drawn, or the 3D view's points placed): the numbers and buttons
function showAnswered(header, sentAt, now) {
  page.framesShown += 1;
  page.shownSeq = header.seq;
  view2d.showStats({
    frames: page.framesShown,
    dropped: header.dropped,
    // after Stop, answers still in flight are drawn but the live numbers stay cleared
    latencyMs: sentAt === undefined || !capture.running ? undefined : now - sentAt,
    fps: capture.running ? book.fps() : undefined,
  });
  ui.depthModel.textContent = header.model;
  ui.save.disabled = page.view3d; // the colorized picture is not what the 3D view shows
  ui.saveRaw.disabled = false;
  ui.save3d.disabled = false;
  updateRandomBanner(header.random_weights);
  clearBanner("frame", "model", "stall");
}

// --- the capture loop ------------------------------------------------------------------------------
function loop(now) {
  if (!capture.running) return;
  if (connection.open && book.stalled(page.stallMs)) {
    connection.abandon(); // nothing heard of any frame for longer than the server's deadline allows
  } else if (connection.open) {
    capture.tick(now);
  }
  requestAnimationFrame(loop);
}

async function start() {
  if (capture.running) return;
  if (!(await capture.start())) return;
  ui.start.disabled = true;
  ui.stop.disabled = false;
  setStatus(connection.open ? "streaming" : "waiting for the server");
  requestAnimationFrame(loop);
}

function stop() {
  capture.stop();
  recorder.stop(); // the recording so far is saved
  ui.start.disabled = false;
  ui.stop.disabled = true;
  view2d.showStats({ fps: 0, latencyMs: null }); // nothing streams now
  setStatus("stopped");
}

// --- saving and the 3D view -----------------------------------------------------------------------
function requestColorSave() {
  if (view2d.shown.colormap === ui.colormap.value) {
    saveColorized();
    return;
  }
  page.colorSavePending = true; // the colormap just changed: save the first frame drawn with it
  if (!capture.running) setStatus("press Start: the next frame, in the new colormap, will be saved");
}

function requestRawSave() {
  if (rawOnScreen()) {
    saveRaw(page.lastRaw);
    return;
  }
  page.rawSavePending = true; // the next answer carries the raw depth
  sendConfig();
  if (!capture.running) setStatus("press Start: the raw depth of the next frame will be saved");
}

// the full-resolution raw depth of the answer on screen, if the page holds it (the 2D view shows
// JPEG frames; the 3D view, the "points" grid)
function rawOnScreen() {
  const raw = page.lastRaw;
  return raw && raw.header.seq === page.shownSeq ? raw : null;
}

function requestCloudSave() {
  const raw = rawOnScreen();
  if (raw?.rgba) {
    saveCloud(raw, cameraOf(raw.header));
    return;
  }
  page.cloudSavePending = true; // the next answer carries the raw depth, with the camera's colours
  capture.withSnapshots = true;
  sendConfig();
  if (!capture.running) setStatus("press Start: the next frame will be saved as a point cloud");
}

// a click on the depth view: that pixel's distance; a second click, the distance between the two
function pickPixel(event) {
  const pick = clickedFraction(event);
  if (!pick) return; // the letterbox's bars
  if (rawOnScreen()) {
    measure(pick);
    return;
  }
  page.measurePending = pick; // measured on the full-resolution depth of the next answer
  sendConfig();
  ui.measure.textContent = capture.running ? "measuring…" : "press Start: the next frame will be measured";
}

function measure(pick) {
  page.picks = measureAt(page.lastRaw, pick, page.picks, cameraOf(page.lastRaw.header));
  if (page.picks.length === 2) sendConfig(); // measured: back to what the view needs
}

async function toggle3d() {
  const on = !page.view3d;
  ui.view3d.hidden = !on;
  if (on) {
    ui.toggle3d.disabled = true; // one load at a time (three.js is parsed once)
    const shown = await load3d();
    ui.toggle3d.disabled = false;
    if (!shown.ok) {
      ui.view3d.hidden = true;
      showBanner(shown.reason, "webgl");
      return;
    }
  }
  page.view3d = on;
  page.picks = []; // measuring is on the 2D view (its last readout stays)
  page.measurePending = null;
  // what is on screen now: the last frame the 3D view places, or the 2D view's last picture
  page.shownSeq = on ? (page.lastRaw?.header.seq ?? -1) : view2d.shown.seq;
  capture.withSnapshots = on || page.cloudSavePending;
  const last = page.lastRaw; // stopped or not, the view opens on the last frame it can place
  if (on && last) view3d.showFrame({ raw: last.header.raw, q: last.q, rgba: last.rgba, width: last.header.width, height: last.header.height, fov: cameraOf(last.header) });
  ui.view3dLabel.hidden = !on;
  ui.toggle3d.setAttribute("aria-pressed", String(on));
  ui.depth.hidden = on;
  ui.save.disabled = on || page.framesShown === 0; // the 3D view has no colorized picture
  view2d.colormapApplies(!on);
  sendConfig();
}

ui.start.addEventListener("click", start);
ui.stop.addEventListener("click", stop);
ui.save.addEventListener("click", requestColorSave);
ui.saveRaw.addEventListener("click", requestRawSave);
ui.toggle3d.addEventListener("click", toggle3d);
ui.save3d.addEventListener("click", requestCloudSave);
ui.depth.addEventListener("click", pickPixel);
ui.hfov.addEventListener("input", () => {
  page.hfov = Number(ui.hfov.value);
  if (page.estimated) page.fovPinned = ui.hfovPin.checked = true; // moving it pins it
  showFieldOfView();
  view3d?.setFieldOfView(fieldOfView());
  forgetPicks(); // placed with another field of view
});
// the camera every 3D output uses: the model's estimate, unless there is none or the user pinned
// a field of view (the slider)
function fieldOfView() {
  return page.estimated && !page.fovPinned ? page.estimated : page.hfov;
}

// the camera for one answered frame: its own estimate (its header's), unless pinned
function cameraOf(header) {
  if (!header.camera || page.fovPinned) return page.hfov;
  return { ...header.camera, width: header.width, height: header.height };
}

function followCamera(header) {
  const camera = header.camera ? { ...header.camera, width: header.width, height: header.height } : null;
  if (!camera && !page.estimated) return;
  page.estimated = camera;
  ui.hfovPin.parentElement.hidden = !camera;
  showFieldOfView(); // the 3D view places each frame with that frame's own camera (cameraOf)
}

function showFieldOfView() {
  const fov = fieldOfView();
  if (typeof fov === "object") {
    ui.hfov.value = String(Math.round(fovDegrees(fov)));
    ui.hfovValue.textContent = `${fovDegrees(fov)}° (estimated)`;
  } else {
    ui.hfov.value = String(fov); // the knob back where the number is, once an estimate is gone
    ui.hfovValue.textContent = page.estimated ? `${fov}° (pinned)` : `${fov}°`;
  }
}

ui.hfovPin.addEventListener("change", () => {
  page.fovPinned = ui.hfovPin.checked;
  if (page.fovPinned) page.hfov = Number(ui.hfov.value); // pinned where the estimate stood
  showFieldOfView();
  view3d?.setFieldOfView(fieldOfView());
  forgetPicks();
});

function forgetPicks() {
  page.picks = [];
  page.measurePending = null;
  ui.measure.textContent = "Click the depth to measure";
  delete ui.measure.dataset.picks;
  sendConfig();
}

ui.model.addEventListener("change", () => { forgetPicks(); updateRandomBanner(); sendConfig(); });
ui.colormap.addEventListener("change", () => { view2d.showColorbar(); sendConfig(); });
ui.file.addEventListener("change", () => {
  if (!ui.file.files[0]) return;
  stop();
  capture.useFile(ui.file.files[0]);
  newScene();
});
ui.useCamera.addEventListener("click", () => { stop(); capture.useCamera(); newScene(); });
ui.steady.addEventListener("change", () => { page.steadyChosen = true; sendConfig(); });
function newScene() {
  page.newScene = true;
  sendConfig();
}

// --- recording (record.js) -------------------------------------------------------------------------
const recorder = new Recorder((blob, name) => download(blob, name), (reason) => { showRecording(); setStatus(reason); });
function showRecording() {
  ui.record.textContent = recorder.recording ? "Stop recording" : "Record";
  ui.record.setAttribute("aria-pressed", String(recorder.recording));
  ui.recordWhat.disabled = recorder.recording;
}
ui.record.disabled = !recordingSupported();
if (ui.record.disabled) ui.record.title = "this browser cannot record video (MediaRecorder with WebM)";
ui.record.addEventListener("click", () => {
  if (recorder.recording) recorder.stop();
  else recorder.start(ui.model.value, ui.recordWhat.value === "both");
  showRecording();
});

async function init() {
  for (let failures = 1; ; failures++) {
    const loaded = await loadModels(init);
    if (loaded === "ok") break;
    if (loaded === "refused") return; // the banner's button calls init again
    const delay = retryDelayMs(failures);
    const noModel = ui.model.options.length > 0 && !ui.model.disabled;
    showBanner(noModel ? `The model server has no model ready yet. Is Triton running? Retrying in ${Math.round(delay / 1000)} s…`
      : `Cannot reach the depthstream server; retrying in ${Math.round(delay / 1000)} s…`, "network");
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
  clearBanner("network");
  connection.connect();
}
init();
