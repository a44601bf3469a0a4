"""An iso-FLOP sweep on the built-in world: 3 compute budgets, each over the sizes around its
optimum, every run trained on D = C / (6 N) tokens (Hoffmann et al.'s approach 2).

Same base as the tiny grid (configs/mm_world.py:scaling). Budgets 1e11, 3e11 and 1e12 FLOPs
(C = 6 N D); each budget keeps the sizes that train for 50 to 1,600 steps of 32 examples (a
bound on the small models' cost at the largest budget).
`fit` finds the `budget` column and adds a parabola per budget (log L over log N) whose vertices
give n_opt_exponent a second way:

  python -m mmjax.scaling sweep --sweep configs/sweeps/isoflop_tiny.py \
      --out workdirs/isoflop_tiny --parallel 2
"""
from mmjax.scaling import counts
from mmjax.scaling.sweep import ModelSize, iso_flop

BASE = "configs/mm_world.py:scaling"
BUDGETS = (1e11, 3e11, 1e12)
SIZES = (ModelSize(16, 1), ModelSize(24, 1), ModelSize(32, 1), ModelSize(32, 2),
         ModelSize(48, 2), ModelSize(64, 2), ModelSize(96, 2), ModelSize(96, 3),
         ModelSize(128, 4))


def get_sweep():
  return iso_flop(BASE, BUDGETS, SIZES, batch_size=32, params_fn=counts.params_of,
                  tokens_per_example_fn=counts.tokens_per_example_of, min_steps=50,
                  max_steps=1600)
