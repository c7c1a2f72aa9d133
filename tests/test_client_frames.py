"""The direct client on many frames: a short video and a folder of images end to end, against
the real embedded Triton with the tiny models."""

from __future__ import annotations

import json

import cv2
import numpy as np
import tritonclient.grpc as grpcclient

from client import __main__ as direct_client
from client import frames
from depthstream.render import raw_depth
from tests.helpers import photo, write_video

MODEL = "depth_anything_v2_small_252"
FRAMES = 9  # not a multiple of the batch: the last batch is short


def read_video(path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return out
        out.append(frame)


def test_a_video_becomes_a_side_by_side_depth_video_with_raw_depth(triton, tmp_path, capsys):
    video = tmp_path / "walk.mp4"
    write_video(video)
    raw_dir = tmp_path / "raw"
    code = direct_client.main(
        [
            str(video),
            "--model",
            MODEL,
            "--url",
            triton.settings.grpc_url,
            "--side-by-side",
            "--raw-dir",
            str(raw_dir),
            "--per-frame",  # each frame exactly as Triton answers it (the steady video: below)
        ]
    )
    assert code == 0
    out = read_video(tmp_path / f"walk.mp4.{MODEL}.mp4")
    assert len(out) == FRAMES and out[0].shape == (64, 192, 3)  # input | depth
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert (
        line.startswith(f"{FRAMES} frames in ")
        and "frames/s" in line
        and "batches of 1, 2 in flight" in line  # the embedded flavour: one frame a request
    )

    # the raw depth of a frame is what Triton returns for that frame, within the 16-bit step
    assert sorted(p.stem for p in raw_dir.glob("*.png")) == [f"{i:06d}" for i in range(FRAMES)]
    capture = cv2.VideoCapture(str(video))
    for _ in range(5):
        ok, bgr = capture.read()
    assert ok
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    client = grpcclient.InferenceServerClient(triton.settings.grpc_url)
    request = grpcclient.InferInput("IMAGE", [1, *rgb.shape], "UINT8")
    request.set_data_from_numpy(rgb[None])
    direct = client.infer(MODEL, [request]).as_numpy("DEPTH")[0]
    client.close()
    q = cv2.imread(str(raw_dir / "000004.png"), cv2.IMREAD_UNCHANGED)
    assert q.dtype == np.uint16 and q.shape == (64, 96)
    depth = raw_depth.read_png16(raw_dir / "000004.png")
    low, high = float(direct.min()), float(direct.max())
    assert np.abs(depth - direct).max() <= (high - low) / 65535 / 2 * (1 + 1e-9)


def direct_depth(url: str, video, index: int) -> np.ndarray:
    capture = cv2.VideoCapture(str(video))
    for _ in range(index + 1):
        ok, bgr = capture.read()
    assert ok
    client = grpcclient.InferenceServerClient(url)
    request = grpcclient.InferInput("IMAGE", [1, *bgr.shape], "UINT8")
    request.set_data_from_numpy(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)[None])
    depth = client.infer(MODEL, [request]).as_numpy("DEPTH")[0]
    client.close()
    return depth


def test_a_steady_video_is_aligned_and_drawn_in_one_range_that_can_be_undone(triton, tmp_path):
    """The default for a video: every raw frame in the video's one range, each carrying the
    alignment that maps Triton's answer onto it; the model runs once a frame."""
    from PIL import Image

    video = tmp_path / "walk.mp4"
    write_video(video)
    raw_dir = tmp_path / "raw"
    url = triton.settings.grpc_url
    assert direct_client.main([str(video), "--model", MODEL, "--url", url, "--raw-dir", str(raw_dir)]) == 0
    assert len(read_video(tmp_path / f"walk.mp4.{MODEL}.mp4")) == FRAMES
    texts = [Image.open(raw_dir / f"{i:06d}.png").text for i in range(FRAMES)]
    assert len({(t["depthstream.min"], t["depthstream.max"]) for t in texts}) == 1, "one range"
    alignments = [json.loads(t["depthstream.alignment"]) for t in texts]
    assert alignments[0]["restarted"] and all(a["scale"] > 0 for a in alignments)
    # frame 4 as Triton answers it, aligned with what its PNG says: the PNG's depth, within the
    # spool's step and the video range's step (each half a 16-bit step of its range)
    direct = direct_depth(url, video, 4)
    aligned = alignments[4]["scale"] * direct + alignments[4]["shift"]
    low, high = float(texts[4]["depthstream.min"]), float(texts[4]["depthstream.max"])
    spool_step = (aligned.max() - aligned.min()) / 65535
    assert (
        np.abs(raw_depth.read_png16(raw_dir / "000004.png") - aligned).max()
        <= (spool_step + (high - low) / 65535) * (1 + 1e-6) + 1e-6
    )


