"""End-to-end: headless Chromium with a fake camera, the real page, bridge and Triton."""

from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import dataclass

import pytest

from depthstream.contract import MODELS
from tests.helpers import TINY_SERVED
from tests.servers import ARTIFACTS

pytestmark = pytest.mark.browser


@pytest.fixture
def page(browser, bridge, request):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(bridge.url + "/")
    yield page
    failed = getattr(request.node, "rep_call", None)
    if failed is None or failed.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"))
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def frames(page) -> int:
    return int(page.inner_text("#frames"))


def wait_for_frames(page, more_than: int, timeout_s: float = 60) -> int:
    page.wait_for_function(
        f"Number(document.getElementById('frames').textContent) > {more_than}", timeout=timeout_s * 1000
    )
    return frames(page)


def test_camera_to_depth_live_switch_model_and_stop(page, record_property):
    page.wait_for_selector("#model:not([disabled])")
    options = page.eval_on_selector_all("#model option", "os => os.map(o => o.value)")
    assert set(options) == TINY_SERVED
    assert page.input_value("#model") == "depth_anything_v2_small"
    # the page says why it opens on this model (here: the bridge's setting; the automatic choice
    # depends on this machine's speed, tests/test_default_model.py), and shows each model's speed
    # measured where Triton serves it
    assert page.inner_text("#model-why") == (
        "Starts on depth_anything_v2_small: set by BRIDGE_DEFAULT_MODEL / --default-model."
    )
    labels = page.eval_on_selector_all("#model option", "os => os.map(o => [o.textContent, o.title])")
    for text, title in labels:
        assert re.search(r" — ~[\d.]+ fps", text), text
        # the record, or, on a machine busier than when it was recorded, what live traffic shows
        recorded = re.match(r"the model alone: \d+ ms per 640×480 frame, measured on \d+ x ", title)
        live = re.match(r"observed on live traffic now: \d+ ms a frame \(recorded: \d+ ms on \d+ x ", title)
        assert recorded or live, title
    page.click("#start")
    started = time.monotonic()
    wait_for_frames(page, 5)
    elapsed = time.monotonic() - started
    assert page.get_attribute("#depth", "data-model") == "depth_anything_v2_small"
    record_property("fps_depth_anything", page.inner_text("#fps"))
    record_property("latency_ms_depth_anything", page.inner_text("#latency"))
    assert float(page.inner_text("#fps")) > 0
    assert elapsed < 60
    # the page's own share of a frame (docs/performance.md quotes it): capture and JPEG
    # encode of each camera frame, and drawing each answer
    own = page.evaluate(
        "({encode: window.depthstreamPage.median('encode'), draw: window.depthstreamPage.median('draw'),"
        " counted: window.depthstreamPage.timings.encode.times.length})"
    )
    assert own["counted"] >= 5 and 0 < own["encode"] < 1000 and 0 < own["draw"] < 1000, own
    (ARTIFACTS / "page-timings.json").write_text(json.dumps({"640x480 camera, headless Chromium": own}))
    record_property("page_encode_ms", own["encode"])
    record_property("page_draw_ms", own["draw"])

    # The depth canvas shows a real image of the camera's size, not a blank.
    size = page.eval_on_selector("#depth", "c => [c.width, c.height]")
    assert size == [640, 480]
    spread = page.eval_on_selector(
        "#depth",
        """c => {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let min = 255, max = 0;
        for (let i = 0; i < d.length; i += 4) { min = Math.min(min, d[i]); max = Math.max(max, d[i]); }
        return max - min; }""",
    )
    assert spread > 20

    page.select_option("#model", "midas_dpt_beit_base_384")
    page.wait_for_function(
        "document.getElementById('depth').dataset.model === 'midas_dpt_beit_base_384'", timeout=60_000
    )
    wait_for_frames(page, frames(page) + 3)
    record_property("fps_midas", page.inner_text("#fps"))
    record_property("latency_ms_midas", page.inner_text("#latency"))

    page.click("#stop")
    time.sleep(1.5)  # answers already in flight may still land
    stopped_at = frames(page)
    time.sleep(2.0)
    assert frames(page) == stopped_at, "frames kept arriving after Stop"
    assert page.inner_text("#status") == "stopped"
    assert page.is_hidden("#banner")


