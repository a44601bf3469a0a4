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

The pooled vector is a per-modality CLS token's output (the joint one their mean), so
late fusion's matching logit is linear in the two towers' outputs: chance by design.
Figures and the dev runs behind these settings: NOTES-fusion-quality.md.
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
  if not tiny:
    _recipe(c)
  # Per-modality CLS tokens (as MBT's released config): in a fused pass each one attends
  # to both modalities, so it can carry the caption-image agreement to the head. With
  # mean pooling the matching loss sat at chance for hundreds of steps (dev runs in
  # NOTES-fusion-quality.md); late fusion's CLS tokens still never meet the other tower.
  c.model.pool = "cls"
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
    # Weight 5: the contrastive gradient otherwise dominates the shared trunk's Adam
    # statistics and matching escapes its plateau (loss log 2) much later.
    task.objectives.match = dict(type="matching", text="text", inputs=("image",),
                                 content_key="content_id", weight=5.0)
  _text_and_image_only(c)
  with c.evals.unlocked():
    del c.evals["classification"]
  # The bar is measured on the test split (the task's eval_split), like retrieval.
  c.evals.loss.split = "test"
  return c


def _recipe(c):
  """Sized to finish build-to-eval well inside 15 minutes on the quiet 2-core CPU: a
  narrower trunk than mm_world's default (matching makes two fused passes of caption +
  image per example, 2/3 of the step), and more, smaller steps, which the matching
  objective needs more than a large batch."""
  c.model.update(dict(width=64, depth=3, num_heads=2, mlp_dim=256, embed_dim=64))
  c.total_steps = 600
  c.log_every_steps = 50
  c.tasks.default.batch_size = 64
  c.optim.warmup_steps = 30
  c.checkpoint.every_steps = c.total_steps
  for ev in c.evals.values():
    ev.every_steps = c.total_steps


def _text_and_image_only(c):
  """Drops what the recipe never reads: video/audio/label preprocessing (log-mel and
  video resizing cost input time every step) and the video/audio embedders."""
  with c.tasks.default.data.preprocess.unlocked():
    for key in ("video", "audio", "label"):
      del c.tasks.default.data.preprocess[key]
  with c.model.modalities.unlocked():
    for key in ("video", "audio"):
      del c.model.modalities[key]