def test_a_folder_of_images_of_several_sizes(triton, tmp_path, capsys):
    folder = tmp_path / "shots"
    folder.mkdir()
    for name, (w, h) in {"a": (80, 60), "b": (80, 60), "c": (50, 70)}.items():
        cv2.imwrite(str(folder / f"{name}.png"), cv2.cvtColor(photo(w, h, "coffee"), cv2.COLOR_RGB2BGR))
    (folder / "notes.txt").write_text("not an image")
    code = direct_client.main(
        [str(folder), "--model", MODEL, "--url", triton.settings.grpc_url, "--batch", "1"]
    )
    assert code == 0
    out = folder.with_name(f"shots.{MODEL}")
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png"]
    assert cv2.imread(str(out / "c.png")).shape == (70, 50, 3)
    assert "3 frames in" in capsys.readouterr().out


def test_batches_where_the_model_runs_them(triton, tmp_path, capsys):
    """Asked for, a batch is capped by the model's max_batch_size and really sent as one request."""
    video = tmp_path / "clip.mp4"
    write_video(video, count=6)
    args = [
        str(video),
        "--model",
        MODEL,
        "--url",
        triton.settings.grpc_url,
        "--batch",
        "16",
        "--in-flight",
        "1",
    ]
    before = requests_and_executions(triton, MODEL)
    assert direct_client.main(args) == 0
    after = requests_and_executions(triton, MODEL)
    assert "batches of 4, 1 in flight" in capsys.readouterr().out
    assert (after[0] - before[0], after[1] - before[1]) == (6, 2)  # 6 frames in 2 requests: 4 + 2


def requests_and_executions(triton, model: str) -> tuple[int, int]:
    client = grpcclient.InferenceServerClient(triton.settings.grpc_url)
    stats = client.get_inference_statistics(model).model_stats[0]
    client.close()
    return stats.inference_count, stats.execution_count


def test_batches_never_mix_sizes_and_respect_the_cap():
    items = [(str(i), np.zeros((2 + (i >= 5), 2, 3), np.uint8)) for i in range(8)]
    shapes = [[rgb.shape for _, rgb in batch] for batch in frames.batches(iter(items), 3)]
    assert [len(batch) for batch in shapes] == [3, 2, 3]
    assert all(len(set(batch)) == 1 for batch in shapes)


def test_bad_inputs_are_clear_errors(triton, tmp_path, capsys):
    missing = direct_client.main([str(tmp_path / "nowhere.mp4"), "--url", triton.settings.grpc_url])
    (tmp_path / "empty").mkdir()
    empty = direct_client.main([str(tmp_path / "empty"), "--url", triton.settings.grpc_url])
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    broken = direct_client.main([str(tmp_path / "broken.mp4"), "--url", triton.settings.grpc_url])
    err = capsys.readouterr().err
    assert (missing, empty, broken) == (2, 2, 2)
    assert "does not exist" in err and "holds no image" in err and "cannot open" in err
    assert direct_client.main([str(tmp_path / "empty"), "--in-flight", "0"]) == 2
    assert "--in-flight / CLIENT_IN_FLIGHT must be at least 1" in capsys.readouterr().err


def test_one_unreadable_image_is_a_clear_error_not_a_hang(triton, tmp_path, capsys):
    folder = tmp_path / "shots"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), cv2.cvtColor(photo(80, 60, "coffee"), cv2.COLOR_RGB2BGR))
    (folder / "b.png").write_bytes(b"not a png at all")
    code = direct_client.main([str(folder), "--model", MODEL, "--url", triton.settings.grpc_url])
    err = capsys.readouterr().err
    assert code == 2 and "cannot read" in err and "b.png" in err


def test_frames_held_stay_bounded_however_slow_the_writing(triton, tmp_path, monkeypatch):
    """Read but not yet written: never more than in_flight x batch frames (a slow disk, a long video)."""
    import asyncio
    import time

    video = tmp_path / "long.mp4"
    write_video(video, count=24)
    counts = {"read": 0, "written": 0, "most_held": 0}
    real_batches, real_write = frames.batches, frames.Writer.write

    def counted_batches(source, size):
        for batch in real_batches(source, size):
            counts["read"] += len(batch)
            counts["most_held"] = max(counts["most_held"], counts["read"] - counts["written"])
            yield batch

    def slow_write(self, name, rgb, depth, camera=None):
        time.sleep(0.05)
        real_write(self, name, rgb, depth, camera)
        counts["written"] += 1

    monkeypatch.setattr(frames, "batches", counted_batches)
    monkeypatch.setattr(frames.Writer, "write", slow_write)
    job = frames.Job(
        video, tmp_path / "out.mp4", MODEL, triton.settings.grpc_url, "inferno", batch=2, in_flight=2
    )
    outcome = asyncio.run(frames.run(job, quiet=True))
    assert outcome.frames == counts["written"] == 24
    assert counts["most_held"] <= 2 * 2
