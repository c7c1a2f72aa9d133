// depthstream 3D view: the current frame as a point cloud colored by the camera image, orbit
// with the mouse (drag), zoom (wheel), pan (right drag). three.js r187, vendored (vendor/three/).
//
// main.js asks for the raw depth while the view is on and calls showFrame() for each frame with
// {raw: {width, height, min, max, units, step?}, q: Uint16Array, rgba: ImageData|null, width, height}
// (the frame's size; the raw depth may be the "points" grid of every second pixel). Points are
// back-projected through the pinhole of geometry.js with the user's field of view: in metres for a
// metric model, with a 1 m grid at the floor's height; a relative model's view is a shape in
// relative units, and says so. Without WebGL, show() returns {ok: false, reason} and no renderer
// is tried again (not per frame either).
// Each update's time (points rebuilt + drawn) is measured and kept in window.depthstream3d.
import * as THREE from "three";
import { OrbitControls } from "three/addons/controls/OrbitControls.js";
import { RecentTimes } from "./timings.js";
import { DEFAULT_HFOV_DEG, RELATIVE_FAR, RELATIVE_NEAR, distanceAt, fovDegrees, intrinsics, isMetric, nearness } from "./geometry.js";

const STEP = 2; // one point per 2x2 pixels: 76,800 points for 640x480
const GRID_M = 20; // the metric grid: 20 m across, 1 m cells

const container = document.getElementById("view3d");
const stats = { frames: 0, times: new RecentTimes(120), error: null };
window.depthstream3d = { stats, summary };

let renderer = null, unavailable = null, scene, camera, controls, geometry, points, grid;
let gridWidth = 0, gridHeight = 0;
let hfovDeg = DEFAULT_HFOV_DEG, last = null, aimedAt = null;
const label = document.getElementById("view3d-label");

function summary() {
  const at = (p) => stats.times.quantile(p);
  return { frames: stats.frames, points: gridWidth * gridHeight, p50_ms: at(0.5), p95_ms: at(0.95), max_ms: at(1), error: stats.error };
}

function setUp() {
  if (renderer) return true;
  if (unavailable) return false;
  try {
    renderer = new THREE.WebGLRenderer({ antialias: false, preserveDrawingBuffer: true }) // recordable (record.js);
  } catch (err) {
    unavailable = "The 3D view needs WebGL, which this browser does not offer (or has turned off).";
    stats.error = `WebGL is not available: ${err.message}`;
    container.textContent = unavailable;
    return false;
  }
  renderer.setPixelRatio(Math.min(window.devicePixelRatio, 2));
  container.appendChild(renderer.domElement);
  scene = new THREE.Scene();
  scene.background = new THREE.Color(0x000000);
  camera = new THREE.PerspectiveCamera(50, 4 / 3, 0.05, 100);
  camera.position.set(0, 0, 0.5);
  controls = new OrbitControls(camera, renderer.domElement);
  controls.target.set(0, 0, -(RELATIVE_NEAR + RELATIVE_FAR) / 2);
  controls.addEventListener("change", draw);
  controls.update();
  geometry = new THREE.BufferGeometry();
  points = new THREE.Points(geometry, new THREE.PointsMaterial({ size: 2, sizeAttenuation: false, vertexColors: true }));
  scene.add(points);
  grid = new THREE.GridHelper(GRID_M, GRID_M, 0x4a90d9, 0x2a3a4a);
  grid.visible = false;
  scene.add(grid);
  new ResizeObserver(resize).observe(container);
  resize();
  return true;
}

function resize() {
  const width = container.clientWidth || 640;
  const height = container.clientHeight || 480;
  renderer.setSize(width, height, false);
  camera.aspect = width / height;
  camera.updateProjectionMatrix();
  draw();
}

function draw() {
  if (renderer && !container.hidden) renderer.render(scene, camera);
}

// look at the cloud's middle when its units change (relative shape <-> metres), not every frame:
// the user's orbit stays where they put it
function aim(units, meanZ) {
  if (aimedAt === units || !Number.isFinite(meanZ)) return;
  aimedAt = units;
  controls.target.set(0, 0, -meanZ);
  camera.position.set(0, 0, Math.min(0.5, meanZ / 4));
  controls.update();
}

