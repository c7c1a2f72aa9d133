// Recording: what the depth view shows (the 2D picture or the 3D view), or the camera beside it,
// to a WebM file with MediaRecorder. It records a canvas of its own, drawn FPS times a second
// from what is on screen, so a model switch, the 3D toggle or a reconnect change what the
// recording shows, never stop it. A recording is held in memory until Stop: it stops by itself
// at MAX_SECONDS or MAX_BYTES, and says so.
import { ui } from "./ui.js";

const FPS = 15;
const MAX_SECONDS = 600;
const MAX_BYTES = 512 * 1024 * 1024;
const TYPES = ["video/webm;codecs=vp9", "video/webm;codecs=vp8", "video/webm"];

export const recordingSupported = () =>
  typeof MediaRecorder !== "undefined" && TYPES.some((type) => MediaRecorder.isTypeSupported(type));

// depthstream-<model>-<local date and time>.webm
export function recordingName(model, date = new Date()) {
  const pad = (n) => String(n).padStart(2, "0");
  const stamp = `${date.getFullYear()}${pad(date.getMonth() + 1)}${pad(date.getDate())}-${pad(date.getHours())}${pad(date.getMinutes())}${pad(date.getSeconds())}`;
  return `depthstream-${model || "depth"}-${stamp}.webm`;
}

export class Recorder {
  // save(blob, name): hands the finished file to the user; onEnd(reason): the recording ended by itself
  constructor(save, onEnd) {
    this.save = save;
    this.onEnd = onEnd;
    this.canvas = document.createElement("canvas");
    this.recorder = null;
    this.timer = null;
  }

  get recording() { return this.recorder !== null; }

  // withCamera: the camera (or file) on the left, the depth on the right
  start(model, withCamera) {
    this.withCamera = withCamera;
    this.measure();
    this.draw(); // drawn once before the stream is taken from it
    const type = TYPES.find((t) => MediaRecorder.isTypeSupported(t));
    const recorder = new MediaRecorder(this.canvas.captureStream(FPS), { mimeType: type });
    const chunks = [];
    let bytes = 0;
    const name = recordingName(model);
    recorder.ondataavailable = (event) => {
      if (!event.data.size) return;
      chunks.push(event.data);
      bytes += event.data.size;
      if (bytes >= MAX_BYTES) this.stop(`the recording reached ${MAX_BYTES / 1024 / 1024} MB and was saved`);
    };
    recorder.onstop = () => this.save(new Blob(chunks, { type: "video/webm" }), name);
    recorder.start(1000); // a chunk a second: the size ceiling is checked as it grows
    this.recorder = recorder;
    this.startedAt = performance.now();
    this.timer = setInterval(() => this.tick(), 1000 / FPS);
  }

  stop(reason = null) {
    if (!this.recorder) return;
    clearInterval(this.timer);
    this.recorder.stop();
    this.recorder = null;
    if (reason) this.onEnd(reason);
  }

  tick() {
    if ((performance.now() - this.startedAt) / 1000 >= MAX_SECONDS) {
      this.stop(`recordings stop after ${MAX_SECONDS / 60} minutes: this one was saved`);
      return;
    }
    this.draw();
  }

  // the depth as shown: the 3D view's canvas when it is open, else the 2D picture
  depthSource() {
    const gl = ui.view3d.hidden ? null : ui.view3d.querySelector("canvas");
    return gl ?? ui.depth;
  }

  cameraSource() {
    return ui.still.hidden ? ui.video : ui.still;
  }

  // the recording's size, fixed at its start (a video's frames keep one size): the depth view's,
  // and the camera's at the same height beside it
  measure() {
    const depth = this.depthSource();
    const height = depth.height || 480;
    const width = depth.width || 640;
    const camera = this.withCamera ? this.cameraSource() : null;
    const cameraW = camera ? camera.videoWidth || camera.naturalWidth : 0;
    const cameraH = camera ? camera.videoHeight || camera.naturalHeight : 0;
    this.cameraWidth = cameraW && cameraH ? Math.round((cameraW * height) / cameraH) : 0;
    this.canvas.width = this.cameraWidth + width;
    this.canvas.height = height;
  }

  draw() {
    const context = this.canvas.getContext("2d");
    const { width, height } = this.canvas;
    context.fillStyle = "#000";
    context.fillRect(0, 0, width, height);
    const camera = this.cameraSource();
    if (this.cameraWidth && (camera.videoWidth || camera.naturalWidth)) context.drawImage(camera, 0, 0, this.cameraWidth, height);
    context.drawImage(this.depthSource(), this.cameraWidth, 0, width - this.cameraWidth, height);
  }
}
