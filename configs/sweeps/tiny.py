"""The tiny scaling sweep: 5 model sizes x 3 token budgets on the built-in world.

Base recipe configs/mm_world.py:scaling (the tiny model, trained and scored on masked caption
modelling with the image in context). Sizes span ~15k to ~0.9M parameters, budgets 100 to
1,000 steps of 32 examples (64 tokens each: 16 image patches + 48 caption bytes). Sized to
finish in well under 30 minutes on a 2-core CPU with --parallel 2:

  python -m mmjax.scaling sweep --sweep configs/sweeps/tiny.py --out workdirs/sweep_tiny --parallel 2
"""
from mmjax.scaling.sweep import Length, ModelSize, grid

BASE = "configs/mm_world.py:scaling"
SIZES = (ModelSize(16, 1), ModelSize(32, 2), ModelSize(64, 2), ModelSize(96, 3),
         ModelSize(128, 4))
LENGTHS = (Length(100, 32), Length(300, 32), Length(1000, 32))


def get_sweep():
  return grid(BASE, SIZES, LENGTHS)