def green_share_of_lit(png: bytes) -> float:
    """Of the lit pixels, the share that is clearly green: Chromium's fake camera is a green test
    pattern, so a cloud colored by the camera is green, and one colored by depth alone is gray."""
    import cv2
    import numpy as np

    b, g, r = cv2.split(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR).astype(int))
    lit = (b + g + r) > 48
    green = (g > r + 40) & (g > b + 40)
    return float((green & lit).sum() / max(lit.sum(), 1))


def canvas_lit_fraction(png: bytes) -> float:
    """The share of a screenshot's pixels that are not (near) black."""
    import cv2
    import numpy as np

    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)
    return float((image > 16).mean())


@dataclass
class Answer:
    header: dict
    header_bytes: int  # the JSON's size on the wire
    binaries: list[bytes]

    @property
    def complete(self) -> bool:
        return len(self.binaries) == len(self.header["binary"])


def watch_answers(page) -> list[Answer]:
    """Every depth answer the page receives on its socket: the header and the binaries that
    followed it (register before the socket opens)."""
    answers: list[Answer] = []

    def on_frame(payload) -> None:
        if isinstance(payload, str):
            message = json.loads(payload)
            if message.get("type") == "depth":
                answers.append(Answer(message, len(payload.encode()), []))
        elif answers and not answers[-1].complete:
            answers[-1].binaries.append(payload)

    page.on("websocket", lambda ws: ws.on("framereceived", on_frame))
    return answers


def raw_depth_by_seq(answers: list[Answer]) -> dict[int, tuple[dict, bytes]]:
    """The raw depth of each answer that carried one, by seq: its header fields and its payload."""
    return {
        a.header["seq"]: (a.header["raw"], a.binaries[a.header["binary"].index("uint16le")])
        for a in answers
        if a.complete and "uint16le" in a.header["binary"]
    }


def test_3d_view_draws_the_stream_and_the_page_stays_responsive(page, record_property):
    """WebGL in headless Chromium (SwiftShader): the point cloud draws every frame, orbits with the
    mouse, and the page's main thread keeps up (the longest gap between animation frames)."""
    answers = watch_answers(page)
    requested: list[str] = []  # the browser's network log: three.js comes with the 3D view only
    page.on("request", lambda request: requested.append(request.url))
    page.reload()  # the socket again, now watched
    page.wait_for_selector("#model:not([disabled])")
    lazy = [url for url in requested if "view3d.js" in url or "/vendor/three/" in url]
    assert not lazy, f"loaded with the page, before the 3D view was asked for: {lazy}"
    page.select_option("#model", "depth_anything_v2_small_252")
    page.click("#toggle-3d")
    page.wait_for_selector("#depth", state="hidden")  # once the 3D view (and three.js) loaded
    assert any("/vendor/three/" in url for url in requested) and any("view3d.js" in url for url in requested)
    assert page.is_visible("#view3d") and page.is_hidden("#depth")
    # points take the camera's colors: the colormap and its colorbar do not apply
    assert page.is_hidden("#colorbar") and page.is_disabled("#colormap")
    page.click("#start")
    page.wait_for_function(
        "Number(document.getElementById('view3d').dataset.frames || 0) >= 10", timeout=90_000
    )
    # the main thread while the cloud updates: gaps between animation frames over 3 s
    gaps = page.evaluate(
        """() => new Promise((resolve) => {
            const gaps = []; let last = performance.now(); const end = last + 3000;
            function tick(now) { gaps.push(now - last); last = now; now < end ? requestAnimationFrame(tick) : resolve(gaps); }
            requestAnimationFrame(tick); })"""
    )
    summary = page.evaluate("window.depthstream3d.summary()")
    print(f"3D view: {summary}; longest animation-frame gap {max(gaps):.0f} ms over {len(gaps)} frames")
    record_property("view3d", summary)
    record_property("view3d_longest_gap_ms", round(max(gaps)))
    assert summary["error"] is None and summary["points"] == 320 * 240
    assert summary["frames"] >= 10 and summary["p50_ms"] > 0
    assert max(gaps) < 1000, "the page froze while the 3D view updated"
    # what the view costs on the wire: the depth of the points it draws, no JPEG
    points = [a for a in answers if a.header.get("raw", {}).get("step") == 2 and a.complete]
    per_frame = max(a.header_bytes + sum(map(len, a.binaries)) for a in points)
    print(f"3D view: {per_frame} bytes per 640x480 frame at most, over {len(points)} frames")
    record_property("view3d_bytes_per_frame", per_frame)
    assert len(points) >= 5 and all(a.header["binary"] == ["uint16le"] for a in points)
    assert per_frame <= 200_000

    ARTIFACTS.mkdir(exist_ok=True)  # the README's picture (docs/view3d.png) comes from here
    page.screenshot(path=str(ARTIFACTS / "view3d.png"))
    canvas = page.locator("#view3d canvas")
    before = canvas.screenshot()
    assert canvas_lit_fraction(before) > 0.2, "the point cloud does not draw"
    assert green_share_of_lit(before) > 0.8, "the points do not take the camera's colors"
    page.click("#stop")
    page.wait_for_timeout(1500)  # the last answers land
    still = canvas.screenshot()
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 150, box["y"] + box["height"] / 2 + 40, steps=10)
    page.mouse.up()
    assert canvas.screenshot() != still, "dragging does not orbit the view"


