// depthstream 3D view: the current frame as a point cloud colored by the camera image, orbit
// with the mouse (drag), zoom (wheel), pan (right drag). three.js r187, vendored (vendor/three/).
//
// main.js asks for the raw depth while the view is on and calls showFrame() for each frame with
// {raw: {width, height, min, max}, q: Uint16Array, rgba: ImageData|null}. Without WebGL, show()
// returns {ok: false, reason} and no renderer is tried again (not per frame either).
// Each update's time (points rebuilt + drawn) is measured and kept in window.depthstream3d.
import * as THREE from "three";
import { OrbitControls } from "three/addons/controls/OrbitControls.js";

const STEP = 2; // one point per 2x2 pixels: 76,800 points for 640x480
const FOV_DEG = 60; // the camera's assumed horizontal field of view
const NEAR_Z = 1, FAR_Z = 5; // relative inverse depth is mapped to distances in this range
const KEEP_TIMES = 120;

const container = document.getElementById("view3d");
const stats = { frames: 0, times: [], error: null };
window.depthstream3d = { stats, summary };

let renderer = null, unavailable = null, scene, camera, controls, geometry, points;
let gridWidth = 0, gridHeight = 0;

function summary() {
  const sorted = [...stats.times].sort((a, b) => a - b);
  const at = (p) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] : null);
  return { frames: stats.frames, points: gridWidth * gridHeight, p50_ms: at(0.5), p95_ms: at(0.95), max_ms: at(1), error: stats.error };
}

function setUp() {
  if (renderer) return true;
  if (unavailable) return false;
  try {
    renderer = new THREE.WebGLRenderer({ antialias: false });
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
  controls.target.set(0, 0, -(NEAR_Z + FAR_Z) / 2);
  controls.addEventListener("change", draw);
  controls.update();
  geometry = new THREE.BufferGeometry();
  points = new THREE.Points(geometry, new THREE.PointsMaterial({ size: 2, sizeAttenuation: false, vertexColors: true }));
  scene.add(points);
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

function allocate(width, height) {
  gridWidth = Math.ceil(width / STEP);
  gridHeight = Math.ceil(height / STEP);
  const count = gridWidth * gridHeight;
  geometry.setAttribute("position", new THREE.BufferAttribute(new Float32Array(count * 3), 3).setUsage(THREE.DynamicDrawUsage));
  geometry.setAttribute("color", new THREE.BufferAttribute(new Float32Array(count * 3), 3).setUsage(THREE.DynamicDrawUsage));
}

// pinhole back-projection: pixel (u, v) at distance z -> ((u - cx) z / f, -(v - cy) z / f, -z)
function update({ raw, q, rgba }) {
  const started = performance.now();
  const { width, height } = raw;
  if (Math.ceil(width / STEP) !== gridWidth || Math.ceil(height / STEP) !== gridHeight) allocate(width, height);
  const position = geometry.attributes.position.array;
  const color = geometry.attributes.color.array;
  const focal = width / 2 / Math.tan((FOV_DEG * Math.PI) / 360);
  const cx = width / 2, cy = height / 2;
  const pixels = rgba && rgba.width === width && rgba.height === height ? rgba.data : null;
  let i = 0;
  for (let v = 0; v < height; v += STEP) {
    for (let u = 0; u < width; u += STEP) {
      const near = q[v * width + u] / 65535; // 1: the nearest point of this frame
      const z = 1 / (1 / FAR_Z + near * (1 / NEAR_Z - 1 / FAR_Z));
      position[i] = ((u - cx) * z) / focal;
      position[i + 1] = (-(v - cy) * z) / focal;
      position[i + 2] = -z;
      if (pixels) {
        const p = 4 * (v * width + u);
        color[i] = pixels[p] / 255; color[i + 1] = pixels[p + 1] / 255; color[i + 2] = pixels[p + 2] / 255;
      } else {
        color[i] = color[i + 1] = color[i + 2] = 0.2 + 0.8 * near;
      }
      i += 3;
    }
  }
  geometry.attributes.position.needsUpdate = true;
  geometry.attributes.color.needsUpdate = true;
  geometry.computeBoundingSphere();
  draw();
  stats.frames += 1;
  stats.times.push(performance.now() - started);
  if (stats.times.length > KEEP_TIMES) stats.times.shift();
  container.dataset.frames = String(stats.frames);
}

// turn the view on: {ok: true}, or {ok: false, reason} when this browser has no WebGL
export function show() {
  if (!setUp()) return { ok: false, reason: unavailable };
  resize();
  return { ok: true };
}

export function showFrame(detail) {
  if (setUp()) update(detail);
}
