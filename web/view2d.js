// The 2D view: the colorized depth JPEG, the overlay's numbers and the colormap's colorbar.
import { ui } from "./ui.js";

let colormapStops = {};
export let shown = { model: null, colormap: null, seq: -1 }; // what the canvas holds now

export function setColormapStops(stops) { colormapStops = stops ?? {}; }

export function showColorbar() {
  const stops = colormapStops[ui.colormap.value];
  ui.colorbarRamp.style.background = stops ? `linear-gradient(to right, ${stops.join(", ")})` : "";
  ui.colorbarName.textContent = ui.colormap.value;
}

// the 3D view colors points with the camera: the colormap and its colorbar do not apply then
export function colormapApplies(applies) {
  ui.colorbar.hidden = !applies;
  ui.colormap.disabled = !applies;
  ui.colormap.title = applies ? "" : "the 3D view colors each point with the camera's pixel";
}

// the colorbar's ends: in metres for a metric model (this frame's range), else "near" and "far"
export function labelColorbar(colorbar) {
  const metres = colorbar?.units === "m";
  ui.colorbarNear.textContent = metres ? `near ${colorbar.near.toFixed(2)} m` : "near";
  ui.colorbarFar.textContent = metres ? `far ${colorbar.far.toFixed(2)} m` : "far";
  ui.colorbar.dataset.units = metres ? "m" : "relative";
}

// a new socket numbers its frames from 0 again
export function forgetShown() { shown = { model: null, colormap: null, seq: -1 }; }

// false when a newer frame was drawn while this one decoded (decoding is asynchronous)
export async function drawDepth(header, jpeg) {
  const bitmap = await createImageBitmap(new Blob([jpeg], { type: "image/jpeg" }));
  if (header.seq < shown.seq) {
    bitmap.close();
    return false;
  }
  ui.depth.width = bitmap.width;
  ui.depth.height = bitmap.height;
  ui.depth.getContext("2d").drawImage(bitmap, 0, 0);
  bitmap.close();
  shown = { model: header.model, colormap: header.colormap, seq: header.seq };
  labelColorbar(header.colorbar);
  ui.depth.dataset.model = header.model;
  ui.depth.dataset.colormap = header.colormap ?? "";
  return true;
}

export function showStats({ frames, dropped, latencyMs, fps }) {
  if (frames !== undefined) ui.frames.textContent = frames;
  if (dropped !== undefined) ui.dropped.textContent = dropped;
  if (latencyMs !== undefined) ui.latency.textContent = latencyMs === null ? "–" : Math.round(latencyMs);
  if (fps !== undefined) ui.fps.textContent = fps.toFixed(1);
}
