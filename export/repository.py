"""Write one model into a Triton model repository: complete, or not at all."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from depthstream.model_config import CONFIG_FILE, MANIFEST, ONNX_FILE, VERSION

ROOT = Path(__file__).resolve().parent.parent
# Everything that can shape an exported model: the whole build step (graph, resize kernel,
# quantization, configs, ...) and the shared contract it builds from. Globbed, not listed by
# hand: a list kept by hand missed resize.py and quantize.py.
# depthstream/*.py only: depthstream/render/ (drawing depth) changes no exported model
_CODE_GLOBS = ("export/*.py", "export/*.sh", "depthstream/*.py")


def code_files(root: Path = ROOT) -> list[Path]:
    return sorted(path for pattern in _CODE_GLOBS for path in root.glob(pattern))


def code_fingerprint(root: Path = ROOT) -> str:
    """Hash of the code that shapes an exported model: a change re-exports on the next run."""
    digest = hashlib.sha256()
    for path in code_files(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def weights_fingerprint(directory: Path) -> str:
    """Cheap identity of a local checkpoint: config text plus name, size and mtime of files."""
    digest = hashlib.sha256()
    for path in sorted(directory.iterdir()):
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    config = directory / "config.json"
    if config.is_file():
        digest.update(config.read_bytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Manifest:
    model: str
    source: str
    weights: str  # fingerprint of the weights, or the hub id / "random"
    random_weights: bool
    code: str
    torch: str = ""
    onnx_opset: int = 0
    parity_error: float = 0.0  # vs PyTorch (FP32) or, for a twin, vs its FP32 model: of the range
    export_seconds: float = 0.0
    correlation: float = 0.0  # a twin only: with its FP32 model, the worst over the photographs
    fp32_ms: float = 0.0  # a twin only: both timed at 640x480 on the exporting machine
    twin_ms: float = 0.0
    gflops: float = 0.0  # one 640x480 frame's matrix work through the graph (export.flops)
    method: str = ""  # a twin: how it was made (export.twins: INT8 dynamic or static QDQ)

    def same_input(self, other: Manifest) -> bool:
        return (self.model, self.source, self.weights, self.random_weights, self.code) == (
            other.model,
            other.source,
            other.weights,
            other.random_weights,
            other.code,
        )


def read_manifest(model_dir: Path) -> Manifest | None:
    try:
        return Manifest(**json.loads((model_dir / MANIFEST).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def is_up_to_date(model_dir: Path, wanted: Manifest) -> bool:
    existing = read_manifest(model_dir)
    return (
        existing is not None
        and existing.same_input(wanted)
        and (model_dir / VERSION / ONNX_FILE).is_file()
        and (model_dir / CONFIG_FILE).is_file()
    )


class StagedModel:
    """A model directory built beside the repository and swapped in only when complete.

    Used as a context manager: unless committed (an error, or nothing worth writing) the
    staging directory is removed and any previous version of the model stays as it was.
    """

    def __init__(self, output: Path, name: str) -> None:
        output.mkdir(parents=True, exist_ok=True)
        self.final = output / name
        self.path = Path(tempfile.mkdtemp(prefix=f".staging-{name}-", dir=output))
        self.committed = False
        self.path.chmod(0o755)  # mkdtemp makes it private; Triton in a container must read it
        (self.path / VERSION).mkdir()

    @property
    def onnx_path(self) -> Path:
        return self.path / VERSION / ONNX_FILE

    def write_config(self, text: str) -> None:
        (self.path / CONFIG_FILE).write_text(text)

    def write_manifest(self, manifest: Manifest) -> None:
        (self.path / MANIFEST).write_text(json.dumps(asdict(manifest), indent=2) + "\n")

    def commit(self) -> Path:
        old = None
        if self.final.exists():
            old = self.final.with_name(f".old-{self.final.name}")
            shutil.rmtree(old, ignore_errors=True)
            self.final.rename(old)
        self.path.rename(self.final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self.committed = True
        return self.final

    def __enter__(self) -> StagedModel:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.committed:
            shutil.rmtree(self.path, ignore_errors=True)
