"""The tiny NMM scaling sweep: early, late and early_moe fusion, 4 sizes x 3 token budgets
each (36 runs), on the generative caption target of configs/mm_world_nmm.py:scaling_*
(next-token captions from the image; floor 0.041 nats per token).

Sizes are width x depth (heads of 16, MLP 4x); late fusion's image encoder is as deep as
its decoder (NMM scales both). Budgets are 60, 150 and 400 steps of 32 examples (64
tokens each: 16 image patches + 48 caption bytes). The whole sweep ran in 27 minutes on the
2-core CPU with --parallel 2 under load 8-10 (2026-12-03; docs/nmm_scaling.md has what it
found).

  python -m mmjax.scaling sweep --sweep configs/sweeps/nmm_tiny.py --out workdirs/nmm_tiny --parallel 2
"""
from mmjax.scaling.sweep import Length, ModelSize, family_grid

BASES = {f: f"configs/mm_world_nmm.py:scaling_{f}" for f in ("early", "late", "early_moe")}
EXTRA = {"late": ("model.fusion.encoder_depth=0",)}  # 0 = model.depth
SIZES = (ModelSize(16, 1), ModelSize(32, 1), ModelSize(48, 2), ModelSize(64, 2))
LENGTHS = (Length(60, 32), Length(150, 32), Length(400, 32))


def get_sweep():
  return family_grid(BASES, SIZES, LENGTHS, extra=EXTRA)
