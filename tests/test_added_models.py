"""Checkpoints added with ``export --checkpoint`` through the whole stack: a real tritonserver
serving them, direct gRPC against transformers.pipeline, the bridge finding them in what Triton
serves (its statistics, or its repository index with the admin key), a stream, and the client."""

from __future__ import annotations

import json

import cv2
import pytest
import tritonclient.grpc as grpcclient

from client import __main__ as direct_client
from depthstream.request import depth_request
from export.__main__ import main as export_main
from serving.triton import EmbeddedTriton
from tests.helpers import photo
from tests.servers import ARTIFACTS, RunningBridge, bridge_settings, triton_settings
from tests.test_any_checkpoint import MAX_ERROR, MIN_CORRELATION, SIZES, parity, pipeline_depth
from tests.tiny_checkpoints import save_tiny
from tests.wire import get, jpeg, next_answer, open_stream

pytestmark = pytest.mark.integration  # a real tritonserver and uvicorn

ADDED = {"depth_anything": "depth_anything", "glpn": "glpn"}  # family -> served name


TABLES: dict[str, str] = {}  # each family's export table, as printed


@pytest.fixture(scope="module")
def added(tmp_path_factory):
    """Two added checkpoints (one relative with its twin judged, one metric), served."""
    import contextlib
    import io

    root = tmp_path_factory.mktemp("added-stack")
    repository = root / "model_repository"
    checkpoints = {}
    for family in ADDED:
        checkpoints[family] = save_tiny(family, root / family)
        int8 = "auto" if family == "depth_anything" else "never"
        argv = ["--checkpoint", str(checkpoints[family]), "--output", str(repository), "--int8", int8]
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            code = export_main(argv)
        TABLES[family] = printed.getvalue()
        assert code == 0, TABLES[family]
    ARTIFACTS.mkdir(exist_ok=True)
    server = EmbeddedTriton(
        triton_settings(repository, root / "triton"), log_path=ARTIFACTS / "tritonserver-added.log"
    )
    server.start()
    yield repository, server, checkpoints
    server.stop()


def test_direct_grpc_serves_added_models_as_the_pipeline_computes_them(added):
    _, server, checkpoints = added
    client = grpcclient.InferenceServerClient(server.settings.grpc_url)
    try:
        for family, name in ADDED.items():
            for width, height in SIZES:
                rgb = photo(width, height)
                depth = client.infer(name, **depth_request(rgb[None])).as_numpy("DEPTH")[0]
                correlation, error = parity(depth, pipeline_depth(checkpoints[family], rgb))
                assert correlation >= MIN_CORRELATION and error <= MAX_ERROR, (name, width, height)
            config = client.get_model_config(name).config
            assert config.parameters["added"].string_value == "true"
    finally:
        client.close()


@pytest.mark.parametrize("with_index", [False, True])
def test_the_bridge_takes_its_catalog_from_what_triton_serves(added, with_index):
    _, server, _ = added
    key = server.settings.admin_key if with_index else ""
    with RunningBridge(bridge_settings(server.settings.grpc_url, triton_admin_key=key)) as bridge:
        status, body = get(f"{bridge.url}/api/models")
        assert status == 200 and isinstance(body, dict)
        models = {model["name"]: model for model in body["models"]}
        assert models["depth_anything"]["added"] and models["depth_anything"]["ready"]
        assert (
            models["glpn"]["depth"]["units"] == "m" and models["glpn"]["network_input"]["rule"] == "divisor"
        )
        assert models["depth_anything_56"]["network_input"]["size"] == 56
        # the curated reference models are listed as missing, not served
        assert not models["depth_anything_v2_small"]["ready"]
        # the live default: an added relative model, chosen by its measured speed
        assert body["default_model"].startswith("depth_anything") and "frames/s" in body["default_reason"]
        assert get(f"{bridge.url}/readyz")[0] == 200
        with open_stream(bridge.ws_url) as ws:
            ws.send(json.dumps({"type": "config", "model": "glpn", "output": "raw"}))
            ws.send(jpeg(320, 240))
            header = json.loads(ws.recv(timeout=30))
            while header["type"] != "depth":
                assert header["type"] in ("config", "dropped"), header
                header = json.loads(ws.recv(timeout=30))
            assert header["model"] == "glpn" and header["depth"] == "metric"
            ws.recv(timeout=30)  # its raw depth
            ws.send(json.dumps({"type": "config", "model": "depth_anything", "output": "color"}))
            ws.send(jpeg(320, 240))
            answer, image = next_answer(ws)
            for _ in range(5):  # a frame taken before the switch may still come back from glpn
                if answer.get("model") == "depth_anything":
                    break
                ws.send(jpeg(320, 240))
                answer, image = next_answer(ws)
            assert answer.get("model") == "depth_anything", answer
            assert image is not None and image.shape[:2] == (240, 320)


def test_the_client_writes_an_added_metric_models_depth_and_cloud(added, tmp_path, capsys):
    _, server, _ = added
    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), cv2.cvtColor(photo(200, 150), cv2.COLOR_RGB2BGR))
    argv = [str(image), "--model", "glpn", "--url", server.settings.grpc_url, "--ply", str(tmp_path / "ply")]
    assert direct_client.main(argv) == 0
    cloud = json.loads((tmp_path / "ply" / "photo.glpn.json").read_text())
    assert cloud["units"] == "m"
    assert direct_client.main([str(image), "--model", "not_served", "--url", server.settings.grpc_url]) == 2
    error = capsys.readouterr().err
    assert "not_served" in error and "python -m export --list" in error


def test_a_twin_of_an_added_model_was_judged(added):
    """Both INT8 candidates (dynamic, static QDQ) built and judged: at most one kept, faithful and
    faster here; each other one dropped with the reason."""
    repository, _, _ = added
    from depthstream.model_config import exported_models

    rows = [line for line in TABLES["depth_anything"].splitlines() if line.startswith("depth_anything_int8 ")]
    twin = repository / "depth_anything_int8"
    kept = [row for row in rows if "kept (" in row]
    if "depth_anything_int8" in exported_models(repository):  # kept: faithful and faster here
        manifest = json.loads((twin / "depthstream.json").read_text())
        assert len(rows) == 2 and len(kept) == 1
        assert f"kept ({manifest['method']}):" in kept[0] and manifest["correlation"] >= 0.999
        assert manifest["twin_ms"] <= manifest["fp32_ms"]
    else:  # built, judged and dropped, with the reason
        assert len(rows) == 2 and not kept and all("dropped:" in row for row in rows) and not twin.exists()


def test_the_page_lists_added_models_by_kind_and_streams_one(added, browser):
    _, server, _ = added
    with RunningBridge(bridge_settings(server.settings.grpc_url, default_model="glpn")) as bridge:
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            page.goto(bridge.url + "/")
            page.wait_for_selector("#model:not([disabled])")
            groups = page.eval_on_selector_all(
                "#model optgroup",
                "gs => gs.map(g => [g.dataset.kind, [...g.children].map(o => [o.value, o.textContent])])",
            )
            by_kind = {kind: dict(options) for kind, options in groups}
            assert "glpn" in by_kind["metric"] and "· added" in by_kind["metric"]["glpn"]
            assert "· added" in by_kind["relative"]["depth_anything"]
            assert page.input_value("#model") == "glpn"
            page.click("#start")
            page.wait_for_function(
                "Number(document.getElementById('frames').textContent) > 2", timeout=60_000
            )
            page.click("#stop")
        finally:
            context.close()
        assert errors == []
