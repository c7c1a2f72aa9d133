// Sources (the camera, an image or a video file) and the capture loop that sends their frames.
//
// Pacing: a frame goes out as soon as fewer than MAX_IN_FLIGHT are unanswered, and otherwise on a
// steady clock (SEND_CLOCK_MS, never faster than the server's max_fps): the bridge keeps only the
// newest waiting frame, so when this stream's turn comes the frame it finds is at most one tick
// old, however long the other streams make the rotation. Replaced frames come back in "dropped"
// notices, so the books stay exact.
import { ui, showBanner } from "./ui.js";
import { pageTimings } from "./timings.js";

export const MAX_IN_FLIGHT = 2;
const SEND_CLOCK_MS = 200;
const MAX_OUTSTANDING = 8; // a silent server does not get frames without end
const JPEG_QUALITY = 0.8;

const canvas = document.createElement("canvas");
// the 3D view's colors are read back from the CPU: a canvas made for that (its first getContext fixes it)
const colorCanvas = document.createElement("canvas");

export class Capture {
  // send(blob, snapshot): put one frame on the wire; returns false when it could not
  constructor(book, send) {
    this.book = book;
    this.send = send;
    this.source = "camera"; // "camera" | "image" | "video"
    this.stream = null;
    this.fileUrl = null;
    this.running = false;
    this.encoding = false; // one JPEG encode at a time: frames leave in order
    this.pausedUntil = 0;
    this.clockMs = SEND_CLOCK_MS;
    this.minGapMs = 0; // never faster than the server's max_fps, whatever the answers allow
    this.withSnapshots = false; // the 3D view colors each point with the camera pixel it came from
  }

  // the server's max_fps: never send faster than it takes
  pace(maxFps) {
    this.minGapMs = maxFps ? (1000 / maxFps) * 1.05 : 0; // 5% under the limit: no rate_limited
    this.clockMs = Math.max(SEND_CLOCK_MS, this.minGapMs);
  }

  size() {
    const [w, h] = ui.resolution.value.split("x").map(Number);
    return { w, h };
  }

  async startCamera() {
    const { w, h } = this.size();
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: w }, height: { ideal: h } }, audio: false });
    } catch (err) {
      const denied = err.name === "NotAllowedError" || err.name === "SecurityError";
      showBanner(denied ? "Camera access was denied. Allow the camera in the browser, or pick an image or video file."
        : `No camera available (${err.name}). Pick an image or video file instead.`);
      return false;
    }
    ui.video.srcObject = this.stream;
    await ui.video.play().catch(() => {});
    return true;
  }

  stopCamera() {
    this.stream?.getTracks().forEach((t) => t.stop());
    this.stream = null;
    ui.video.srcObject = null;
  }

  async start() {
    if (this.source === "camera" && !(await this.startCamera())) return false;
    if (this.source === "video") await ui.video.play().catch(() => {});
    this.running = true;
    return true;
  }

  stop() {
    this.running = false;
    if (this.source === "camera") this.stopCamera();
    if (this.source === "video") ui.video.pause();
  }

  useFile(file) {
    if (this.fileUrl) URL.revokeObjectURL(this.fileUrl);
    this.fileUrl = URL.createObjectURL(file);
    if (file.type.startsWith("video/")) {
      this.source = "video";
      ui.still.hidden = true;
      ui.video.hidden = false;
      ui.video.srcObject = null;
      ui.video.src = this.fileUrl;
      ui.video.loop = true;
    } else {
      this.source = "image";
      ui.still.src = this.fileUrl;
      ui.still.hidden = false;
      ui.video.hidden = true;
    }
    ui.sourceLabel.textContent = file.name;
    ui.useCamera.hidden = false;
  }

  useCamera() {
    if (this.fileUrl) URL.revokeObjectURL(this.fileUrl);
    this.fileUrl = null;
    this.source = "camera";
    ui.video.removeAttribute("src");
    ui.video.loop = false;
    ui.video.hidden = false;
    ui.still.hidden = true;
    ui.file.value = "";
    ui.sourceLabel.textContent = "Camera";
    ui.useCamera.hidden = true;
  }

  element() {
    if (this.source === "image") return ui.still.complete && ui.still.naturalWidth ? ui.still : null;
    return ui.video.readyState >= 2 ? ui.video : null;
  }

  due(now) {
    if (!this.running || this.encoding || now < this.pausedUntil) return false;
    const unanswered = this.book.outstanding;
    if (unanswered >= MAX_OUTSTANDING) return false;
    const since = now - this.book.lastSentAt;
    if (since < this.minGapMs) return false;
    return unanswered < MAX_IN_FLIGHT || since >= this.clockMs;
  }

  // one frame: drawn at the capture size, JPEG-encoded, then sent (seq taken when it leaves)
  tick(now) {
    if (!this.due(now)) return;
    const element = this.element();
    if (!element) return;
    const srcW = element.videoWidth || element.naturalWidth;
    const srcH = element.videoHeight || element.naturalHeight;
    const { w, h } = this.size();
    const started = performance.now();
    const scale = Math.min(1, w / srcW, h / srcH);
    canvas.width = Math.max(2, Math.round(srcW * scale));
    canvas.height = Math.max(2, Math.round(srcH * scale));
    canvas.getContext("2d").drawImage(element, 0, 0, canvas.width, canvas.height);
    let snapshot = null;
    if (this.withSnapshots) {
      colorCanvas.width = canvas.width;
      colorCanvas.height = canvas.height;
      const context = colorCanvas.getContext("2d", { willReadFrequently: true });
      context.drawImage(canvas, 0, 0);
      snapshot = context.getImageData(0, 0, canvas.width, canvas.height);
    }
    this.encoding = true;
    canvas.toBlob((blob) => {
      this.encoding = false;
      pageTimings.encode.add(performance.now() - started);
      if (blob) this.send(blob, snapshot);
    }, "image/jpeg", JPEG_QUALITY);
  }
}