def test_raw_depth_saved_by_the_page_is_what_triton_returns_for_that_frame(page, triton, tmp_path):
    """Save raw depth writes a 16-bit PNG of the model's values: decoded with the numbers it
    carries, it equals a direct gRPC inference of the very JPEG the page sent for that frame."""
    import cv2
    import numpy as np
    import tritonclient.grpc as grpcclient
    from PIL import Image

    from bridge import images

    # every binary frame the page sends on its socket, in order: frame seq N is the N-th
    page.add_init_script(
        """const send = WebSocket.prototype.send; window.sentFrames = [];
        WebSocket.prototype.send = function (data) {
          if (typeof data !== "string") window.sentFrames.push(data);
          return send.call(this, data); };"""
    )
    page.reload()  # the page and its socket again, now watched
    page.wait_for_selector("#model:not([disabled])")
    page.select_option("#model", "depth_anything_v2_small_252")
    page.click("#start")
    wait_for_frames(page, 3)
    with page.expect_download(timeout=60_000) as saving:
        page.click("#save-raw")
    path = tmp_path / "depth16.png"
    saving.value.save_as(path)
    page.click("#stop")

    q = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    text = Image.open(path).text
    assert q.dtype == np.uint16 and q.shape == (480, 640)
    low, high, seq = (
        float(text["depthstream.min"]),
        float(text["depthstream.max"]),
        int(text["depthstream.seq"]),
    )
    assert (
        text["depthstream.model"] == "depth_anything_v2_small_252" and "65535" in text["depthstream.mapping"]
    )
    depth = low + q * ((high - low) / 65535)

    sent = page.evaluate(
        """async (seq) => { const bytes = new Uint8Array(await new Blob([window.sentFrames[seq]]).arrayBuffer());
           let text = ""; for (const b of bytes) text += String.fromCharCode(b); return btoa(text); }""",
        seq,
    )
    rgb = images.decode(base64.b64decode(sent), 1920 * 1080)  # the frame as the bridge decoded it
    client = grpcclient.InferenceServerClient(triton.settings.grpc_url)
    request = grpcclient.InferInput("IMAGE", [1, *rgb.shape], "UINT8")
    request.set_data_from_numpy(rgb[None])
    direct = client.infer("depth_anything_v2_small_252", [request]).as_numpy("DEPTH")[0]
    client.close()
    # steady depth (the default): the saved frame is Triton's answer aligned to the stream, and
    # its PNG says how; undone, it is that answer within half a 16-bit step
    alignment = json.loads(text["depthstream.alignment"])
    scale, shift = alignment["scale"], alignment["shift"]
    assert scale > 0
    assert (low, high) == pytest.approx(
        (scale * direct.min() + shift, scale * direct.max() + shift), rel=1e-5
    )
    undone = (depth - shift) / scale
    step = (direct.max() - direct.min()) / 65535
    assert np.abs(undone - direct).max() <= step / 2 * 1.001 + 1e-5 * np.abs(direct).max()


