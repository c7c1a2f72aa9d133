"""Deployment files: everything that can be checked without a GPU or a container engine."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from bridge.metrics import BridgeMetrics
from depthstream import engines
from depthstream.contract import MODELS
from depthstream.model_config import parse
from export import flavours
from tests.helpers import TINY_SERVED, check_common, violations

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.31.0"
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = shutil.which(name, path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if path is None:
        pytest.fail(f"{name} is not installed (make setup installs it; .ci/run installs docker-compose)")
    return path


def render(overlay: str) -> str:
    """The overlay as the cluster would receive it (kubectl kustomize)."""
    return subprocess.run(
        [tool("kubectl"), "kustomize", str(DEPLOY / "k8s" / "overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


@pytest.mark.parametrize("path", sorted(DEPLOY.rglob("*.yaml")), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_parses(path):
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert documents


@pytest.mark.parametrize("overlay", ["gpu", "cpu", "cpu-intel"])
def test_overlay_renders_and_validates_against_kubernetes_schemas(overlay):
    rendered = render(overlay)
    resources = [d for d in yaml.safe_load_all(rendered) if d]
    kinds = sorted(r["kind"] for r in resources)
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "Deployment",
        "HorizontalPodAutoscaler",
        "Ingress",
        "NetworkPolicy",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "PodDisruptionBudget",
        "Service",
        "Service",
    ]
    for resource in resources:
        kubernetes_validate.validate(resource, K8S_VERSION, strict=True)
    triton = next(r for r in resources if r["kind"] == "Deployment" and r["metadata"]["name"] == "triton")
    container = triton["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert triton["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    gpus = container["resources"].get("limits", {}).get("nvidia.com/gpu")
    assert gpus == (1 if overlay == "gpu" else None)
    config_map = next(r for r in resources if r["kind"] == "ConfigMap")
    repositories = {"cpu": "model_repository_cpu", "cpu-intel": "model_repository_openvino", "gpu": "/models"}
    assert config_map["data"]["MODEL_REPOSITORY"].endswith(repositories[overlay])
    affinity = json.dumps(triton["spec"]["template"]["spec"].get("affinity", {}))
    # the openvino flavour is kept off AMX nodes: its backend cannot ask for FP32 there
    assert (
        '"cpu-cpuid.AMXBF16", "operator": "DoesNotExist"'
        in affinity.replace("feature.node.kubernetes.io/", "")
    ) == (overlay == "cpu-intel")


def test_invalid_manifest_is_caught():
    """The validator is not a rubber stamp: a typo in a field fails it."""
    bad = yaml.safe_load((DEPLOY / "k8s" / "base" / "bridge-service.yaml").read_text())
    bad["spec"]["ports"][0]["prot"] = 80
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_compose_file_is_valid():
    env = {**os.environ, "TRITON_ADMIN_KEY": "k" * 32, "BRIDGE_TOKEN": "t" * 32}
    result = subprocess.run(
        [tool("docker-compose"), "-f", str(DEPLOY / "compose.yaml"), "config"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert set(config["services"]) == {"triton", "bridge"}
    for service in config["services"].values():
        for port in service["ports"]:
            host_ip = port.split(":")[0] if isinstance(port, str) else port.get("host_ip")
            assert host_ip == "127.0.0.1", f"published beyond loopback: {port}"
    assert "/v2/health/ready" in " ".join(config["services"]["triton"]["healthcheck"]["test"])


def test_compose_needs_its_secrets():
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_ADMIN_KEY", "BRIDGE_TOKEN")}
    result = subprocess.run(
        [tool("docker-compose"), "-f", str(DEPLOY / "compose.yaml"), "config"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode != 0 and "TRITON_ADMIN_KEY" in result.stderr


def test_dockerfile_passes_hadolint():
    result = subprocess.run(
        [tool("hadolint"), str(DEPLOY / "bridge.Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_bridge_image_requirements_match_the_project_pins():
    def pins(path: Path) -> dict[str, str]:
        lines = [
            line.split("==") for line in path.read_text().splitlines() if "==" in line and line[0] != "#"
        ]
        return {name.split("[")[0]: version for name, version in lines}

    project = pins(ROOT / "requirements.txt")
    image = pins(DEPLOY / "requirements-bridge.txt")
    assert image and all(project[name] == version for name, version in image.items()), image


def test_dashboard_queries_name_real_metrics():
    dashboard = json.loads((DEPLOY / "grafana" / "depthstream-dashboard.json").read_text())
    bridge_metrics = {m.name for m in BridgeMetrics().registry.collect()}
    triton_metrics = {
        "nv_inference_queue_duration_us",
        "nv_inference_request_success",
        "nv_inference_compute_infer_duration_us",
        "nv_inference_pending_request_count",
        "nv_gpu_utilization",
    }
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for name in re.findall(r"\b((?:depthstream|nv)_[a-z_]+)", target["expr"]):
                base = re.sub(r"_(total|bucket|count|sum)$", "", name)
                assert base in bridge_metrics or name in triton_metrics, f"{panel['title']}: unknown {name}"


def test_openvino_flavour_conforms_and_runs_like_onnx_runtime(tiny_repository, tmp_path, capsys):
    """The openvino backend's flavour: configs Triton's protobuf parses, the contract's tensors
    with the batch in the model, FP32 IRs that give ONNX Runtime's depth; the twins left out,
    and said so."""
    import numpy as np
    import openvino as ov

    from depthstream import runtime
    from tests.helpers import photo

    written = flavours.write_openvino(tiny_repository, tmp_path)
    names = {path.parent.name for path in written}
    fp32 = {n for n in TINY_SERVED if MODELS[n].precision == "fp32"}
    assert names == {n for n in fp32 if MODELS[n].model_type != "depth_anything_3"}
    said = capsys.readouterr().out
    assert "depth_anything_v2_small_int8: left out of the openvino flavour (an INT8 twin" in said
    assert "depth_anything_3_small: left out of the openvino flavour (Depth Anything 3: OpenVINO" in said
    for path in written:
        config = parse(path.read_text())
        assert config.backend == "openvino" and config.max_batch_size == 0
        assert violations(config) == []
        assert config.default_model_filename == "model.xml"
        params = {k: v.string_value for k, v in config.parameters.items()}
        assert (params["NUM_STREAMS"], params["PERFORMANCE_HINT"]) == ("1", "LATENCY")
        assert "HINT_BF16" not in params
    name = "depth_anything_v2_small_252"
    model = ov.Core().read_model(str(tmp_path / name / "1" / "model.xml"))
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    batch = photo(320, 240)[None]
    session, _ = runtime.open_session(
        tiny_repository / name / "1" / "model.onnx", ["CPUExecutionProvider"], 1
    )
    expected = runtime.infer(session, batch)
    assert np.abs(compiled({0: batch})[0] - expected).max() <= 1e-4 * np.ptp(expected)


def test_a_bf16_twins_fp32_marks_do_not_survive_an_ir_so_the_openvino_flavour_leaves_it_out(
    tiny_repository, tmp_path
):
    """Why BF16 twins are not in the openvino flavour: the marks that keep their pre/post in
    FP32 are dropped when the model is saved as an IR."""
    import openvino as ov

    model = ov.Core().read_model(str(tiny_repository / "depth_anything_v2_small_252" / "1" / "model.onnx"))
    assert engines.keep_pre_and_post_in_fp32(model) > 0
    ov.save_model(model, str(tmp_path / "marked.xml"), compress_to_fp16=False)
    saved = ov.Core().read_model(str(tmp_path / "marked.xml"))
    assert not any(engines.KEEP_PRECISION in node.get_rt_info() for node in saved.get_ops())
    assert "BF16" in flavours.openvino_left_out(MODELS["depth_anything_v2_small_252_bf16"])


def test_cpu_flavour_conforms(tiny_repository, tmp_path):
    written = flavours.write_cpu(tiny_repository, tmp_path)
    assert written
    for path in written:
        config = parse(path.read_text())
        check_common(config, path.parent.name)
        assert config.backend == "onnxruntime" and not config.HasField("optimization")
        assert [g.kind for g in config.instance_group] == [config.instance_group[0].KIND_CPU]
        assert (path.parent / "1" / "model.onnx").stat().st_size > 0


def ingress_routes(path: str, rules: list[dict]) -> bool:
    """Whether an Ingress routes ``path`` (Kubernetes path semantics: Exact, or Prefix by
    whole path elements)."""
    for rule in rules:
        for entry in rule["http"]["paths"]:
            want = entry["path"]
            if entry["pathType"] == "Exact" and path == want:
                return True
            if entry["pathType"] == "Prefix":
                prefix = want.rstrip("/")
                if prefix == "" or path == prefix or path.startswith(prefix + "/"):
                    return True
    return False


@pytest.mark.parametrize("overlay", ["gpu", "cpu"])
def test_the_ingress_routes_the_page_and_never_metrics(overlay):
    rendered = render(overlay)
    ingress = next(d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Ingress")
    rules = ingress["spec"]["rules"]
    for path in ("/metrics", "/metrics/", "/healthz", "/readyz"):
        assert not ingress_routes(path, rules), path
    web = ROOT / "web"
    files = [f"/{p.relative_to(web).as_posix()}" for p in web.rglob("*") if p.is_file()]
    for path in ["/", "/ws", "/api/models", *files]:
        assert ingress_routes(path, rules), path
    assert not any("snippet" in key for key in ingress["metadata"].get("annotations", {}))


def test_the_printed_docker_run_line_has_composes_restrictions():
    line = subprocess.run(
        ["make", "-s", "triton", "TRITON_ADMIN_KEY=k3y"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.split()
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["triton"]["command"]
    expected = [flag.replace("${TRITON_ADMIN_KEY:?set TRITON_ADMIN_KEY}", "k3y") for flag in compose[1:]]
    server_flags = line[line.index("tritonserver") + 1 :]
    assert sorted(server_flags) == sorted(expected)
    assert any(part.endswith(":/models:ro") for part in line), "the models are mounted read-only"
    assert all(p.startswith("127.0.0.1:") for p in (line[i + 1] for i, x in enumerate(line) if x == "-p"))


def test_make_bridge_passes_the_variables_through(tmp_path):
    root = ROOT
    env = {**os.environ, "BRIDGE_TRITON_URL": "triton:9001", "BRIDGE_PORT": "9100"}
    printed = subprocess.run(
        ["make", "-s", "bridge", "PYTHON=echo"], cwd=root, env=env, check=True, capture_output=True, text=True
    ).stdout.split()
    assert printed[printed.index("--triton-url") + 1] == "triton:9001"
    assert printed[printed.index("--port") + 1] == "9100"


def test_a_failed_plan_build_leaves_no_model_directory(tmp_path):
    """`make plans` where Docker cannot build (no GPU): an error, and nothing half-built left."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "docker").write_text("#!/bin/sh\necho 'could not select device driver' >&2\nexit 125\n")
    (fake_bin / "docker").chmod(0o755)
    source = tmp_path / "repo" / "depth_anything_v2_small" / "1"
    source.mkdir(parents=True)
    (source / "model.onnx").write_bytes(b"not really a model")
    target = tmp_path / "plans"
    result = subprocess.run(
        ["bash", str(ROOT / "export" / "build_plans.sh")],
        env={
            **os.environ,
            "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}",
            "REPOSITORY": str(tmp_path / "repo"),
            "TARGET": str(target),
        },
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "failed" in result.stderr
    assert not (target / "depth_anything_v2_small").exists()


def rendered(overlay: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(render(overlay)) if d]


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def pods(resources: list[dict]) -> dict[str, dict]:
    """Each Deployment's pod template, by the Deployment's name."""
    return {r["metadata"]["name"]: r["spec"]["template"] for r in resources if r["kind"] == "Deployment"}


def port_number(template: dict, port) -> int:
    """A policy's port (a name or a number) on a pod: the container port it means."""
    for container in template["spec"]["containers"]:
        for declared in container.get("ports", []):
            if port in (declared.get("name"), declared["containerPort"]):
                return declared["containerPort"]
    raise AssertionError(f"no port {port!r} on the pod")


def allowed(resources: list[dict], target: str, port: int, source_pod: str | None, namespace: str) -> bool:
    """Whether the rendered NetworkPolicies let a pod (``source_pod``, a Deployment of ours, in our
    namespace) or any pod of ``namespace`` reach ``target``'s ``port``, as Kubernetes decides it:
    a pod selected by no policy takes everything; a selected one, what one of their rules allows."""
    templates = pods(resources)
    labels = templates[target]["metadata"]["labels"]
    policies = [
        r
        for r in resources
        if r["kind"] == "NetworkPolicy"
        and selects(r["spec"]["podSelector"], labels)
        and "Ingress" in r["spec"].get("policyTypes", ["Ingress"])
    ]
    if not policies:
        return True
    source_labels = templates[source_pod]["metadata"]["labels"] if source_pod else {}
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            ports = [port_number(templates[target], p["port"]) for p in rule.get("ports", [])]
            if ports and port not in ports:
                continue
            if not rule.get("from"):  # no peers listed: every source
                return True
            for peer in rule["from"]:
                if "namespaceSelector" in peer:
                    matched = selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": namespace})
                    matched = matched and (
                        "podSelector" not in peer or selects(peer["podSelector"], source_labels)
                    )
                else:  # a podSelector alone: pods of the policy's own namespace
                    matched = namespace == "depthstream" and selects(peer["podSelector"], source_labels)
                if matched:
                    return True
    return False


@pytest.mark.parametrize("overlay", ["gpu", "cpu"])
def test_network_policies_keep_tritons_ports_to_the_bridge_and_metrics_to_monitoring(overlay):
    resources = rendered(overlay)
    ours = "depthstream"
    # Triton: inference only from the bridge; metrics only from the monitoring namespace
    assert allowed(resources, "triton", 8001, "bridge", ours)
    assert not allowed(resources, "triton", 8001, None, ours), "any pod of the namespace reaches gRPC"
    assert not allowed(resources, "triton", 8000, "bridge", ours), "HTTP inference is open to the bridge"
    assert not allowed(resources, "triton", 8001, None, "monitoring")
    assert allowed(resources, "triton", 8002, None, "monitoring")
    assert not allowed(resources, "triton", 8002, "bridge", ours)
    # the bridge: only from the Ingress controller (and Prometheus for /metrics)
    assert allowed(resources, "bridge", 8080, None, "ingress-nginx")
    assert allowed(resources, "bridge", 8080, None, "monitoring")
    assert not allowed(resources, "bridge", 8080, None, ours)
    assert not allowed(resources, "bridge", 8080, None, "default")


@pytest.mark.parametrize("overlay", ["gpu", "cpu"])
def test_drains_take_one_pod_at_a_time_spread_over_nodes_and_let_work_finish(overlay):
    resources = rendered(overlay)
    templates = pods(resources)
    budgets = [r for r in resources if r["kind"] == "PodDisruptionBudget"]
    for name, template in templates.items():
        labels = template["metadata"]["labels"]
        (budget,) = [b for b in budgets if selects(b["spec"]["selector"], labels)]
        assert budget["spec"]["maxUnavailable"] == 1, name
        spread = template["spec"]["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in spread} >= {"kubernetes.io/hostname"}, name
        assert all(selects(c["labelSelector"], labels) for c in spread), name
        container = template["spec"]["containers"][0]
        pause = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
        grace = template["spec"]["terminationGracePeriodSeconds"]
        if name == "triton":  # Triton finishes in-flight requests within --exit-timeout-secs
            (flag,) = [a for a in container["args"] if a.startswith("--exit-timeout-secs=")]
            work = int(flag.split("=")[1])
        else:  # the bridge drains its streams, the last notice may wait on a slow reader, and
            # uvicorn then waits for its tasks (bridge/server.py)
            from bridge.server import uvicorn_config
            from bridge.settings import BridgeSettings

            bridge = BridgeSettings()
            work = (
                bridge.drain_timeout_s
                + bridge.send_timeout_s
                + uvicorn_config(bridge).timeout_graceful_shutdown
            )
        assert grace >= pause + work + 5, f"{name}: {grace} s of grace for {pause} s + {work} s of work"
