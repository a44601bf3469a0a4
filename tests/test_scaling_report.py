"""`report`: one page (report.md) for a family study, with the family figures, from a
synthetic study of three families drawn from known laws."""
from __future__ import annotations

import csv
import os

import numpy as np
import pytest

from mmjax.scaling import __main__ as cli, synthetic
from tests.test_scaling_compare import EARLY, LATE

SIZES, TOKENS = np.logspace(6, 9, 4), np.logspace(8, 11, 4)
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # ~15-25 s: three fits and five figures
def test_report_writes_the_table_verdicts_figures_and_commands(tmp_path, capsys):
  moe = dict(EARLY, A=EARLY["A"] / 2)  # MoE: better at every size
  with open(tmp_path / "results.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["run", "family", "params", "tokens", "flops", "loss"])
    for seed, (family, law) in enumerate((("early", EARLY), ("late", LATE),
                                          ("early_moe", moe))):
      pts = synthetic.grid_points(law, 0.002, seed, sizes=SIZES, tokens=TOKENS)
      for i, (n, d, loss) in enumerate(zip(pts.n, pts.d, pts.loss)):
        w.writerow([f"{family}{i}", family, n, d, 6 * n * d, loss])
  assert cli.main(["fit", "--results", str(tmp_path / "results.csv"), "--out",
                   str(tmp_path / "fit"), "--group-by", "family", "--bootstrap", "4"]) == 0
  assert cli.main(["report", "--out", str(tmp_path), "--budgets", "1e15,1e19"]) == 0
  page = (tmp_path / "report.md").read_text()
  assert str(tmp_path / "report.md") in capsys.readouterr().out
  for needle in ("| gamma |", "| early | early_moe | late |", "| early / late | 1e+15 |",
                 "| early_moe / late | 1e+19 |", "--group-by family --bootstrap 4",
                 "compare --fit", "at commit "):
    assert needle in page, needle
  early_vs_late = [l for l in page.splitlines() if l.startswith("| early / late |")]
  assert [l.rsplit("|", 2)[1].strip() for l in early_vs_late] == ["early", "late"]
  figures = [l[l.index("(") + 1:-1] for l in page.splitlines() if l.startswith("![")]
  assert {os.path.basename(p) for p in figures} >= {"families_frontier.png",
                                                    "families_n_opt.png",
                                                    "fitted_vs_observed.png"}
  for p in figures:
    assert (tmp_path / p).read_bytes()[:8] == PNG
