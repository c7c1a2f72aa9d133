"""The README's Python example runs, as written, against a real Triton."""

from __future__ import annotations

import re
from pathlib import Path

import cv2

from tests.helpers import photo

README = Path(__file__).resolve().parent.parent / "README.md"


def test_python_example_runs(triton, tmp_path, monkeypatch):
    block = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[0]
    cv2.imwrite(str(tmp_path / "photo.jpg"), cv2.cvtColor(photo(320, 200), cv2.COLOR_RGB2BGR))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(block.replace("127.0.0.1:8001", triton.settings.grpc_url), namespace)  # noqa: S102
    assert namespace["depth"].shape == (200, 320)
    namespace["client"].close()


def test_the_configuration_table_lists_every_bridge_setting():
    import dataclasses

    from bridge.settings import BridgeSettings

    text = README.read_text()
    rows = set(re.findall(r"^\| `--([a-z-]+)` / `(BRIDGE_[A-Z_]+)` \|", text, re.M))
    expected = {
        (f.name.replace("_", "-"), BridgeSettings.variable(f.name))
        for f in dataclasses.fields(BridgeSettings)
    }
    assert rows == expected


def test_figures_quoted_in_prose_match_the_generated_tables():
    """The bench block is written by `make bench`; a figure quoted from it elsewhere must follow
    it, and every generated table says on what machine it was measured."""
    text = README.read_text()
    bench = text.split("<!-- bench:begin -->")[1].split("<!-- bench:end -->")[0]
    worst = text.split("<!-- worst-case:begin -->")[1].split("<!-- worst-case:end -->")[0]
    for block in (bench, worst):
        assert re.search(r"[Mm]easured by `make bench` on \d+ cores \(", block)
    fps, name = re.search(r"fastest Depth-Anything-V2 preset .*?\| ([\d.]+) fps \((\w+)\)", bench).groups()
    quoted = re.search(r"`(\w+)` reaches ([\d.]+) frames/s end to\s+end", text)
    assert quoted.groups() == (name, f"{float(fps):.1f}")
    # the rows the prose points to are in the generated table
    for approach in ("direct client, video: one at a time", "direct client, video: batches of"):
        assert f"| {approach}" in bench, approach


def test_the_raw_depth_example_reads_what_direct_grpc_returns(bridge, triton, tmp_path, monkeypatch):
    """The README's numpy-only reader, as written, against the real bridge and Triton: its depth
    equals a direct gRPC inference of the same image within half a quantization step."""
    import numpy as np
    import tritonclient.grpc as grpcclient

    block = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[1]
    cv2.imwrite(str(tmp_path / "photo.jpg"), cv2.cvtColor(photo(320, 200), cv2.COLOR_RGB2BGR))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(block.replace("ws://127.0.0.1:8080/ws", bridge.ws_url), namespace)  # noqa: S102
    header, depth = namespace["header"], namespace["depth"]
    assert header["binary"] == ["uint16le"] and depth.shape == (200, 320)

    rgb = cv2.imread(str(tmp_path / "photo.jpg"), cv2.IMREAD_COLOR_RGB)  # the bridge decodes it the same way
    client = grpcclient.InferenceServerClient(triton.settings.grpc_url)
    image = grpcclient.InferInput("IMAGE", [1, *rgb.shape], "UINT8")
    image.set_data_from_numpy(rgb[None])
    direct = client.infer(header["model"], [image]).as_numpy("DEPTH")[0]
    client.close()
    raw = header["raw"]
    assert (raw["min"], raw["max"]) == (float(direct.min()), float(direct.max()))
    step = (raw["max"] - raw["min"]) / 65535
    assert np.abs(depth - direct).max() <= step / 2 * (1 + 1e-9)
