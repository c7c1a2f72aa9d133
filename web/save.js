// Saving: the colorized PNG as shown, the raw depth as a 16-bit PNG of the model's values, and
// the frame as a coloured point cloud (PLY and its intrinsics as JSON, geometry.js).
import { ui } from "./ui.js";
import { cameraJson, plyBlob } from "./geometry.js";

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

export function download(blob, name) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

export function saveColorized() {
  ui.depth.toBlob((blob) => download(blob, `depth-${ui.depth.dataset.model || "frame"}-${ui.depth.dataset.colormap || "colormap"}-${Date.now()}.png`), "image/png");
}

export async function saveRaw({ header, q }) {
  const raw = header.raw;
  const blob = await png16(raw.width, raw.height, q, {
    "depthstream.model": header.model,
    "depthstream.seq": String(header.seq),
    "depthstream.min": String(raw.min),
    "depthstream.max": String(raw.max),
    "depthstream.units": raw.units ?? "relative",
    // how the stream aligned this frame (aligned = scale * model's depth + shift), or null
    "depthstream.alignment": JSON.stringify(header.alignment ?? null),
    "depthstream.mapping": raw.units === "m"
      ? "depth = min + q * (max - min) / 65535 (metres from the camera: larger is farther)"
      : raw.units === "scale"
        ? "depth = min + q * (max - min) / 65535 (depth up to one unknown scale: larger is farther)"
        : "depth = min + q * (max - min) / 65535 (relative inverse depth: larger is closer)",
  });
  download(blob, `depth16-${header.model}-${header.seq}.png`);
}

// the full-resolution frame: NAME.ply (every pixel) and NAME.json (fx, fy, cx, cy, size, units)
export function saveCloud({ header, q, rgba }, hfovDeg) {
  const { blob, count } = plyBlob(header.raw, q, rgba, hfovDeg);
  const name = `cloud-${header.model}-${header.seq}`;
  download(blob, `${name}.ply`);
  const camera = JSON.stringify(cameraJson(header, hfovDeg, count), null, 2);
  download(new Blob([camera, "\n"], { type: "application/json" }), `${name}.json`);
}
