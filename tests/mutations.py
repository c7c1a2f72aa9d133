"""``make mutate``: how strong is the fast suite? Hand-made mutations of the bridge, the shared
contract and export, each a plausible bug (most on an error path); every one must make at
least one fast test fail. Each runs on a scratch copy of the tree, never on the checkout.

    .venv/bin/python -m tests.mutations [--tests tests/test_x.py ...] [--only NAME]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COPIED = (
    *(
        ".ci",
        "bench",
        "bridge",
        "client",
        "demo",
        "depthstream",
        "deploy",
        "docs",
        "export",
        "serving",
        "web",
        "tests",
    ),
    *("pyproject.toml", "Makefile", "README.md", "SECURITY.md", "requirements.txt", "requirements-dev.txt"),
)
TEST_TIMEOUT_S = 60  # one test hanging past this fails (pytest-timeout): a hang is a test failure
# The fast suite, chosen by marker (tests/conftest.py assigns them from the fixtures a test uses):
# in-process, no real server (integration) and no tiny-model export (export).
FAST_SELECTION = "not integration and not export"


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    old: str
    new: str


MUTATIONS = [
    # any transformers checkpoint (issue: the repository is the catalog)
    Mutation(
        "Pillow's bicubic with OpenCV's coefficient",
        "export/pil_resize.py",
        "PIL_CUBIC_A = -0.5",
        "PIL_CUBIC_A = -0.75",
    ),
    Mutation(
        "the closest rule takes the larger scale",
        "export/graph.py",
        "scale = torch.where(gap[1:2] < gap[0:1], scales[1:2], scales[0:1])",
        "scale = torch.max(scales).reshape(1)",
    ),
    Mutation(
        "a model that failed to load is listed without Triton's reason",
        "bridge/triton.py",
        'if model.state == "UNAVAILABLE" and model.reason not in ("", "unloaded")',
        "if False",
    ),
    Mutation(
        "hello reads the spec of a default model not read yet",
        "bridge/choices.py",
        '"depth": spec_of(self.model).depth_meaning if known(self.model) else None,',
        '"depth": spec_of(self.model).depth_meaning,',
    ),
    # frames through shared memory (issue: the stack's own cost)
    Mutation(
        "an abandoned request's region goes back to the pool",
        "bridge/triton.py",
        """            if region is not None and self.regions is not None:
                self.regions.retire(region)""",
        """            if region is not None and self.regions is not None:
                self.regions.release(region)""",
    ),
    Mutation(
        "the depth is read as a view of the region",
        "bridge/shared_memory.py",
        "return view[0].copy()",
        "return view[0]",
    ),
    Mutation(
        "a region Triton forgot fails the frame",
        "bridge/triton.py",
        'if region is not None and SHARED_MEMORY_MISSING in (exc.message() or "").lower():',
        "if False:",
    ),
    Mutation(
        "a retired region is given up when Triton says it is in use",
        "bridge/shared_memory.py",
        'if "in use" not in message:',
        "if True:",
    ),
    Mutation(
        "shared memory offered to a Triton on another host",
        "bridge/settings.py",
        "return ipaddress.ip_address(host).is_loopback",
        "return True",
    ),
    Mutation(
        "the answer being drawn is forgotten by a drain",
        "bridge/session.py",
        """        task = self.answering
        if task is not None:""",
        """        task, self.answering = self.answering, None
        if task is not None:""",
    ),
    Mutation(
        "a frame's drawing waits for nothing (answers out of order)",
        "bridge/session.py",
        """        await self.finish_answering()
        self.answering = asyncio.create_task(""",
        """        self.answering = asyncio.create_task(""",
    ),
    Mutation(
        "a Triton that refused a region is asked again every frame",
        "bridge/shared_memory.py",
        "if self.refused is not None and time.monotonic() - self.refused_at < REFUSED_RETRY_S:",
        "if False:",
    ),
    Mutation(
        "a Triton that refused a region is never asked again",
        "bridge/shared_memory.py",
        "if self.refused is not None and time.monotonic() - self.refused_at < REFUSED_RETRY_S:",
        "if self.refused is not None:",
    ),
    Mutation(
        "a released region keeps the frame",
        "bridge/shared_memory.py",
        "        region.clear()\n",
        "",
    ),
    Mutation(
        "Triton knows a region by its /dev/shm name",
        "bridge/shared_memory.py",
        'self.name = f"{key}-{secrets.token_hex(16)}"',
        "self.name = key",
    ),
    Mutation(
        "abandoned requests pin regions without a ceiling",
        "bridge/shared_memory.py",
        "elif len(self.retiring) >= MAX_RETIRING:",
        "elif False:",
    ),
    # depth in metres: colors, raw depth, the 3D view's points, the automatic default
    Mutation(
        "metres drawn far bright",
        "depthstream/render/colorize.py",
        "return cv2.bitwise_not(gray, dst=gray) if kind.is_distance else gray",
        "return gray",
    ),
    Mutation(
        "colorize folds back below its range",
        "depthstream/render/colorize.py",
        "depth = cv2.max(depth, float(low))",
        "depth = depth",
    ),
    Mutation(
        "a broken metric pixel sent as the nearest",
        "depthstream/render/raw_depth.py",
        "far = high if kind.is_distance else low",
        "far = low",
    ),
    Mutation(
        "points not subsampled",
        "bridge/rendering.py",
        'step = POINTS_STEP if request.output == "points" else 1',
        "step = 1",
    ),
    Mutation(
        "a metric model as the automatic default",
        "bridge/default_model.py",
        "relative = [info for info in models if info.ready and spec_of(info.name).depth is DepthKind.RELATIVE]",
        "relative = [info for info in models if info.ready]",
    ),
    # Triton's answers and the codes the client hears
    Mutation(
        "queue full is not busy",
        "bridge/triton.py",
        'if "exceeds maximum queue size" in text or "timeout expired" in text:',
        "if False:",
    ),
    Mutation(
        "RESOURCE_EXHAUSTED is not busy",
        "bridge/triton.py",
        'if status == "RESOURCE_EXHAUSTED":',
        'if status == "RESOURCE_EXHAUSTED_":',
    ),
    Mutation(
        "deadline is not timeout",
        "bridge/triton.py",
        'if status == "DEADLINE_EXCEEDED":',
        'if status == "DEADLINE":',
    ),
    Mutation(
        "NOT_FOUND is not model_not_ready",
        "bridge/triton.py",
        'if status == "NOT_FOUND":',
        'if status == "NOTFOUND":',
    ),
    Mutation(
        "mismatch reported as not ready",
        "bridge/triton.py",
        'raise ModelMismatch(f"{name}: {info.problem}")',
        'raise ModelNotReady(f"{name}: {info.problem}")',
    ),
    Mutation(
        "wrongly shaped depth accepted",
        "bridge/triton.py",
        "if shape != (1, *rgb.shape[:2]):",
        "if shape is None:",
    ),
    Mutation(
        "Triton down not remembered",
        "bridge/triton.py",
        "                self.mark_down()",
        "                pass",
    ),
    Mutation(
        "in-flight bound ignores the model's instances",
        "bridge/triton.py",
        "self.limit.set_capacity(min(self._capacities.values()) * await self.servers_behind())",
        "self.limit.set_capacity(8)",
    ),
    Mutation(
        "frames sent past their deadline",
        "bridge/triton.py",
        "return time.perf_counter() + expected <= deadline",
        "return True",
    ),
    # the app's gates
    Mutation(
        "connection limit off",
        "bridge/app.py",
        "if len(state.sessions) >= settings.max_connections:",
        "if False:",
    ),
    Mutation(
        "new connections accepted while draining",
        "bridge/app.py",
        "    if state.draining:\n        return ErrorCode.SHUTTING_DOWN",
        "    if False:\n        return ErrorCode.SHUTTING_DOWN",
    ),
    Mutation("origin check off", "bridge/app.py", "if not origin_allowed(websocket, settings):", "if False:"),
    Mutation("token check off", "bridge/app.py", "if not token_ok(websocket, settings):", "if False:"),
    Mutation(
        "ready while draining",
        "bridge/app.py",
        '{"status": "not ready", "reason": "shutting down"}, status_code=503',
        '{"status": "ready"}, status_code=200',
    ),
    Mutation(
        "api ignores the default colormap",
        "bridge/app.py",
        '"default_colormap": state.settings.default_colormap,',
        '"default_colormap": "inferno",',
    ),
    Mutation(
        "model list never cached",
        "bridge/catalog.py",
        "if time.monotonic() - self._read_at > self.ttl_s:",
        "if True:",
    ),
    # the session
    Mutation("rate limit off", "bridge/intake.py", "if not self.limiter.allow():", "if False:"),
    Mutation(
        "expired frames not counted",
        "bridge/session.py",
        "            self.outbox.count_dropped(frame.seq, DropReason.EXPIRED)\n",
        "            pass\n",
    ),
    Mutation(
        "NaN depth sent as an image",
        "bridge/rendering.py",
        "except NoFiniteDepth:  # colorize and the raw encoding both refuse an all-NaN/Inf depth\n"
        '            raise BadOutput("the model returned no finite depth for this frame") from None',
        "except NoFiniteDepth:\n            return [b''], None",
    ),
    Mutation(
        "replaced frames not counted",
        "bridge/intake.py",
        "        if self.pending is not None:\n            self.outbox.count_dropped(self.pending.seq, DropReason.REPLACED)\n        self.pending = Frame(",
        "        self.pending = Frame(",
    ),
    Mutation(
        "frames taken while the server drains",
        "bridge/intake.py",
        "        if self.draining:\n",
        "        if False:\n",
    ),
    Mutation(
        "steady depth fits grid points without depth as if they had it",
        "depthstream/render/steady.py",
        "        if finite.all() and np.isfinite(self.reference).all():  # the usual case: no copies",
        "        if finite.all():  # the usual case: no copies",
    ),
    # the stream client's books (client/stream.py)
    Mutation(
        "a dropped notice's frames not counted by the client",
        "client/stream.py",
        "self.dropped += outcome.count()",
        "self.dropped += 1",
    ),
    Mutation(
        "frames in transit at a close forgotten by the client",
        "client/stream.py",
        "        self.in_transit += self.pending\n",
        "        pass\n",
    ),
    # turns at Triton
    Mutation(
        "no bound on requests in flight",
        "bridge/admission.py",
        "if self.in_flight < self.capacity and not self._waiters:",
        "if not self._waiters:",
    ),
    Mutation(
        "a cancelled waiter keeps its place", "bridge/admission.py", "self._waiters.remove(turn)", "pass"
    ),
    # frames in
    Mutation(
        "no side limit",
        "bridge/images.py",
        "if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE:",
        "if False:",
    ),
    Mutation("no pixel limit", "bridge/images.py", "if width * height > max_pixels:", "if False:"),
    Mutation("unknown control fields accepted", "bridge/protocol.py", "    if unknown:\n", "    if False:\n"),
    # settings
    Mutation(
        "max_pixels above the contract accepted",
        "bridge/settings.py",
        "1 <= self.max_pixels <= MAX_IMAGE_PIXELS",
        "1 <= self.max_pixels",
    ),
    Mutation(  # found by make chaos: a start-up error was taken for the answer to a config
        "a config's refusal not marked as its answer",
        "bridge/protocol.py",
        '        body["reply_to"] = str(MessageType.CONFIG)',
        "        pass",
    ),
    Mutation(  # found by make chaos: a reload failed a stream's frames for as long as it took
        "a stream left on an endpoint whose model is gone",
        "bridge/session.py",
        "        if isinstance(exc, TritonUnavailable | ModelNotReady):",
        "        if isinstance(exc, TritonUnavailable):",
    ),
    Mutation(  # the seams: a drop told to the client but missing from its stream's books
        "a dropped frame missing from the stream's accounts",
        "bridge/outbox.py",
        "        self.accounts.dropped += 1\n",
        "",
    ),
    Mutation(  # the seams: a frame received but not in the bridge's counter
        "a received frame not counted",
        "bridge/intake.py",
        "        self.metrics.frames_in.inc()\n",
        "",
    ),
    Mutation(  # the seams: the error family's code for an unusable output
        "an unusable output mapped to the wrong code",
        "bridge/errors.py",
        "    code = ErrorCode.BAD_OUTPUT",
        "    code = ErrorCode.INFERENCE_FAILED",
    ),
    Mutation(  # the seams: a closed choice read from a flag left a plain string
        "a flag's enum value left unconverted",
        "depthstream/settings.py",
        "        return lambda text: kind(text.strip())",
        "        return lambda text: text.strip()",
    ),
    Mutation(
        "infinite timeouts accepted", "depthstream/settings.py", "if not math.isfinite(value):", "if False:"
    ),
    Mutation(
        "unknown log level accepted",
        "bridge/settings.py",
        '("log_level", self.log_level in tuple(LogLevel)',
        '("log_level", True',
    ),
    # the contract and export
    Mutation(
        "no ceiling on the network input",
        "depthstream/contract.py",
        "return min(self._constrain(scale * height), ceiling), min(self._constrain(scale * width), ceiling)",
        "return self._constrain(scale * height), self._constrain(scale * width)",
    ),
    Mutation(
        "ceiling at 3:1", "depthstream/contract.py", "max_aspect: float = 2.5", "max_aspect: float = 3.0"
    ),
    Mutation(
        "fingerprint misses files",
        "export/repository.py",
        '_CODE_GLOBS = ("export/*.py", "export/*.sh", "depthstream/*.py")',
        '_CODE_GLOBS = ("export/graph.py",)',
    ),
    Mutation("bicubic kernel off", "export/resize.py", "CUBIC_A = -0.75", "CUBIC_A = -0.5"),
    # raw depth on the stream
    Mutation(
        "raw depth by default", "depthstream/wire.py", 'DEFAULT_OUTPUT = "color"', 'DEFAULT_OUTPUT = "both"'
    ),
    Mutation(
        "raw depth one level short",
        "depthstream/render/raw_depth.py",
        "scale = LEVELS / span if span > 0 else 0.0",
        "scale = (LEVELS - 1) / span if span > 0 else 0.0",
    ),
    Mutation(
        "unknown output accepted",
        "bridge/protocol.py",
        'output=None if output is None else _choice(output, "output", OUTPUTS, ErrorCode.UNKNOWN_OUTPUT),',
        "output=output,",
    ),
    # the page's default model
    Mutation(
        "live threshold ignored",
        "bridge/default_model.py",
        "live = [info for info in timed if (estimated_fps(info.ms_per_frame, stack_ms) or 0.0) >= LIVE_FPS]",
        "live = timed",
    ),
    Mutation(
        "the stack's own time left out of the estimate",
        "bridge/default_model.py",
        "return 1000.0 / (ms_per_frame + stack_ms)",
        "return 1000.0 / ms_per_frame",
    ),
    # the runtime each model runs on, and its twins
    Mutation(
        "OpenVINO wins without the margin",
        "depthstream/engine_choice.py",
        "return openvino_ms <= (1 - MIN_GAIN) * onnxruntime_ms",
        "return openvino_ms <= onnxruntime_ms",
    ),
    Mutation(
        "the slower twin kept",
        "export/twins.py",
        "kept = min(forced or contenders, key=lambda c: c.ms or 0.0)",
        "kept = max(forced or contenders, key=lambda c: c.ms or 0.0)",
    ),
    Mutation(
        "an unfaithful twin kept",
        "export/twins.py",
        "return self.correlation >= MIN_CORRELATION and self.max_error <= MAX_ERROR",
        "return self.max_error <= 10 * MAX_ERROR",
    ),
    Mutation(
        "OpenVINO left at its default precision",
        "depthstream/engines.py",
        '"INFERENCE_PRECISION_HINT": str(precision),',
        '"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "",',
    ),
    Mutation(
        "the CPU named without its matrix flags",
        "depthstream/accelerator.py",
        "return f\"{cpu_name(cpuinfo)} [{' '.join(flags) or 'no AVX2'}]\"",
        "return cpu_name(cpuinfo)",
    ),
    Mutation(
        "accuracy order reversed",
        "depthstream/contract.py",
        "        -spec.resize.size,\n        spec.precision != Precision.FP32,",
        "        spec.resize.size,\n        spec.precision != Precision.FP32,",
    ),
    Mutation("explicit default ignored", "bridge/default_model.py", "if configured != AUTO:", "if False:"),
    Mutation(
        "dropped frames not told",
        "bridge/outbox.py",
        "        self.notices.add(seq, reason)\n",
        "        pass\n",
    ),
    Mutation(
        "no ceiling on control messages",
        "bridge/session.py",
        "if not self.control_limiter.allow():",
        "if False:",
    ),
    Mutation(
        "a rate below 1 frame/s never grants",
        "bridge/admission.py",
        "self.burst = max(rate, 1.0)",
        "self.burst = rate",
    ),
    Mutation(
        "timings by the upper quartile",
        "depthstream/runtime.py",
        "np.percentile(times, 25)",
        "np.percentile(times, 75)",
    ),
    Mutation(
        "memory pattern back on",
        "depthstream/runtime.py",
        "options.enable_mem_pattern = False",
        "options.enable_mem_pattern = True",
    ),
    Mutation(
        "live traffic ignored",
        "bridge/observed.py",
        "if observed is None or not recorded or abs(observed - recorded) <= DEVIATION * recorded:",
        "if True:",
    ),
    Mutation(
        "the last model read sets admission",
        "bridge/triton.py",
        "min(self._capacities.values())",
        "self._capacities[name]",
    ),
    Mutation(
        "OpenCV's area resize not averaged (weights not divided by the step)",
        "export/resize.py",
        "return torch.clamp(overlap, min=0.0) / step",
        "return torch.clamp(overlap, min=0.0)",
    ),
    Mutation(
        "the upper-bound rule rounds every side down",
        "depthstream/contract.py",
        "return max(m, down + m if down + m - side <= side - down else down)",
        "return max(m, down)",
    ),
    Mutation(
        "the estimated camera not smoothed with steady on",
        "depthstream/render/camera.py",
        "self.normalized = (1 - SMOOTHING) * self.normalized + SMOOTHING * now",
        "self.normalized = now",
    ),
    Mutation(
        "a camera model's INTRINSICS not asked for",
        "bridge/triton.py",
        "**depth_request(rgb[None], region.name if region else None, intrinsics=camera),",
        "**depth_request(rgb[None], region.name if region else None),",
    ),
]


def run_tests(tree: Path, tests: list[str], timeout_s: float) -> tuple[bool, str]:
    """(caught, summary): caught when a test fails. A test that hangs fails by pytest-timeout
    (TEST_TIMEOUT_S); a whole run that outlives ``timeout_s`` anyway is not counted as caught:
    a suite that hangs has not said what is wrong."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-x",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--timeout={TEST_TIMEOUT_S}",
        "-m",
        FAST_SELECTION,
        *tests,
    ]
    env = {**os.environ, "DEPTHSTREAM_TESTS_FAST_ONLY": "1"}  # a real server there fails the test
    try:
        result = subprocess.run(command, cwd=tree, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return False, f"the suite hung past {timeout_s:.0f} s (not counted as caught)"
    lines = result.stdout.strip().splitlines()
    return result.returncode != 0, lines[-1] if lines else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutations", description=__doc__)
    parser.add_argument("--tests", nargs="*", default=["tests"])
    parser.add_argument("--only", help="run the mutations whose name contains this")
    parser.add_argument("--timeout-s", type=float, default=180)
    args = parser.parse_args(argv)
    mutations = [m for m in MUTATIONS if not args.only or args.only in m.name]
    with tempfile.TemporaryDirectory(prefix="mutations-") as scratch:
        tree = Path(scratch)
        for name in COPIED:
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(source, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(source, tree / name)
        tests = [t for t in args.tests if (tree / t).exists()]
        clean, summary = run_tests(tree, tests, args.timeout_s)
        if clean:
            print(f"the fast suite fails without any mutation: {summary}", file=sys.stderr)
            return 2
        survivors = []
        for number, mutation in enumerate(mutations, start=1):
            path = tree / mutation.path
            original = path.read_text()
            if original.count(mutation.old) != 1:
                print(
                    f"[{number:2}] {mutation.name}: its target is gone from {mutation.path}", file=sys.stderr
                )
                return 2
            path.write_text(original.replace(mutation.old, mutation.new))
            started = time.monotonic()
            caught, summary = run_tests(tree, tests, args.timeout_s)
            path.write_text(original)
            verdict = "caught" if caught else "SURVIVED"
            print(
                f"[{number:2}] {verdict:8} {mutation.name} ({time.monotonic() - started:.0f} s): {summary}",
                flush=True,
            )
            if not caught:
                survivors.append(mutation.name)
    caught = len(mutations) - len(survivors)
    print(f"\n{caught} of {len(mutations)} mutations caught by {len(tests)} test files")
    for name in survivors:
        print(f"  survived: {name}")
    return 0 if not survivors else 1


if __name__ == "__main__":
    sys.exit(main())
