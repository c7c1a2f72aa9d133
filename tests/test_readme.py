"""The README and docs/: the quick start comes first and stays short, every link leads somewhere,
the examples run as written against real servers, and every generated figure says where it
comes from."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2

from tests.helpers import photo

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
GENERATED = {  # docs page: the blocks make bench writes there
    "performance.md": ("bench", "breakdown", "worst-case", "flicker"),
    "protocol.md": ("raw-depth",),
}


def block(text: str, name: str) -> str:
    return text.split(f"<!-- {name}:begin -->")[1].split(f"<!-- {name}:end -->")[0]


def test_the_readme_is_a_quick_start_first():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200
    head = "\n".join(lines[:80])
    for command in ("make demo WEIGHTS=random", "make test", "apt-get install"):
        assert command in head, command
    # the apt line names what .ci/run installs for the tests
    apt = next(line for line in lines if "apt-get install" in line)
    ci = (ROOT / ".ci" / "run").read_text()
    wanted = re.search(r"--no-install-recommends ([^>]+)", ci).group(1).split()
    assert set(wanted) <= set(apt.split()), (wanted, apt)


def test_every_relative_link_in_the_readme_and_docs_leads_to_a_file():
    pages = [README, ROOT / "SECURITY.md", *DOCS.glob("*.md")]
    for page in pages:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.name} links to {target}"


def test_python_example_runs(triton, tmp_path, monkeypatch):
    example = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[0]
    cv2.imwrite(str(tmp_path / "photo.jpg"), cv2.cvtColor(photo(320, 200), cv2.COLOR_RGB2BGR))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(example.replace("127.0.0.1:8001", triton.settings.grpc_url), namespace)  # noqa: S102
    assert namespace["depth"].shape == (200, 320)
    namespace["client"].close()


def test_the_configuration_table_lists_every_bridge_setting():
    import dataclasses

    from bridge.settings import BridgeSettings

    text = (DOCS / "configuration.md").read_text()
    rows = set(re.findall(r"^\| `--([a-z-]+)` / `(BRIDGE_[A-Z_]+)` \|", text, re.M))
    expected = {
        (f.name.replace("_", "-"), BridgeSettings.variable(f.name))
        for f in dataclasses.fields(BridgeSettings)
    }
    assert rows == expected


def test_every_generated_table_names_its_machine_date_and_commit():
    for page, names in GENERATED.items():
        text = (DOCS / page).read_text()
        for name in names:
            generated = block(text, name)
            assert re.search(
                r"`make bench`.*? on \d+ cores \(.+?\), .+?, \d{4}-\d\d-\d\d, commit [0-9a-f]{7}", generated
            ), f"{page}: {name}"


def test_the_readmes_figures_are_the_last_benchs_own():
    """The README's headline, written by make bench from its results: the ratios against the
    original app's way from alternating rounds (versus.json), the stack's own time, flicker; they
    are what bench/results/ holds, with its machine, date and commit."""
    from bench import headline

    results = ROOT / "bench" / "results"
    load = lambda name: json.loads((results / name).read_text())  # noqa: E731
    expected = headline.lines(load("versus.json"), load("breakdown.json"), load("flicker.json"))
    assert block(README.read_text(), "headline").strip() == "\n".join(expected).strip()
    assert re.search(r"\d{4}-\d\d-\d\d, commit [0-9a-f]{7}", expected[0])


def test_the_raw_depth_example_reads_what_direct_grpc_returns(bridge, triton, tmp_path, monkeypatch):
    """docs/protocol.md's numpy-only reader, as written, against the real bridge and Triton: its
    depth equals a direct gRPC inference of the same image within half a quantization step (a
    stream's first frame starts its alignment: it is as the model answered it)."""
    import numpy as np
    import tritonclient.grpc as grpcclient

    reader = re.findall(r"```python\n(.*?)```", (DOCS / "protocol.md").read_text(), re.S)[0]
    cv2.imwrite(str(tmp_path / "photo.jpg"), cv2.cvtColor(photo(320, 200), cv2.COLOR_RGB2BGR))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(reader.replace("ws://127.0.0.1:8080/ws", bridge.ws_url), namespace)  # noqa: S102
    header, depth = namespace["header"], namespace["depth"]
    assert header["binary"] == ["uint16le"] and depth.shape == (200, 320)
    assert header["alignment"]["restarted"]

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


def test_the_configuration_page_lists_every_embedded_triton_setting():
    import dataclasses

    from serving.triton import TritonSettings

    text = (DOCS / "configuration.md").read_text().split("## The embedded Triton")[1]
    for field in dataclasses.fields(TritonSettings):
        variable = TritonSettings.variable(field.name)
        assert f"`{variable}`" in text, variable
        if field.metadata.get("flag", True):
            assert f"`--{field.name.replace('_', '-')}` / `{variable}`" in text, field.name