function allocate(width, height) {
  gridWidth = Math.ceil(width / STEP);
  gridHeight = Math.ceil(height / STEP);
  const count = gridWidth * gridHeight;
  geometry.setAttribute("position", new THREE.BufferAttribute(new Float32Array(count * 3), 3).setUsage(THREE.DynamicDrawUsage));
  geometry.setAttribute("color", new THREE.BufferAttribute(new Float32Array(count * 3), 3).setUsage(THREE.DynamicDrawUsage));
}

// the pinhole of geometry.js; three.js looks down -z with y up: (x, y, z) OpenCV -> (x, -y, -z)
// raw: the full depth, or the "points" grid (raw.step: grid cell (i, j) is pixel (step i, step j))
function update({ raw, q, rgba, width, height, fov }) {
  const camera = fov ?? hfovDeg; // the frame's own camera (the model's estimate), else the slider's
  const started = performance.now();
  const step = raw.step ?? 1; // STEP is a multiple of it
  const depthAt = (u, v) => (v / step) * raw.width + u / step;
  if (Math.ceil(width / STEP) !== gridWidth || Math.ceil(height / STEP) !== gridHeight) allocate(width, height);
  const position = geometry.attributes.position.array;
  const color = geometry.attributes.color.array;
  const { fx, fy, cx, cy } = intrinsics(width, height, camera); // degrees, or the model's estimate
  const pixels = rgba && rgba.width === width && rgba.height === height ? rgba.data : null;
  let i = 0, lowest = 0, sumZ = 0;
  for (let v = 0; v < height; v += STEP) {
    for (let u = 0; u < width; u += STEP) {
      const index = v * width + u; // in the frame (the camera's colors)
      const z = distanceAt(raw, q, depthAt(u, v));
      position[i] = ((u - cx) * z) / fx;
      position[i + 1] = (-(v - cy) * z) / fy;
      position[i + 2] = -z;
      lowest = Math.min(lowest, position[i + 1]);
      sumZ += z;
      if (pixels) {
        const p = 4 * index;
        color[i] = pixels[p] / 255; color[i + 1] = pixels[p + 1] / 255; color[i + 2] = pixels[p + 2] / 255;
      } else {
        color[i] = color[i + 1] = color[i + 2] = 0.2 + 0.8 * nearness(raw, q[depthAt(u, v)]);
      }
      i += 3;
    }
  }
  const metric = isMetric(raw);
  aim(raw.units ?? "relative", sumZ / (i / 3));
  grid.visible = metric;
  grid.position.set(0, lowest, -GRID_M / 2); // the floor: the lowest point of the frame
  label.textContent = metric
    ? `metres: 1 m grid at the floor, horizontal field of view ${fovDegrees(camera)}°${estimated(camera)}`
    : raw.units === "scale"
      ? `depth up to scale (not metres); field of view ${fovDegrees(camera)}°${estimated(camera)}`
      : `relative shape (not metres): this model's depth has no scale; field of view ${fovDegrees(camera)}°${estimated(camera)}`;
  geometry.attributes.position.needsUpdate = true;
  geometry.attributes.color.needsUpdate = true;
  geometry.computeBoundingSphere();
  draw();
  stats.frames += 1;
  stats.times.add(performance.now() - started);
  container.dataset.frames = String(stats.frames);
}

// turn the view on: {ok: true}, or {ok: false, reason} when this browser has no WebGL
export function show() {
  if (!setUp()) return { ok: false, reason: unavailable };
  resize();
  return { ok: true };
}

export function showFrame(detail) {
  last = detail;
  if (setUp()) update(detail);
}

const estimated = (camera) => (typeof camera === "object" ? " (estimated)" : "");

// the camera the user chose (a field of view in degrees, or the model's estimate): the last frame
// is placed again with it; each new frame comes with its own (showFrame's fov)
export function setFieldOfView(deg) {
  hfovDeg = deg;
  if (last && renderer) update({ ...last, fov: deg });
}
