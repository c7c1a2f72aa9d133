"""``make demo``: the embedded Triton (supervised) and the bridge together; Ctrl-C stops both.

``python -m demo [--repository DIR] [bridge flags]``: Triton's settings come from the
environment (``HTTP_PORT``, ``GRPC_PORT``, ``METRICS_PORT``, ``TRITON_*``) and ``--repository``;
every other flag is the bridge's. Both are validated before anything starts.

The first depth comes soon: ``make demo`` exports the quickest model first (``export --first``)
and starts here; with ``DEMO_EXPORT_ARGS`` set (the export's flags) this process exports the
rest in the background, at a lower priority, while the page streams, then loads each new model
into the running Triton with the admin key only it holds (model control ``explicit``); the page
lists them as coming until then.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import cv2

from bridge.catalog import ModelCatalog, ModelInfo
from bridge.default_model import choose_default
from bridge.own_work import own_work_ms
from bridge.server import build_server, run_until_stopped
from bridge.settings import BridgeSettings, LogLevel, parse_settings
from depthstream import accelerator, model_config
from depthstream.contract import EXPORTABLE, register, variants_of
from depthstream.model_config import CONFIG_FILE
from depthstream.settings import Settings, SettingsError, parse, parse_known, setting
from serving.supervisor import TritonSupervisor
from serving.triton import EmbeddedTriton, TritonSettings

log = logging.getLogger("demo")
TRITON_LOG = Path("build/tritonserver.log")
EXPORT_LOG = Path("build/export-rest.log")
GPU_WARNINGS = ";\n  without a GPU its CUDA, NVML and pinned-memory warnings are expected"


@dataclass(frozen=True)
class DemoSettings(Settings):
    """make demo's own settings; every other flag is the bridge's (bridge/settings.py)."""

    ENV_PREFIX = "DEMO_"

    repository: Path = setting(Path("model_repository"), help="the Triton model repository to serve")
    # set by make demo: the export of the models not served yet, run while the demo serves
    export_args: str = setting("", flag=False, help="flags of python -m export for the rest")

    def validate(self) -> None:
        try:
            shlex.split(self.export_args)
        except ValueError:
            self.require("export_args", False, "flags of python -m export, quoted as a shell quotes")

    @property
    def export_argv(self) -> list[str]:
        return shlex.split(self.export_args)


def asked_models(export_args: list[str]) -> set[str]:
    """The models the export's ``--model`` asks for (their twins too are judged, and appear once
    kept, not before: a twin slower than its model here is dropped)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--model", default="all")
    checkpoints = list(EXPORTABLE) if parser.parse_known_args(export_args)[0].model == "all" else []
    checkpoints = checkpoints or [parser.parse_known_args(export_args)[0].model]
    return {
        spec.name
        for name in checkpoints
        if name in EXPORTABLE
        for spec in variants_of(name)
        if not spec.is_twin
    }


def export_the_rest(
    export_args: list[str], repository: Path, triton: EmbeddedTriton, catalog: ModelCatalog
) -> None:
    """The models after the first: exported at a lower priority while the page streams, then
    loaded into the running Triton. A failure is said and the demo goes on with what it serves."""
    if not catalog.coming:
        return
    print(
        f"make demo: exporting {len(catalog.coming)} more models in the background (log: {EXPORT_LOG})",
        flush=True,
    )
    argv = [sys.executable, "-m", "export", "--brief", "--output", str(repository), *export_args]
    with EXPORT_LOG.open("w") as log_file:
        done = subprocess.run(argv, stdout=log_file, stderr=subprocess.STDOUT, preexec_fn=lambda: os.nice(10))
    try:
        if done.returncode != 0:
            print(
                f"make demo: exporting the rest failed (see {EXPORT_LOG}); serving what is here", flush=True
            )
            return
        added = triton.add_models()
        print(f"make demo: Triton now serves {len(triton.models)} models ({len(added)} added)", flush=True)
    except Exception as exc:  # a model that will not load: said, the others keep streaming
        print(f"make demo: loading the new models failed ({exc}); see {TRITON_LOG}", flush=True)
    finally:
        catalog.coming = frozenset()


