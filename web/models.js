// The model and colormap selects, from the bridge's /api/models: each model's estimated speed,
// why the page opens on the one it does, and the models still being exported (make demo brings
// them in while the page streams).
import { ui, showBanner, withToken } from "./ui.js";
import * as view2d from "./view2d.js";

export const models = {}; // name -> what /api/models says of it

// "~16 fps": frames per second end to end, estimated from the model's speed on the serving machine
function speedLabel(model) {
  const fps = model.estimated_fps;
  if (!fps) return "";
  return ` — ~${fps >= 10 ? Math.round(fps) : fps.toFixed(1)} fps`;
}

// --- models and colormaps from the bridge ------------------------------------------------------
// the models by kind: relative depth (shape), metric depth (metres) and depth up to scale with
// the camera estimated (Depth Anything 3) answer different questions
const DEPTH_GROUPS = {
  relative: "Relative depth (shape: larger is closer)",
  metric: "Metric depth (metres)",
  scaled: "Depth up to scale, camera estimated",
};

function modelOption(m) {
  models[m.name] = m;
  const state = m.ready ? "" : m.coming ? " (coming: being exported)" : m.problem?.startsWith("served model does not match") ? " (refused: see its title)" : " (not ready)";
  // a checkpoint added with `export --checkpoint`, not one of the curated models
  const added = m.added ? " · added" : "";
  const option = new Option(`${m.title}${added}${speedLabel(m)}${m.random_weights ? " (random weights)" : ""}${state}`, m.name);
  option.disabled = !m.ready;
  if (!m.ready && m.problem) option.title = m.problem;
  if (m.recorded_ms) option.title = `observed on live traffic now: ${Math.round(m.ms_per_frame)} ms a frame (recorded: ${Math.round(m.recorded_ms)} ms on ${m.measured_on})`;
  else if (m.ms_per_frame) option.title = `the model alone: ${Math.round(m.ms_per_frame)} ms per 640×480 frame, measured on ${m.measured_on}`;
  return option;
}

function modelGroups(models) {
  return Object.entries(DEPTH_GROUPS).map(([kind, label]) => {
    const group = document.createElement("optgroup");
    group.label = label;
    group.dataset.kind = kind;
    group.append(...models.filter((m) => (m.depth?.kind ?? "relative") === kind).map(modelOption));
    return group;
  }).filter((group) => group.children.length > 0);
}

// "ok", "retry" (server unreachable or no model ready), or "refused" (needs the user: a token)
export async function loadModels(retry) {
  let response;
  try {
    response = await fetch(withToken("api/models"));
  } catch (err) {
    return "retry";
  }
  if (response.status === 401) {
    const body = await response.json().catch(() => ({}));
    const message = body.message ?? "an access token is required";
    showBanner(`${message.charAt(0).toUpperCase()}${message.slice(1)}: open the page as …/?token=YOUR_TOKEN`, "refused", { label: "Try again", run: retry });
    return "refused";
  }
  if (!response.ok) return "retry";
  const info = await response.json();
  ui.model.replaceChildren(...modelGroups(info.models));
  ui.modelWhy.textContent = info.default_reason ? `Starts on ${info.default_reason}` : "";
  const firstReady = info.models.find((m) => m.ready);
  ui.model.value = models[info.default_model]?.ready ? info.default_model : (firstReady?.name ?? info.default_model);
  ui.model.disabled = false;
  ui.colormap.replaceChildren(...info.colormaps.map((c) => new Option(c, c)));
  ui.colormap.value = info.default_colormap;
  view2d.setColormapStops(info.colormap_stops);
  view2d.showColorbar();
  updateRandomBanner();
  followComing(info);
  return firstReady ? "ok" : "retry";
}

// models still being exported (make demo serves the first ones at once): the list is read again
// until they are all in, keeping the user's choice
const COMING_POLL_MS = 10000;
function followComing(info) {
  const coming = info.models.filter((m) => m.coming).length;
  if (coming === 0) return;
  ui.modelWhy.textContent += ` ${coming} more model${coming > 1 ? "s are" : " is"} being exported and will appear here.`;
  setTimeout(refreshModels, COMING_POLL_MS);
}

async function refreshModels() {
  const response = await fetch(withToken("api/models")).catch(() => null);
  if (!response?.ok) {
    setTimeout(refreshModels, COMING_POLL_MS);
    return;
  }
  const info = await response.json();
  const chosen = ui.model.value;
  ui.model.replaceChildren(...modelGroups(info.models));
  ui.model.value = models[chosen]?.ready ? chosen : ui.model.value;
  ui.modelWhy.textContent = info.default_reason ? `Starts on ${info.default_reason}` : "";
  followComing(info);
}

export function updateRandomBanner(flag) {
  ui.bannerRandom.hidden = !(flag ?? Boolean(models[ui.model.value]?.random_weights));
}
