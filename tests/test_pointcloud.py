"""Point clouds: the pinhole back-projection, the binary PLY (read back with plyfile) and the
intrinsics JSON; the direct client's --ply for a video frame against direct gRPC."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from plyfile import PlyData

from client import __main__ as direct_client
from depthstream.contract import DepthKind
from depthstream.render import pointcloud
from depthstream.request import depth_request
from tests.helpers import photo, write_video

METRIC = "depth_anything_v2_metric_indoor_small"


def test_intrinsics_from_the_horizontal_field_of_view():
    camera = pointcloud.intrinsics(640, 480, 90.0)
    assert camera["fx"] == pytest.approx(320.0) and camera["fy"] == camera["fx"]  # tan(45) = 1
    assert (camera["cx"], camera["cy"]) == (319.5, 239.5)  # the centre of the pixel grid, exactly
    with pytest.raises(ValueError, match="20 to 150"):
        pointcloud.intrinsics(640, 480, 180.0)


def test_back_projected_points_project_to_their_own_pixels_at_their_own_depth():
    rng = np.random.default_rng(0)
    z = rng.uniform(0.5, 9.0, (48, 64))
    camera = pointcloud.intrinsics(64, 48, 70.0)
    points = pointcloud.back_project(z, camera)
    u = camera["fx"] * points[..., 0] / points[..., 2] + camera["cx"]
    v = camera["fy"] * points[..., 1] / points[..., 2] + camera["cy"]
    rows, cols = np.mgrid[0:48, 0:64]
    np.testing.assert_allclose(u, cols, atol=1e-9)
    np.testing.assert_allclose(v, rows, atol=1e-9)
    np.testing.assert_allclose(points[..., 2], z)
    # the image's left and right edges at 1 m lie the field of view apart
    flat = pointcloud.back_project(np.ones((48, 64)), camera)
    half = math.degrees(math.atan2(flat[0, -1, 0] + 0.5 / camera["fx"], 1.0))
    assert half == pytest.approx(35.0, abs=0.01)


def test_relative_depth_becomes_the_views_relative_units_nearest_first():
    inverse = np.array([[0.0, 1.0], [2.0, 4.0]])  # larger is closer
    z = pointcloud.distances(inverse, DepthKind.RELATIVE)
    assert z[1, 1] == pytest.approx(pointcloud.RELATIVE_NEAR) and z[0, 0] == pytest.approx(
        pointcloud.RELATIVE_FAR
    )
    assert z[0, 1] > z[1, 0] > z[1, 1]
    metres = np.array([[0.5, 3.0]])
    np.testing.assert_array_equal(pointcloud.distances(metres, DepthKind.METRIC), metres)


def test_a_broken_pixel_does_not_flatten_a_relative_cloud():
    inverse = np.array([[0.0, 1.0], [2.0, np.inf]])
    z = pointcloud.distances(inverse, DepthKind.RELATIVE)
    assert z[1, 0] == pytest.approx(pointcloud.RELATIVE_NEAR) and z[0, 0] == pytest.approx(
        pointcloud.RELATIVE_FAR
    )


def test_a_ply_reads_back_with_plyfile_point_for_point(tmp_path):
    depth = np.linspace(1.0, 6.0, 40 * 30).reshape(30, 40)
    depth[3, 5] = np.nan  # a broken pixel is left out, not written as NaN
    rgb = photo(40, 30, "coffee")
    count = pointcloud.write_cloud(tmp_path / "frame", depth, rgb, METRIC, DepthKind.METRIC, 60.0, frame="x")
    assert count == 40 * 30 - 1
    camera = json.loads((tmp_path / "frame.json").read_text())
    assert (
        camera["units"] == "m"
        and camera["points"] == count
        and camera["axes"].startswith("OpenCV")
        and camera["frame"] == "x"
    )
    vertices = PlyData.read(str(tmp_path / "frame.ply"))["vertex"]
    assert vertices.count == count
    expected = pointcloud.back_project(depth, camera)
    keep = np.isfinite(depth)
    for axis, name in enumerate("xyz"):
        np.testing.assert_allclose(vertices[name], expected[..., axis][keep].astype(np.float32))
    np.testing.assert_array_equal(vertices["red"], rgb[..., 0][keep])
    np.testing.assert_array_equal(vertices["blue"], rgb[..., 2][keep])


def test_the_single_image_clients_cloud_is_named_after_the_photo_and_the_model(triton, tmp_path, capsys):
    import cv2

    photo_path = tmp_path / "living.room.jpg"  # dots in the name: kept
    cv2.imwrite(str(photo_path), cv2.cvtColor(photo(96, 64, "chelsea"), cv2.COLOR_RGB2BGR))
    clouds = tmp_path / "clouds"
    args = [str(photo_path), "--model", METRIC, "--url", triton.settings.grpc_url, "--ply", str(clouds)]
    assert direct_client.main(args) == 0
    stem = clouds / f"living.room.{METRIC}"
    assert sorted(p.name for p in clouds.iterdir()) == [f"{stem.name}.json", f"{stem.name}.ply"]
    assert f"wrote {stem}.ply and {stem}.json" in capsys.readouterr().out
    assert json.loads((clouds / f"{stem.name}.json").read_text())["frame"] == "living.room.jpg"


def test_the_clients_ply_for_a_video_frame_is_the_back_projection_of_direct_grpc(triton, tmp_path, capsys):
    video = tmp_path / "room.mp4"
    write_video(video, count=4)
    clouds = tmp_path / "clouds"
    url = triton.settings.grpc_url
    code = direct_client.main(
        [str(video), "--model", METRIC, "--url", url, "--ply", str(clouds), "--hfov", "65"]
    )
    assert code == 0 and "point clouds in" in capsys.readouterr().out
    assert sorted(p.name for p in clouds.glob("*.ply")) == [f"{i:06d}.ply" for i in range(4)]

    import cv2

    capture = cv2.VideoCapture(str(video))
    for _ in range(3):
        ok, bgr = capture.read()
    assert ok
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    with grpcclient.InferenceServerClient(url) as client:
        direct = client.infer(METRIC, **depth_request(rgb[None])).as_numpy("DEPTH")[0]
    camera = json.loads((clouds / "000002.json").read_text())
    assert camera["hfov_deg"] == 65 and camera["units"] == "m" and camera["model"] == METRIC
    assert camera["fx"] == pytest.approx(pointcloud.intrinsics(96, 64, 65.0)["fx"])
    vertices = PlyData.read(str(clouds / "000002.ply"))["vertex"]
    expected = pointcloud.back_project(direct.astype(np.float64), camera).reshape(-1, 3)
    got = np.stack([vertices["x"], vertices["y"], vertices["z"]], axis=-1)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)  # metres, float32 in the file
    np.testing.assert_array_equal(vertices["green"], rgb[..., 1].reshape(-1))
