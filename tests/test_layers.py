"""The package's layers and shape: import-linter contracts (.importlinter) and the size bars
(benchmarks/code_shape.py)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

from benchmarks import code_shape
from tests.conftest import ROOT

LINT = os.path.join(os.path.dirname(sys.executable), "lint-imports")


def lint(root: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=root)
  return subprocess.run([LINT, "--no-cache"], cwd=root, env=env, capture_output=True,
                        text=True, timeout=120)


def test_import_contracts_hold():
  out = lint(ROOT)
  assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_a_wrong_way_import_breaks_the_contracts(tmp_path):
  """The contracts can fail: a model module that imports the trainer is caught."""
  shutil.copytree(os.path.join(ROOT, "mmjax"), tmp_path / "mmjax",
                  ignore=shutil.ignore_patterns("__pycache__"))
  shutil.copy(os.path.join(ROOT, ".importlinter"), tmp_path / ".importlinter")
  heads = tmp_path / "mmjax" / "models" / "heads.py"
  heads.write_text(heads.read_text() + "\nfrom mmjax.training import trainer  # wrong way\n")
  out = lint(str(tmp_path))
  assert out.returncode != 0
  assert "mmjax.models.heads -> mmjax.training.trainer" in out.stdout, out.stdout[-3000:]


def test_functions_files_and_top_level_stay_small():
  shape = code_shape.shape()
  assert shape["functions_over_60"] == [], shape["functions_over_60"]
  assert shape["files_over_400"] == [], shape["files_over_400"]
  assert shape["top_level_modules"] <= 6, shape["top_level"]
  assert shape["max_function_lines"] <= 60 and shape["max_file_lines"] <= 400