def test_record_saves_a_webm_of_the_depth_view_across_a_model_switch(page, tmp_path):
    """Record, then a model switch, then Stop recording: a WebM named after the model and the
    time, that OpenCV decodes, with at least one frame per second recorded."""
    import cv2

    page.wait_for_selector("#model:not([disabled])")
    page.select_option("#model", "depth_anything_v2_small_252")
    page.click("#start")
    wait_for_frames(page, 2)
    page.select_option("#record-what", "both")
    page.click("#record")
    assert page.inner_text("#record") == "Stop recording"
    started = time.monotonic()
    time.sleep(2)
    page.select_option("#model", "depth_anything_v2_small_364")  # the recording goes on
    wait_for_frames(page, frames(page) + 1)
    time.sleep(1)
    with page.expect_download(timeout=60_000) as saving:
        page.click("#record")
    seconds = time.monotonic() - started
    download = saving.value
    assert re.fullmatch(
        r"depthstream-depth_anything_v2_small_252-\d{8}-\d{6}\.webm", download.suggested_filename
    )
    path = tmp_path / download.suggested_filename
    download.save_as(path)
    assert page.inner_text("#record") == "Record"
    page.click("#stop")
    capture = cv2.VideoCapture(str(path))
    decoded, shape = 0, None
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        decoded, shape = decoded + 1, frame.shape
    assert decoded >= int(seconds), f"{decoded} frames decoded from {seconds:.1f} s recorded"
    assert shape is not None and shape[1] > shape[0], "camera and depth side by side"


def test_the_colorbar_follows_the_colormap(page):
    page.wait_for_selector("#model:not([disabled])")
    ramp = "document.getElementById('colorbar-ramp').style.background"
    inferno = page.evaluate(ramp)
    assert "linear-gradient" in inferno and page.inner_text("#colorbar-name") == "inferno"
    page.select_option("#colormap", "turbo")
    assert page.evaluate(ramp) != inferno and page.inner_text("#colorbar-name") == "turbo"
    assert page.inner_text(".colorbar").startswith("far")


METRIC = "depth_anything_v2_metric_indoor_small"


def raw_point(raw: dict, payload: bytes, u: int, v: int, camera: dict):

    from depthstream.render import pointcloud, raw_depth

    z = raw_depth.decode(payload, raw)
    return pointcloud.back_project(z, camera)[v, u], z


def click_pixel(page, x: float, y: float) -> None:
    """Click the depth view at a fraction (x, y) of the frame as drawn: object-fit: contain
    letterboxes a frame of another shape than the 4:3 box."""
    box = page.locator("#depth").bounding_box()
    width, height = page.eval_on_selector("#depth", "c => [c.width, c.height]")
    scale = min(box["width"] / width, box["height"] / height)
    left = box["x"] + (box["width"] - width * scale) / 2
    top = box["y"] + (box["height"] - height * scale) / 2
    page.mouse.click(left + x * width * scale, top + y * height * scale)


