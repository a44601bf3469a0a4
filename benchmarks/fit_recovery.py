"""Scaling-law fitter on synthetic data from a known law (Chinchilla's), 8 sizes x 8 token counts.

Bars: with 0.1% multiplicative noise the fit recovers E, A, B, alpha, beta within 2%; with
1% noise it predicts the 49 held-out grid midpoints within 1%. Several noise seeds.
Prints a table and, last, one JSON object of the worst relative errors over the seeds.

  python benchmarks/fit_recovery.py [--seeds 5] [--first-seed 0] [--delta 1e-3]

At 1% noise about 1 seed in 20 misses the held-out 1% bar at its worst midpoint (measured:
seed 5, 1.16%; seed 21, 1.07%). That is the estimator, not the optimiser: 64
starts, or a start at the true law, reach the same minimum, whose Huber objective is below
the true law's on those points. With delta = 1e-3 against 1% noise the Huber loss is
nearly L1 (a median fit), less efficient than least squares for Gaussian noise; --delta
1e-2 shows it (no misses on seeds 0..39). The issue fixes delta = 1e-3 (robust to outliers).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mmjax.scaling import fit, synthetic  # noqa: E402


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--seeds", type=int, default=5)
  p.add_argument("--first-seed", type=int, default=0)
  p.add_argument("--delta", type=float, default=fit.DELTA, help="Huber delta of the fit")
  args = p.parse_args()
  worst = {f"{k}_rel_err_noise0.001": 0.0 for k in fit.NAMES}
  worst.update({"heldout_max_rel_err_noise0.01": 0.0, "heldout_mean_rel_err_noise0.01": 0.0})
  print(f"{'seed':>4} {'noise':>6} " + " ".join(f"{k:>8}" for k in fit.NAMES) +
        f" {'held-out max':>12} {'mean':>8}")
  for seed in range(args.first_seed, args.first_seed + args.seeds):
    for noise in (1e-3, 1e-2):
      r = synthetic.recovery(noise, seed=seed, delta=args.delta)
      print(f"{seed:>4} {noise:>6} " + " ".join(f"{r['params'][k]:>8.4f}" for k in fit.NAMES) +
            f" {r['heldout_max']:>12.4f} {r['heldout_mean']:>8.4f}")
      if noise == 1e-3:
        for k in fit.NAMES:
          key = f"{k}_rel_err_noise0.001"
          worst[key] = max(worst[key], r["params"][k])
      else:
        worst["heldout_max_rel_err_noise0.01"] = max(worst["heldout_max_rel_err_noise0.01"],
                                                     r["heldout_max"])
        worst["heldout_mean_rel_err_noise0.01"] = max(worst["heldout_mean_rel_err_noise0.01"],
                                                      r["heldout_mean"])
  worst.update(seeds=args.seeds, first_seed=args.first_seed, delta=args.delta)
  print("bars: parameters within 0.02 at 0.1% noise; held-out within 0.01 at 1% noise")
  print(json.dumps({k: round(v, 6) for k, v in worst.items()}))


if __name__ == "__main__":
  main()
