"""mm_world with Mixture-of-Experts feed-forward layers (proposed as configs/mm_world.py
variants `moe` and `tiny_moe`; kept apart while that file is being edited).

Variants:
  moe       the default recipe with dropless top-2-of-8 MoE in every second block
  tiny_moe  the tiny recipe with 4 experts in its one block; what tests can drive
"""
import importlib.util
import os


def _mm_world():
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mm_world.py")
  spec = importlib.util.spec_from_file_location("mm_world", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(variant=None):
  variant = variant or "moe"
  if variant not in ("moe", "tiny_moe"):
    raise ValueError(f"configs/mm_world_moe.py: unknown variant {variant!r}; valid: moe, tiny_moe")
  tiny = variant == "tiny_moe"
  c = _mm_world().get_config("tiny" if tiny else "default")
  c.model.ffn = dict(
      type="moe",
      every=1 if tiny else 2,        # MoE in blocks every-1, 2*every-1, ...
      num_experts=4 if tiny else 8,
      top_k=2,
      routing="dropless",            # token_choice | dropless | expert_choice
      lb_loss_weight=0.01,
      z_loss_weight=0.001,
  )
  return c