def save_cloud(page, tmp_path) -> tuple[dict, object]:
    """Press Save 3D: (its JSON, its PLY's vertices)."""
    from plyfile import PlyData

    saved = []

    def keep(download) -> None:
        saved.append(download)

    page.on("download", keep)
    try:
        page.click("#save-3d")
        deadline = time.monotonic() + 60
        while len(saved) < 2 and time.monotonic() < deadline:
            page.wait_for_timeout(200)
    finally:
        page.remove_listener("download", keep)
    assert len(saved) == 2, f"Save 3D downloaded {[d.suggested_filename for d in saved]}"
    files = {}
    for download in saved:
        files[download.suggested_filename.rsplit(".", 1)[1]] = path = tmp_path / download.suggested_filename
        download.save_as(path)
    return json.loads(files["json"].read_text()), PlyData.read(str(files["ply"]))["vertex"]


def test_a_metric_model_in_metres_measured_and_saved_as_a_point_cloud(page, tmp_path):
    """A metric model: grouped apart, its colorbar in metres, two clicked pixels' distance (on a
    16:9 frame, letterboxed in the view) equal to the 3D distance from the raw depth the page
    received, and Save 3D's PLY (read with plyfile) equal to the back-projection of that raw
    depth with the intrinsics in its JSON, in the 2D view and in the 3D view alike."""
    import numpy as np

    from depthstream.render import pointcloud

    answers = watch_answers(page)
    page.reload()  # the socket again, now watched
    page.wait_for_selector("#model:not([disabled])")
    metric = page.eval_on_selector_all(
        "#model optgroup[data-kind=metric] option", "os => os.map(o => o.value)"
    )
    assert set(metric) == {name for name in TINY_SERVED if MODELS[name].depth == "metric"}
    page.select_option("#model", METRIC)
    page.select_option("#resolution", "1280x720")
    page.fill("#hfov", "60")
    page.dispatch_event("#hfov", "input")
    page.click("#start")
    wait_for_frames(page, 3)
    width, height = page.eval_on_selector("#depth", "c => [c.width, c.height]")
    assert (width, height) == (1280, 720), "a 16:9 frame: letterboxed in the 4:3 view"
    assert page.get_attribute("#colorbar", "data-units") == "m"
    assert re.fullmatch(r"near [\d.]+ m", page.inner_text("#colorbar-near"))
    assert re.fullmatch(r"far [\d.]+ m", page.inner_text("#colorbar-far"))

    picks = "JSON.parse(document.getElementById('measure').dataset.picks || '[]').length"
    click_pixel(page, 0.25, 0.3)
    page.wait_for_function(f"{picks} === 1")
    click_pixel(page, 0.7, 0.8)
    page.wait_for_function(f"{picks} === 2")
    readout = page.eval_on_selector("#measure", "m => ({...m.dataset, text: m.textContent})")
    (u1, v1, seq1), (u2, v2, seq2) = json.loads(readout["picks"])
    assert readout["units"] == "m" and readout["hfov"] == "60" and " m" in readout["text"]
    assert abs(u1 - 0.25 * width) <= 2 and abs(v1 - 0.3 * height) <= 2  # the pixels clicked
    assert abs(u2 - 0.7 * width) <= 2 and abs(v2 - 0.8 * height) <= 2
    camera = pointcloud.intrinsics(width, height, 60.0)
    a, _ = raw_point(*raw_depth_by_seq(answers)[seq1], u1, v1, camera)
    b, _ = raw_point(*raw_depth_by_seq(answers)[seq2], u2, v2, camera)
    assert float(readout["distance"]) == pytest.approx(pointcloud.point_distance(a, b), rel=1e-9)

    about, vertices = save_cloud(page, tmp_path)
    assert about["units"] == "m" and about["hfov_deg"] == 60 and about["model"] == METRIC
    assert about["fx"] == pytest.approx(camera["fx"]) and (about["cx"], about["cy"]) == (639.5, 359.5)
    assert vertices.count == width * height == about["points"]
    _, z = raw_point(*raw_depth_by_seq(answers)[about["seq"]], 0, 0, camera)
    expected = pointcloud.back_project(z, about).reshape(-1, 3)
    got = np.stack([vertices["x"], vertices["y"], vertices["z"]], axis=-1)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)  # float32 in the file
    # coloured by the camera: Chromium's fake camera is a green test pattern
    lit = (vertices["red"].astype(int) + vertices["green"] + vertices["blue"]) > 48
    assert (vertices["green"][lit] > vertices["red"][lit]).mean() > 0.8

    # the 3D view streams a quarter of the depth: Save 3D there saves a newer frame, in full
    page.click("#toggle-3d")
    page.wait_for_function(
        "Number(document.getElementById('view3d').dataset.frames || 0) >= 3", timeout=60_000
    )
    assert page.is_disabled("#save"), "the 3D view has no colorized picture to save"
    again, vertices = save_cloud(page, tmp_path)
    assert again["seq"] > about["seq"] and vertices.count == width * height
    _, z = raw_point(*raw_depth_by_seq(answers)[again["seq"]], 0, 0, camera)
    np.testing.assert_allclose(vertices["z"], z.reshape(-1).astype(np.float32), rtol=1e-6)
    assert "metres" in page.inner_text("#view3d-label") and " m" in page.inner_text("#measure")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "metric-3d.png"))  # docs/metres.md's picture (docs/metric-3d.png)
    page.click("#stop")


