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
from tests.helpers import photo, video_frame, write_video

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

    rgb = video_frame(video, 2)
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


# --- the estimated camera (Depth Anything 3, Depth Pro): geometry without weights ---------------
ROOM = {"left": -2.0, "right": 2.0, "ceiling": -1.2, "floor": 1.5, "back": 5.0}  # metres, y down


def box_room(
    width: int, height: int, camera: np.ndarray, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """A camera at the origin looking down +z inside a box: each pixel's depth (z, times
    ``scale`` as a scaled model's depth is) and which face it sees (0 left, 1 right, 2 ceiling,
    3 floor, 4 back), rendered with the intrinsics ``camera``."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    dx = (u - camera[0, 2]) / camera[0, 0]
    dy = (v - camera[1, 2]) / camera[1, 1]
    with np.errstate(divide="ignore"):
        reach = np.stack(
            [
                np.where(dx < 0, ROOM["left"] / dx, np.inf),
                np.where(dx > 0, ROOM["right"] / dx, np.inf),
                np.where(dy < 0, ROOM["ceiling"] / dy, np.inf),
                np.where(dy > 0, ROOM["floor"] / dy, np.inf),
                np.full_like(dx, ROOM["back"]),
            ]
        )
    face = reach.argmin(axis=0)
    return reach.min(axis=0) * scale, face


def plane_normal(points: np.ndarray) -> np.ndarray:
    centred = points - points.mean(axis=0)
    return np.linalg.svd(centred, full_matrices=False)[2][-1]


def test_a_box_room_unprojected_with_its_intrinsics_keeps_right_angles_and_distances(tmp_path):
    """The served path's maths (pointcloud.distances and back_project, the page's geometry.js
    twin) with the camera a model estimated: a box room rendered with known, non-square,
    off-centre intrinsics comes back with right angles and its sizes within 1%; the PLY's JSON
    carries the intrinsics it was made with."""
    width, height = 320, 240
    camera = np.array([[250.0, 0, 166.0], [0, 244.0, 117.0], [0, 0, 1]])
    depth, face = box_room(width, height, camera)
    z = pointcloud.distances(depth.astype(np.float32), DepthKind.SCALED)
    points = pointcloud.back_project(z, {"fx": 250.0, "fy": 244.0, "cx": 166.0, "cy": 117.0})
    faces = [points[face == index] for index in range(5)]
    assert all(len(f) > 500 for f in faces)
    normals = [plane_normal(f) for f in faces]
    for a, b in ((0, 3), (1, 3), (4, 3), (4, 0), (2, 1)):  # walls against floor, back against a wall
        angle = math.degrees(math.acos(abs(float(normals[a] @ normals[b]))))
        assert abs(angle - 90) < 0.9, (a, b, angle)  # within 1%
    room_width = faces[1][:, 0].mean() - faces[0][:, 0].mean()
    room_height = faces[3][:, 1].mean() - faces[2][:, 1].mean()
    assert room_width == pytest.approx(4.0, rel=0.01) and room_height == pytest.approx(2.7, rel=0.01)
    assert faces[4][:, 2].mean() == pytest.approx(5.0, rel=0.01)
    # the wrong camera (the slider's default) bends it: the test can tell
    wrong = pointcloud.back_project(z, pointcloud.intrinsics(width, height, 40.0))
    wrong_width = wrong[face == 1][:, 0].mean() - wrong[face == 0][:, 0].mean()
    assert abs(wrong_width - 4.0) > 0.1 * 4.0
    rgb = np.zeros((height, width, 3), np.uint8)
    count = pointcloud.write_cloud(
        tmp_path / "room",
        depth.astype(np.float32),
        rgb,
        "depth_anything_3_small",
        DepthKind.SCALED,
        70.0,
        camera,
    )
    sidecar = json.loads((tmp_path / "room.json").read_text())
    assert count == width * height and sidecar["intrinsics_source"] == "estimated by the model"
    assert (sidecar["fx"], sidecar["fy"], sidecar["cx"], sidecar["cy"]) == (250.0, 244.0, 166.0, 117.0)
    assert sidecar["hfov_deg"] == pytest.approx(math.degrees(2 * math.atan(160 / 250)), abs=1e-3)
    assert sidecar["depth"] == "scaled" and "scale" in sidecar["units"]
    cloud = PlyData.read(str(tmp_path / "room.ply"))["vertex"]
    assert cloud["x"].max() == pytest.approx(2.0, rel=0.01)  # the right wall, from the file
