// Pinhole geometry for the 3D view, measuring and Save 3D: the page's half of
// depthstream/render/pointcloud.py (the direct client's --ply), the same formulas.
//
// The camera ("fov" below) is either the horizontal field of view the user sets, in degrees:
// square pixels, fx = fy = (width / 2) / tan(hfov / 2), the principal point exactly at the image
// centre, cx = (width - 1) / 2, cy = (height - 1) / 2; or the camera a model estimated (the depth
// header's "camera": fx, fy, cx, cy in pixels of the frame, with the frame's width), scaled to
// the grid it is applied to.
// A pixel (u, v) at depth z is (x, y, z) = ((u - cx) z / fx, (v - cy) z / fy, z) in the OpenCV
// camera frame (x right, y down, z forward). A metric model's z is its depth in metres (a scaled
// model's, Depth Anything 3's, its depth up to one unknown scale); a relative
// model's inverse depth t in [0, 1] of the frame's range becomes relative units,
// z = 1 / (1/FAR + t (1/NEAR - 1/FAR)): a shape, not a measurement.

// the Logitech C920, the most common USB webcam: 78 degrees diagonal, 70.4 horizontal at 16:9;
// laptop cameras are 60-75
export const DEFAULT_HFOV_DEG = 70;
export const RELATIVE_NEAR = 1, RELATIVE_FAR = 5;
const LEVELS = 65535;

export function intrinsics(width, height, fov) {
  if (isEstimate(fov)) {
    const s = width / fov.width; // the frame's pixels to this grid's
    return { fx: fov.fx * s, fy: fov.fy * s, cx: fov.cx * s, cy: fov.cy * s };
  }
  const focal = width / 2 / Math.tan((fov * Math.PI) / 360);
  return { fx: focal, fy: focal, cx: (width - 1) / 2, cy: (height - 1) / 2 };
}

const isEstimate = (fov) => typeof fov === "object" && fov !== null;

// the horizontal field of view, in degrees, of either kind of camera
export const fovDegrees = (fov) =>
  isEstimate(fov) ? Math.round(((2 * Math.atan(fov.width / (2 * fov.fx))) * 180 / Math.PI) * 10) / 10 : fov;

export const isMetric = (raw) => raw.units === "m";
// depth that grows with distance: metres, or depth up to scale ("scale")
export const isDistance = (raw) => raw.units === "m" || raw.units === "scale";

// a raw depth message's z at pixel index i: metres (metric), the model's units (scaled) or
// relative units
export function distanceAt(raw, q, i) {
  if (isDistance(raw)) return raw.min + q[i] * ((raw.max - raw.min) / LEVELS);
  const t = q[i] / LEVELS; // 1: the nearest point of this frame
  return 1 / (1 / RELATIVE_FAR + t * (1 / RELATIVE_NEAR - 1 / RELATIVE_FAR));
}

// 0 (far) to 1 (near) for a quantized value: relative depth grows nearer, metres farther
export const nearness = (raw, value) => (isDistance(raw) ? 1 - value / LEVELS : value / LEVELS);

export function backProject(u, v, z, camera) {
  return [((u - camera.cx) * z) / camera.fx, ((v - camera.cy) * z) / camera.fy, z];
}

export function pointAt(raw, q, u, v, fov) {
  const camera = intrinsics(raw.width, raw.height, fov);
  return backProject(u, v, distanceAt(raw, q, v * raw.width + u), camera);
}

export const distanceBetween = (a, b) => Math.hypot(a[0] - b[0], a[1] - b[1], a[2] - b[2]);

export const unitsLabel = (raw) => (isMetric(raw) ? "m" : raw.units === "scale" ? "scale units" : "relative units");

const UNITS = {
  metric: "m",
  scaled: "depth up to one unknown scale (the model's units, not metres)",
  relative: `relative (a shape: ${RELATIVE_NEAR} to ${RELATIVE_FAR}, not metres)`,
};
const kindOf = (raw) => (isMetric(raw) ? "metric" : raw.units === "scale" ? "scaled" : "relative");

// what a saved cloud's JSON says: the intrinsics it was back-projected with, and its units
export function cameraJson(header, fov, points) {
  const raw = header.raw;
  return {
    ...intrinsics(raw.width, raw.height, fov),
    width: raw.width, height: raw.height, hfov_deg: fovDegrees(fov), model: header.model,
    intrinsics_source: isEstimate(fov) ? "estimated by the model" : "stated field of view",
    depth: kindOf(raw),
    units: UNITS[kindOf(raw)],
    axes: "OpenCV camera: x right, y down, z forward",
    seq: header.seq, points,
    alignment: header.alignment ?? null, // aligned = scale * the model's depth + shift; null: as answered
  };
}

// every pixel as a binary little-endian PLY: float32 x, y, z and uchar red, green, blue
export function plyBlob(raw, q, rgba, fov) {
  const { width, height } = raw;
  const camera = intrinsics(width, height, fov);
  const count = width * height;
  const header = "ply\nformat binary_little_endian 1.0\ncomment depthstream point cloud, OpenCV camera frame\n"
    + `element vertex ${count}\nproperty float x\nproperty float y\nproperty float z\n`
    + "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n";
  const body = new DataView(new ArrayBuffer(count * 15));
  const pixels = rgba && rgba.width === width && rgba.height === height ? rgba.data : null;
  for (let v = 0, i = 0; v < height; v++) {
    for (let u = 0; u < width; u++, i++) {
      const [x, y, z] = backProject(u, v, distanceAt(raw, q, i), camera);
      const at = i * 15;
      body.setFloat32(at, x, true);
      body.setFloat32(at + 4, y, true);
      body.setFloat32(at + 8, z, true);
      const gray = Math.round(255 * nearness(raw, q[i]));
      body.setUint8(at + 12, pixels ? pixels[4 * i] : gray);
      body.setUint8(at + 13, pixels ? pixels[4 * i + 1] : gray);
      body.setUint8(at + 14, pixels ? pixels[4 * i + 2] : gray);
    }
  }
  return { blob: new Blob([header, body.buffer], { type: "application/octet-stream" }), count };
}
