"""Write ``config.pbtxt`` files for the ``tensorrt_plan`` flavour (plans built by build_plans.sh)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bridge.contract import MODELS
from export import configs
from export.repository import CONFIG_FILE, VERSION, read_manifest


def write_plan_configs(source: Path, target: Path) -> list[Path]:
    written = []
    for name, spec in MODELS.items():
        if not (target / name / VERSION / "model.plan").is_file():
            continue
        manifest = read_manifest(source / name)
        random_weights = bool(manifest and manifest.random_weights)
        path = target / name / CONFIG_FILE
        path.write_text(configs.to_text(configs.tensorrt_plan_config(spec, random_weights)))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.plan_repository", description=__doc__)
    parser.add_argument("--source", type=Path, default=Path("model_repository"))
    parser.add_argument("--target", type=Path, default=Path("model_repository_trt"))
    args = parser.parse_args(argv)
    written = write_plan_configs(args.source, args.target)
    if not written:
        print(f"no model.plan under {args.target}; run `make plans` on a GPU machine", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
