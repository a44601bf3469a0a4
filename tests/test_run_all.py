"""benchmarks/run_all.py and benchmarks/ratios.py without running a benchmark: the interval,
the verdict on a bar, the shuffled orders, the page, and the command line's refusals."""
from __future__ import annotations

import os
import sys

import pytest

from tests.conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import ratios  # noqa: E402
import run_all  # noqa: E402


def test_round_orders_shuffle_every_round_and_keep_every_name():
  orders = ratios.round_orders(["a", "b", "c"], 20, seed=1)
  assert len(orders) == 20 and all(sorted(o) == ["a", "b", "c"] for o in orders)
  assert len({tuple(o) for o in orders}) > 1  # not one fixed order
  assert {o[0] for o in orders} == {"a", "b", "c"}  # every variant sometimes goes first
  assert orders == ratios.round_orders(["a", "b", "c"], 20, seed=1)  # seeded


def test_median_interval_and_verdict():
  median, ci = ratios.median_ci95([1.0, 1.1, 1.2, 1.3, 1.4])
  assert median == pytest.approx(1.2) and ci[0] <= median <= ci[1]
  assert 1.0 <= ci[0] and ci[1] <= 1.4
  figs = ratios.ratio_figures([2.0, 4.0, 6.0, 8.0, 10.0], [1.0, 2.0, 3.0, 4.0, 5.0])
  assert figs["ratio"] == 2.0 and figs["ratio_ci95"] == [2.0, 2.0]
  # A bar is met only when the interval's far end meets it.
  assert ratios.verdict([1.1, 1.25], 1.3, "lower") == "met"
  assert ratios.verdict([1.1, 1.62], 1.3, "lower") == "not shown"  # the median may be 1.14
  assert ratios.verdict([0.92, 1.0], 0.9, "higher") == "met"
  assert ratios.verdict([0.85, 1.0], 0.9, "higher") == "not shown"
  with pytest.raises(ValueError):
    ratios.ratio_figures([1.0], [1.0, 2.0])


def test_page_records_command_commit_machine_and_load():
  record = {"results": {"moe": {
      "name": "moe", "mode": "quick", "command": "python benchmarks/moe.py --rounds 5",
      "commit": "0123456789abcdef", "uncommitted_changes": False, "date": "2026-12-03 09:00 UTC",
      "load_1m_before": 0.5, "load_1m_after": 1.5, "wall_s": 12.0, "exit": 0,
      "machine": {"cores": 2, "platform": "cpu", "device_kind": "cpu", "devices": 1},
      "figures": {"ratio": 1.1, "ratio_ci95": [1.05, 1.2]},
      "bars": [{"figure": "ratio_ci95", "bar": 1.3, "better": "lower",
                "what": "dropless <= 1.3x dense", "interval": [1.05, 1.2], "verdict": "met"}]},
      "agd": {"name": "agd", "mode": "full", "command": "python benchmarks/agd.py",
              "commit": "fedcba9876543210", "uncommitted_changes": True, "date": "d",
              "load_1m_before": 3.0, "load_1m_after": 4.0, "wall_s": 1.0, "exit": 1,
              "machine": {}, "figures": None, "error": "boom", "bars": []}}}
  page = run_all.render(record)
  moe = page[page.index("## moe"):page.index("## agd")]
  for text in ("python benchmarks/moe.py --rounds 5", "`0123456789ab`", "2026-12-03 09:00 UTC",
               "2 cores", "0.5 before, 1.5 after", "quick mode", "**met**", "[1.05, 1.2]"):
    assert text in moe, text
  agd = page[page.index("## agd"):]
  assert "uncommitted changes" in agd and "No figures: boom" in agd


def test_every_benchmark_script_is_listed():
  scripts = {f[:-3] for f in os.listdir(os.path.join(ROOT, "benchmarks"))
             if f.endswith(".py") and f not in ("run_all.py", "ratios.py", "report.py",
                                                "__init__.py")}
  assert scripts == {b.script or b.name for b in run_all.BENCHMARKS}


def test_command_line_refusals(capsys):
  assert run_all.main(["--only", "nope"]) == 2
  assert "unknown benchmark(s) nope" in capsys.readouterr().err
  assert run_all.main(["--gpu", "--only", "fusion"]) == 2
  assert run_all.main(["--quick", "--only", "moe,agd", "--list"]) == 0
  out = capsys.readouterr().out
  assert "benchmarks/moe.py" in out and "benchmarks/agd.py" in out and "fusion" not in out
