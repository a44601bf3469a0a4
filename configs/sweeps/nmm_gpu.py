"""The GPU-sized NMM scaling sweep: early, late and early_moe fusion, 5 sizes x 3 token
budgets each (45 runs), on the same target as configs/sweeps/nmm_tiny.py (next-token
captions from the image, configs/mm_world_nmm.py:scaling_*), at batch 256.

Sizes span ~3M to ~200M parameters (heads of 64, MLP 4x); budgets 4k, 10k and 25k steps
of 256 examples (64 tokens each). `--dry-run` prints each run's FLOPs and its hours on one H100
at a NOMINAL MFU (mmjax/scaling/cost.py); nothing of it has run yet.

  python -m mmjax.scaling sweep --sweep configs/sweeps/nmm_gpu.py --out workdirs/nmm_gpu --dry-run
  python -m mmjax.scaling sweep --sweep configs/sweeps/nmm_gpu.py --out workdirs/nmm_gpu --launcher slurm
"""
from mmjax.scaling.sweep import Length, ModelSize, family_grid

BASES = {f: f"configs/mm_world_nmm.py:scaling_{f}" for f in ("early", "late", "early_moe")}
COMMON = ("eval_batch_size=1024", "log_every_steps=200")
EXTRA = {"early": COMMON, "early_moe": COMMON,
         "late": COMMON + ("model.fusion.encoder_depth=0",)}  # 0 = model.depth
SIZES = tuple(ModelSize(w, d, head_dim=64) for w, d in
              ((256, 4), (384, 6), (512, 8), (768, 12), (1024, 16)))
LENGTHS = (Length(4000, 256), Length(10000, 256), Length(25000, 256))


def get_sweep():
  return family_grid(BASES, SIZES, LENGTHS, extra=EXTRA)