CAMERA_MODEL = "depth_anything_3_small_252"


def test_a_camera_estimating_model_sets_the_field_of_view_and_the_slider_pins_it(page, tmp_path):
    """Depth Anything 3 streams with its camera: the page shows the estimated field of view, Save
    3D writes a PLY whose JSON holds the intrinsics the model estimated (those of its frame's
    header), and moving the slider pins a value that measuring and Save 3D then use."""
    import numpy as np

    answers = watch_answers(page)
    page.reload()
    page.wait_for_selector("#model:not([disabled])")
    scaled = page.eval_on_selector_all(
        "#model optgroup[data-kind=scaled] option", "os => os.map(o => o.value)"
    )
    assert CAMERA_MODEL in scaled
    page.select_option("#model", CAMERA_MODEL)
    page.click("#start")
    wait_for_frames(page, 3)
    page.wait_for_function("document.getElementById('hfov-value').textContent.includes('estimated')")
    shown = page.inner_text("#hfov-value")
    assert not page.is_hidden("#hfov-pin") and not page.is_checked("#hfov-pin")
    estimated = [a.header["camera"] for a in answers if a.header.get("camera")]
    assert estimated, "the depth headers carry the camera"
    assert float(shown.split("°")[0]) == pytest.approx(estimated[-1]["hfov_deg"], abs=2)

    about, vertices = save_cloud(page, tmp_path)
    header = next(a.header for a in answers if a.header["seq"] == about["seq"])
    assert about["intrinsics_source"] == "estimated by the model" and about["model"] == CAMERA_MODEL
    for key in ("fx", "fy", "cx", "cy"):
        assert about[key] == pytest.approx(header["camera"][key], rel=1e-6), key
    assert about["depth"] == "scaled"
    raw, payload = raw_depth_by_seq(answers)[about["seq"]]
    _, z = raw_point(raw, payload, 0, 0, about)
    from depthstream.render import pointcloud

    expected = pointcloud.back_project(z, about).reshape(-1, 3)
    got = np.stack([vertices["x"], vertices["y"], vertices["z"]], axis=-1)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)

    page.fill("#hfov", "50")  # the override
    page.dispatch_event("#hfov", "input")
    assert page.is_checked("#hfov-pin") and page.inner_text("#hfov-value") == "50° (pinned)"
    pinned, _ = save_cloud(page, tmp_path)
    assert pinned["intrinsics_source"] == "stated field of view" and pinned["hfov_deg"] == 50
    page.uncheck("#hfov-pin")  # back to the estimate
    page.wait_for_function("document.getElementById('hfov-value').textContent.includes('estimated')")
    page.click("#stop")
