"""End-to-end: headless Chromium with a fake camera, the real page, bridge and Triton."""

from __future__ import annotations

import re
import shutil
import time

import pytest

from depthstream.contract import MODELS
from tests.conftest import ARTIFACTS

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--use-fake-device-for-media-stream",  # a synthetic camera (a moving test pattern)
    "--use-fake-ui-for-media-stream",  # allow the camera without a prompt
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # this machine has no internet: no background connections
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


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
    assert set(options) == set(MODELS)
    assert page.input_value("#model") == "depth_anything_v2_small"
    # the tiny test models run live on any machine: the page opens on the most accurate, says why,
    # and shows each model's speed measured where Triton serves it
    assert page.inner_text("#model-why").startswith(
        "Starts on depth_anything_v2_small: the most accurate model that runs live here (~"
    )
    labels = page.eval_on_selector_all("#model option", "os => os.map(o => [o.textContent, o.title])")
    for text, title in labels:
        assert re.search(r" — ~[\d.]+ fps", text), text
        assert re.match(r"the model alone: \d+ ms per 640×480 frame, measured on \d+ x ", title), title
    page.click("#start")
    started = time.monotonic()
    wait_for_frames(page, 5)
    elapsed = time.monotonic() - started
    assert page.get_attribute("#depth", "data-model") == "depth_anything_v2_small"
    record_property("fps_depth_anything", page.inner_text("#fps"))
    record_property("latency_ms_depth_anything", page.inner_text("#latency"))
    assert float(page.inner_text("#fps")) > 0
    assert elapsed < 60

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