def served_models(triton: EmbeddedTriton) -> list[ModelInfo]:
    """The served models as the bridge will see them (speeds, random weights), from the
    configs the embedded Triton was started with."""
    infos = []
    for name in triton.models:
        config = model_config.parse((triton.served_repository / name / CONFIG_FILE).read_text())
        ms, machine = model_config.served_speed(config) or (None, "")
        try:
            spec = model_config.spec_of(config)
        except ValueError as exc:  # the bridge refuses it too, saying why
            log.warning("%s", exc)
            continue
        register(spec)
        infos.append(
            ModelInfo(
                name,
                ready=True,
                random_weights=model_config.is_random_weights(config),
                ms_per_frame=ms,
                measured_on=machine,
                spec=spec,
            )
        )
    return infos


def start_up_lines(settings: BridgeSettings, triton: EmbeddedTriton) -> list[str]:
    """What a person needs once everything is up: where to open it, what runs, how to stop it."""
    infos = served_models(triton)
    choice = choose_default(infos, settings.default_model, stack_ms=own_work_ms())  # as the bridge does
    machines = sorted({info.measured_on for info in infos if info.measured_on})
    lines = [
        f"depthstream is live: open http://{settings.host}:{settings.port}/",
        f"  Triton serves {len(infos)} model{'s' * (len(infos) != 1)} on gRPC {triton.settings.grpc_url} "
        f"(its log: {TRITON_LOG}{GPU_WARNINGS if not accelerator.gpu_names() else ''})",
        f"  measured on: {'; '.join(machines) or 'not recorded'}",
        f"  the page opens on {choice.reason}",
        "  (estimates are for Triton and the bridge: a browser on this same machine shares its CPU",
        "  and streams less; open the page from another machine for the full rate)",
    ]
    if any(info.random_weights for info in infos):
        lines.append("  RANDOM WEIGHTS: a smoke demo, the depth is meaningless (the page says so too)")
    lines.append("  Ctrl-C stops both.")
    return lines


def log_level_asked(bridge_argv: list[str]) -> bool:
    """``--log-level debug``, ``--log-level=debug`` or BRIDGE_LOG_LEVEL."""
    flag = any(arg == "--log-level" or arg.startswith("--log-level=") for arg in bridge_argv)
    return flag or "BRIDGE_LOG_LEVEL" in os.environ


def main(argv: list[str] | None = None) -> int:
    try:
        args, bridge_argv = parse_known(DemoSettings, argv, prog="python -m demo", description=__doc__)
        export_args = args.export_argv
        control = ["--model-control", "explicit"] if export_args else []  # models come in later
        triton_settings = parse(TritonSettings, ["--repository", str(args.repository), *control])
        settings = parse_settings(bridge_argv)
        # the bridge holds the shared-memory key only, never Triton's admin key
        settings = replace(
            settings, triton_url=triton_settings.grpc_url, triton_shm_key=triton_settings.shm_key
        )  # validated again
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # a demo's terminal shows what matters (warnings, errors), not a line per request, unless asked
    asked = log_level_asked(bridge_argv)
    if not asked:
        settings = replace(settings, log_level=LogLevel.WARNING)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    TRITON_LOG.parent.mkdir(parents=True, exist_ok=True)
    triton = EmbeddedTriton(triton_settings, log_path=TRITON_LOG)
    if not triton.start_or_report():
        return 2
    # Triton dies (the OOM killer, a crash): say so, restart it; give up by stopping the demo
    supervisor = TritonSupervisor(triton, on_give_up=lambda: os.kill(os.getpid(), signal.SIGTERM))
    supervisor.start()
    cv2.setNumThreads(1)
    try:
        server = build_server(settings)
        print("\n" + "\n".join(start_up_lines(settings, triton)) + "\n", flush=True)
        if export_args:
            catalog = server.state.catalog
            catalog.coming = frozenset(
                asked_models(export_args) - set(triton.models)
            )  # before the bridge starts
            rest = (export_args, args.repository, triton, catalog)
            threading.Thread(target=export_the_rest, args=rest, name="export-rest", daemon=True).start()
        run_until_stopped(server)
    finally:
        supervisor.shutdown()
    return 1 if supervisor.gave_up else 0


if __name__ == "__main__":
    sys.exit(main())
