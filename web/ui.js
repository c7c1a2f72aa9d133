// The page's elements, its banner and its status line: one place for what the user reads.
const $ = (id) => document.getElementById(id);

export const ui = {
  model: $("model"), colormap: $("colormap"), resolution: $("resolution"), file: $("file"),
  useCamera: $("use-camera"), start: $("start"), stop: $("stop"), save: $("save"),
  saveRaw: $("save-raw"), toggle3d: $("toggle-3d"), video: $("video"), still: $("still"),
  depth: $("depth"), view3d: $("view3d"), fps: $("fps"), latency: $("latency"), dropped: $("dropped"),
  frames: $("frames"), depthModel: $("depth-model"), banner: $("banner"), bannerText: $("banner-text"),
  bannerAction: $("banner-action"), bannerRandom: $("banner-random"), status: $("status"),
  sourceLabel: $("source-label"), modelWhy: $("model-why"), colorbar: $("colorbar"),
  colorbarRamp: $("colorbar-ramp"), colorbarName: $("colorbar-name"),
  colorbarNear: $("colorbar-near"), colorbarFar: $("colorbar-far"), save3d: $("save-3d"),
  hfov: $("hfov"), hfovValue: $("hfov-value"), hfovPin: $("hfov-pin"), view3dLabel: $("view3d-label"), measure: $("measure"),
  steady: $("steady"), record: $("record"), recordWhat: $("record-what"),
};

const TOKEN = new URLSearchParams(location.search).get("token"); // when the bridge requires one
export const withToken = (url) => (TOKEN ? `${url}${url.includes("?") ? "&" : "?"}token=${encodeURIComponent(TOKEN)}` : url);

// kind: what the banner is about, so that the event that ends it can clear it:
// "network" (the socket), "frame" (one frame's error), "model" (the chosen model), "refused" (a
// policy refusal: stays until the user acts), "stall", "webgl"
export function showBanner(text, kind = "frame", action = null) {
  ui.bannerText.textContent = text;
  ui.banner.dataset.kind = text ? kind : "";
  ui.banner.hidden = !text;
  ui.bannerAction.hidden = !action;
  ui.bannerAction.onclick = null;
  if (action) {
    ui.bannerAction.textContent = action.label;
    ui.bannerAction.onclick = () => { showBanner(""); action.run(); };
  }
}

export function clearBanner(...kinds) {
  if (kinds.includes(ui.banner.dataset.kind)) showBanner("");
}

export function setStatus(text) { ui.status.textContent = text; }
