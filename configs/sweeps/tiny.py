"""The tiny scaling sweep: 5 model sizes x 3 token budgets on the built-in world.

Base recipe configs/mm_world.py:scaling (the tiny model, trained and scored on whole-word
masked caption modelling with the audio in context: a target with a computed floor, see
that variant's docstring). Sizes span ~24k to ~0.95M parameters, budgets 100 to 600 steps
of 32 examples (64 tokens each: 16 audio patches + 48 caption bytes). Sized to finish in
under 30 minutes on a busy 2-core CPU with --parallel 2:

  python -m mmjax.scaling sweep --sweep configs/sweeps/tiny.py --out workdirs/sweep_tiny --parallel 2
"""
from mmjax.scaling.sweep import Length, ModelSize, grid

BASE = "configs/mm_world.py:scaling"
SIZES = (ModelSize(16, 1), ModelSize(32, 2), ModelSize(64, 2), ModelSize(96, 3),
         ModelSize(128, 4))
LENGTHS = (Length(100, 32), Length(250, 32), Length(600, 32))


def get_sweep():
  return grid(BASE, SIZES, LENGTHS)
