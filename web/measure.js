// Measuring on the depth view: a click's place in the frame as drawn, and that pixel's 3D point
// from the frame's full-resolution raw depth (geometry.js); two clicks, the distance between.
import { ui } from "./ui.js";
import { distanceBetween, fovDegrees, pointAt, unitsLabel } from "./geometry.js";

// where the frame is drawn in the canvas's box: object-fit: contain letterboxes a frame of another
// shape than the box (a 16:9 camera in the 4:3 view)
function drawnRect() {
  const box = ui.depth.getBoundingClientRect();
  const scale = Math.min(box.width / ui.depth.width, box.height / ui.depth.height);
  const width = ui.depth.width * scale, height = ui.depth.height * scale;
  return { left: box.left + (box.width - width) / 2, top: box.top + (box.height - height) / 2, width, height };
}

// the click as fractions of the frame ({x, y} in [0, 1)), or null on the letterbox's bars
export function clickedFraction(event) {
  const rect = drawnRect();
  const pick = { x: (event.clientX - rect.left) / rect.width, y: (event.clientY - rect.top) / rect.height };
  return pick.x < 0 || pick.x >= 1 || pick.y < 0 || pick.y >= 1 ? null : pick;
}

// one click measured on `last` (the frame's raw header and values): the picks now (one, or the
// two to measure between; a third click starts again), shown in the readout
export function measureAt(last, { x, y }, picks, hfov) {
  const { header, q } = last;
  const raw = header.raw;
  const u = Math.min(raw.width - 1, Math.floor(x * raw.width));
  const v = Math.min(raw.height - 1, Math.floor(y * raw.height));
  const point = pointAt(raw, q, u, v, hfov);
  // each point on the frame on screen when it was clicked
  const pick = { u, v, point, seq: header.seq };
  const now = picks.length === 1 ? [picks[0], pick] : [pick];
  const units = unitsLabel(raw);
  const [a, b] = now;
  const range = (p) => Math.hypot(...p.point).toFixed(2); // from the camera's centre
  ui.measure.textContent = b
    ? `A ${range(a)} ${units}, B ${range(b)} ${units}: A to B ${distanceBetween(a.point, b.point).toFixed(2)} ${units}`
    : `${range(a)} ${units} away (depth ${point[2].toFixed(2)}); click a second point for the distance between`;
  Object.assign(ui.measure.dataset, {
    picks: JSON.stringify(now.map((p) => [p.u, p.v, p.seq])), hfov: fovDegrees(hfov),
    distance: b ? distanceBetween(a.point, b.point) : "", units: raw.units ?? "relative",
  });
  return now;
}
