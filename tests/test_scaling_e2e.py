"""The four scaling commands end to end on real tiny runs: sweep, rerun, collect, fit, plot,
and a sweep stopped by SIGTERM that resumes on rerun without duplicate eval rows."""
from __future__ import annotations

import csv
import json
import math
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

from mmjax.scaling import fit as fit_lib
from tests.conftest import ROOT, cli_env, run_cli, wait_for

pytestmark = pytest.mark.slow

BASE = os.path.join(ROOT, "configs", "mm_world.py") + ":scaling"


def write_sweep(path, world_dir, sizes, lengths, extra=()) -> str:
  data = ["tasks.default.data.name=mm_world/tiny", f"tasks.default.data.data_dir={world_dir}",
          *extra]
  path.write_text(
      "from mmjax.scaling.sweep import Length, ModelSize, grid\n"
      "def get_sweep():\n"
      f"  return grid({BASE!r}, [ModelSize(*s) for s in {sizes!r}],\n"
      f"              [Length(*n) for n in {lengths!r}], extra={tuple(data)!r})\n")
  return str(path)


def eval_rows(workdir) -> list[dict]:
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  return [r for r in rows if "default/loss/caption_mlm/loss" in r]


def read_csv(path) -> list[dict]:
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def test_sweep_rerun_collect_fit_plot(world_dir, tmp_path):
  sweep_file = write_sweep(tmp_path / "s.py", world_dir, [(16, 1), (32, 1), (48, 2)],
                           [(4, 8), (12, 8)])
  out = tmp_path / "out"
  args = ["sweep", "--sweep", sweep_file, "--out", str(out), "--parallel", "2"]
  proc = run_cli("mmjax.scaling", args, timeout=600)
  assert "6 runs: 0 finished, 0 unfinished, 6 missing" in proc.stderr
  names = sorted(os.listdir(out))
  assert len([n for n in names if n.startswith("w")]) == 6 and "sweep.json" in names
  for n in names:
    if n.startswith("w"):
      assert len(eval_rows(out / n)) == 1, n
  before = {n: open(out / n / "metrics.jsonl").read() for n in names if n.startswith("w")}

  proc = run_cli("mmjax.scaling", args, timeout=300)  # everything finished: nothing runs
  assert "6 runs: 6 finished" in proc.stderr and "started" not in proc.stderr
  assert before == {n: open(out / n / "metrics.jsonl").read() for n in before}

  run_cli("mmjax.scaling", ["collect", "--out", str(out)], timeout=300)
  rows = read_csv(out / "results.csv")
  assert len(rows) == 6 and read_csv(out / "failed.csv") == []
  for col in ("run", "fusion", "params", "active_params", "tokens", "flops", "loss",
              "default/loss/caption_mlm/token_acc", "default/loss/num_examples"):
    assert col in rows[0], col
  r = {row["run"]: row for row in rows}["w32d1-s12b8"]
  assert r["fusion"] == "early" and r["params"] == r["active_params"]
  assert float(r["tokens"]) == 12 * 8 * (16 + 48)  # steps x batch x (audio + text tokens)
  assert float(r["examples"]) == 12 * 8
  # The trainer's analytic count, not 6ND: at width 32 most parameters are embedding tables,
  # which cost no matmul FLOPs, so it is well under 6ND here.
  ratio = float(r["flops"]) / (6 * float(r["params"]) * float(r["tokens"]))
  assert 0.1 < ratio < 1.0
  assert float(r["loss"]) == float(r["default/loss/caption_mlm/loss"])
  # Every run: the counts its name (w<width>d<depth>-s<steps>b<batch>) implies, a finite
  # loss, one model size per (width, depth), bigger models with more parameters, and the
  # analytic FLOPs linear in the steps.
  by_size = {}
  for row in rows:
    size, steps, batch = re.fullmatch(r"(w\d+d\d+)-s(\d+)b(\d+)", row["run"]).groups()
    steps, batch = int(steps), int(batch)
    assert float(row["examples"]) == steps * batch, row
    assert float(row["tokens"]) == steps * batch * (16 + 48), row
    assert math.isfinite(float(row["loss"])) and float(row["loss"]) > 0, row
    by_size.setdefault(size, {})[steps] = row
  assert sorted(by_size) == ["w16d1", "w32d1", "w48d2"]
  for size, runs in by_size.items():
    assert sorted(runs) == [4, 12], size
    assert runs[4]["params"] == runs[12]["params"], size
    assert float(runs[12]["flops"]) == pytest.approx(3 * float(runs[4]["flops"]), rel=1e-6)
  params = [float(by_size[s][4]["params"]) for s in ("w16d1", "w32d1", "w48d2")]
  assert params[0] < params[1] < params[2], params

  proc = run_cli("mmjax.scaling", ["fit", "--results", str(out / "results.csv"),
                                   "--out", str(out / "fit")], timeout=300)
  law = json.loads(proc.stdout)
  assert json.load(open(out / "fit" / "fit.json")) == law
  assert law["num_points"] == 6
  # Six tiny runs follow no law closely: the fit is degenerate (on 2026-12-03: B ~ 6e52,
  # beta ~ 16, E ~ 1e-9), so no range is asserted for its parameters. It is a law, though:
  # finite, positive terms and non-negative exponents (fit.json writes a non-finite value as
  # null), the allocation exponent that follows from them, and it reproduces the points
  # (then: every loss within 7%, R^2 of log loss 0.93; a constant would give 0).
  for k in ("E", "A", "B", "alpha", "beta", "r2_log_loss"):
    assert isinstance(law[k], float) and math.isfinite(law[k]), (k, law)
  assert law["A"] > 0 and law["B"] > 0 and law["alpha"] >= 0 and law["beta"] >= 0, law
  losses = np.array([float(row["loss"]) for row in rows])
  assert 0 < law["E"] < losses.min(), law
  if law["alpha"] + law["beta"] > 0:
    assert law["n_opt_exponent"] == pytest.approx(law["beta"] / (law["alpha"] + law["beta"]))
  predicted = fit_lib.predict(law, [float(row["params"]) for row in rows],
                              [float(row["tokens"]) for row in rows])
  np.testing.assert_allclose(predicted, losses, rtol=0.15)
  assert law["r2_log_loss"] > 0.5, law
  # The command fits the CSV's params, tokens and loss columns: the same law in process.
  again = fit_lib.json_safe(fit_lib.fit_all(fit_lib.points_from_rows(rows)))
  assert {k: law[k] for k in again} == again  # (+ the frontier's fields, the columns read)
  proc = run_cli("mmjax.scaling", ["plot", "--results", str(out / "results.csv"), "--fit",
                                   str(out / "fit"), "--out", str(out / "plots")], timeout=300)
  pngs = proc.stdout.split()
  assert len(pngs) == 3
  for png in pngs:
    with open(png, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n", png


def test_sigterm_stops_the_sweep_with_status_0_and_a_rerun_finishes_it(world_dir, tmp_path):
  sweep_file = write_sweep(tmp_path / "s.py", world_dir, [(16, 1)], [(400, 8), (10, 8)],
                           extra=("log_every_steps=20",))
  out = tmp_path / "out"
  args = ["-m", "mmjax.scaling", "sweep", "--sweep", sweep_file, "--out", str(out)]
  proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=cli_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  long_run = out / "w16d1-s400b8"
  try:
    wait_for(lambda: os.path.exists(long_run / "metrics.jsonl") and
             os.path.getsize(long_run / "metrics.jsonl") > 0, 240, "the first run to log",
             lambda: open(long_run / "sweep.log").read() if os.path.exists(long_run / "sweep.log")
             else "")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == 0, err
  assert "rerun the same command to resume" in err
  assert not (out / "w16d1-s10b8").exists()  # nothing new starts after the signal

  run_cli("mmjax.scaling", ["collect", "--out", str(out)], timeout=300)
  failed = {r["run"]: r for r in read_csv(out / "failed.csv")}
  assert failed["w16d1-s400b8"]["status"] == "unfinished"
  assert failed["w16d1-s10b8"]["status"] == "missing"
  assert read_csv(out / "results.csv") == []

  proc = run_cli("mmjax.scaling", args[2:], timeout=600)
  assert "2 runs: 0 finished, 1 unfinished, 1 missing" in proc.stderr
  assert "resumed from" in open(long_run / "sweep.log").read()
  assert len(eval_rows(long_run)) == 1
  run_cli("mmjax.scaling", ["collect", "--out", str(out)], timeout=300)
  assert len(read_csv(out / "results.csv")) == 2
