"""The export's code fingerprint covers every file that shapes an exported model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from export.repository import ROOT, code_files, code_fingerprint


@pytest.fixture
def tree(tmp_path) -> Path:
    for name in ("export", "depthstream"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


@pytest.mark.parametrize(
    "path",
    [
        "export/resize.py",
        "export/twins.py",
        "export/graph.py",
        "export/configs.py",
        "depthstream/contract.py",
    ],
)
def test_editing_any_file_that_shapes_a_model_changes_the_fingerprint(tree, path):
    before = code_fingerprint(tree)
    with (tree / path).open("a") as stream:
        stream.write("\n# an edit\n")
    assert code_fingerprint(tree) != before


def test_every_export_module_is_covered():
    covered = {path.relative_to(ROOT).as_posix() for path in code_files()}
    assert {p.relative_to(ROOT).as_posix() for p in (ROOT / "export").glob("*.py")} <= covered
    assert "depthstream/contract.py" in covered
