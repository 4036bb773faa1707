"""The import contracts of `make lint` (pyproject.toml, [tool.importlinter]) catch what they
promise: a copy of the packages with one forbidden import planted fails, the real tree passes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))
PACKAGES = ("eldercare", "store", "devices", "ingest", "alerts", "care", "api", "benchmarks")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    # The copy comes first on the path, before the editable install of the real tree.
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package,
            tmp_path / package,
            ignore=shutil.ignore_patterns("__pycache__", "static"),
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.parametrize(
    ("module", "planted", "contract"),
    [
        ("alerts/news2.py", "import psycopg", "Pure rules and parsing do no I/O"),
        ("care/service.py", "import api.app", "Domains do not import the HTTP API"),
        ("eldercare/settings.py", "import store.db", "Runtime plumbing imports no domain"),
    ],
)
def test_a_planted_forbidden_import_breaks_its_contract(tree, module, planted, contract):
    assert _lint(tree).returncode == 0, "the copy passes before anything is planted"
    path = tree / module
    path.write_text(path.read_text() + f"\n{planted}  # planted by the test\n")
    broken = _lint(tree)
    assert broken.returncode != 0
    assert f"{contract}" in broken.stdout and "BROKEN" in broken.stdout, broken.stdout
