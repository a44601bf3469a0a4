"""Fusion families on the built-in world: early vs bottleneck (MBT) vs late fusion, dense
or with Mixture-of-Experts feed-forward layers, on a task that only fusion can solve.

Variants: `<fusion>[_moe]` and `tiny_<fusion>[_moe]`, fusion in early | bottleneck | late,
e.g. `configs/mm_world_fusion.py:bottleneck_moe` or `:tiny_late`.

One task, two objectives:
  text_image  text<->image softmax contrastive (each side encoded alone; all three
              fusion types can learn it)
  match       does this caption belong to this image? One fused pass over caption +
              image; negatives are captions of other examples with different content.
              The answer is in the interaction of the two, so late fusion (modalities
              meet only in a linear head) stays near chance, early and bottleneck do not.
Evaluators: retrieval (text<->image R@1/R@5) and the test-split loss (which reports the
matching accuracy as `default/loss/match/accuracy`).
"""
import importlib.util
import os

FUSIONS = ("early", "bottleneck", "late")


def _mm_world():
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mm_world.py")
  spec = importlib.util.spec_from_file_location("mm_world", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _variants():
  names = []
  for tiny in ("", "tiny_"):
    for fusion in FUSIONS:
      names += [f"{tiny}{fusion}", f"{tiny}{fusion}_moe"]
  return names


def get_config(variant=None):
  variant = variant or "early"
  if variant not in _variants():
    raise ValueError(f"configs/mm_world_fusion.py: unknown variant {variant!r}; valid: "
                     f"{', '.join(_variants())}")
  tiny = variant.startswith("tiny_")
  name = variant.removeprefix("tiny_")
  fusion, moe = name.removesuffix("_moe"), name.endswith("_moe")
  c = _mm_world().get_config("tiny" if tiny else "default")
  depth = c.model.depth
  if fusion == "bottleneck":
    # MBT's released config fuses from layer 8 of 12; here from the middle, 4 bottlenecks.
    c.model.fusion = dict(type="bottleneck", fusion_layer=depth // 2, num_bottlenecks=4,
                          share_weights=True)
  elif fusion == "late":
    c.model.fusion = dict(type="late", share_weights=False)
  if moe:
    c.model.ffn = dict(
        type="moe",
        every=1 if tiny else 2,        # MoE in blocks every-1, 2*every-1, ...
        num_experts=4 if tiny else 8,
        top_k=2,
        routing="dropless",            # token_choice | dropless | expert_choice
        lb_loss_weight=0.01,
        z_loss_weight=0.001)
  task = c.tasks.default
  with task.unlocked():
    del task.objectives["av_label"]
    task.objectives.match = dict(type="matching", text="text", inputs=("image",),
                                 content_key="content_id", weight=1.0)
  with c.evals.unlocked():
    del c.evals["classification"]
  return c
