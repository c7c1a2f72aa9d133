"""make demo's start-up lines, from the configs a real embedded Triton was started with."""

from __future__ import annotations

import pytest

from demo.__main__ import served_models, start_up_lines
from tests.servers import bridge_settings


def test_the_start_up_lines_say_where_to_open_it_and_what_is_served(triton):
    infos = served_models(triton)
    assert infos and all(info.ready and info.ms_per_frame and info.ms_per_frame > 0 for info in infos)
    assert all("threads" in info.measured_on for info in infos)
    lines = start_up_lines(bridge_settings(triton.settings.grpc_url), triton)
    assert lines[0].startswith("depthstream is live: open http://127.0.0.1:")
    assert f"Triton serves {len(infos)} models on gRPC {triton.settings.grpc_url}" in lines[1]
    assert lines[3].startswith("  the page opens on ") and "frames/s" in lines[3]
    # the tiny models are exported from a checkpoint directory: not the random-weights smoke mode
    assert "RANDOM WEIGHTS" not in "\n".join(lines) and lines[-1] == "  Ctrl-C stops both."


@pytest.mark.integration  # starts a tritonserver of its own
def test_models_exported_later_are_loaded_into_the_running_triton(tiny_repository, tmp_path):
    """make demo's first depth comes from the quickest model alone; what it exports afterwards
    is loaded into the same tritonserver (model control explicit, with the admin key only the
    demo holds), which keeps serving the first meanwhile."""
    import shutil

    import numpy as np
    import tritonclient.grpc as grpcclient

    from depthstream.request import depth_request
    from serving.triton import EmbeddedTriton, TritonStartError
    from tests.servers import triton_settings

    first, later = "depth_anything_v2_small_252", "midas_dpt_beit_base_384"
    repository = tmp_path / "model_repository"
    repository.mkdir()
    shutil.copytree(tiny_repository / first, repository / first)
    server = EmbeddedTriton(triton_settings(repository, tmp_path / "work", model_control="explicit"))
    with server:
        assert server.models == [first]
        assert server.add_models() == [], "nothing new exported yet"
        shutil.copytree(tiny_repository / later, repository / later)  # the export writes it
        assert server.add_models() == [later]
        client = grpcclient.InferenceServerClient(server.settings.grpc_url)
        rgb = np.zeros((1, 48, 64, 3), np.uint8)
        for name in (first, later):
            depth = client.infer(name, **depth_request(rgb)).as_numpy("DEPTH")
            assert depth.shape == (1, 48, 64)
        # without the admin key, Triton's model control refuses (the bridge never holds it)
        import urllib.error
        import urllib.request

        refused = urllib.request.Request(
            f"{server.settings.http_url}/v2/repository/models/{first}/unload", data=b"{}", method="POST"
        )
        try:
            urllib.request.urlopen(refused, timeout=10)
            raise AssertionError("Triton unloaded a model for a caller without the admin key")
        except urllib.error.HTTPError as exc:
            assert exc.code in (401, 403)
        client.close()
    locked = EmbeddedTriton(triton_settings(repository, tmp_path / "work2"))
    try:
        locked.add_models()
        raise AssertionError("a locked-down Triton took new models")
    except TritonStartError as exc:
        assert "explicit" in str(exc)


def test_the_demo_lists_what_the_rest_of_the_export_brings():
    from demo.__main__ import asked_models
    from export.__main__ import first_model

    everything = asked_models(["--model", "all", "--random-weights"])
    assert "depth_anything_v2_small_252" in everything and "midas_dpt_beit_base_384" in everything
    assert not any(name.endswith(("_int8", "_bf16")) for name in everything), "twins appear once kept"
    assert asked_models(["--model", "midas_dpt_beit_base_384"]) == {"midas_dpt_beit_base_384"}
    assert (
        first_model(["depth_anything_v2_small", "midas_dpt_beit_base_384"]) == "depth_anything_v2_small_252"
    )
    assert first_model(["depth_anything_v2_metric_indoor_small"]) == "depth_anything_v2_metric_indoor_small"
