"""Native multimodal models (NMM, Shukor et al. 2025) on the built-in world: captions
generated from images by next-token prediction.

Variants (so far only the tiny ones; issue 16's item 7 adds the full recipe and MoE):
  tiny_early  early fusion as a prefix-LM: the image a bidirectional prefix, the caption
              causal after it
  tiny_late   NMM's late fusion (`late_decoder`): an image encoder whose projected outputs
              are the prefix of a causal decoder over the caption
  tiny_early_packed       tiny_early with image-caption pairs packed several to a row
  tiny_early_interleaved  tiny_early on packed interleaved documents: 2 (image, caption)
              pairs each, the images inline before their captions (NMM's interleaved data)
  scaling_early, scaling_late, scaling_early_moe
              the bases of the NMM scaling sweeps (configs/sweeps/nmm_*.py): the tiny model on
              the default world (batch 32), scored on the validation loss alone; early_moe is
              early fusion with NMM's MoE (top-1, dropless, load balance 0.01, 4 experts).
              All three share one target, whose floor is 0.041 nats per caption token
              (mmjax/scaling/caption_floor.next_token_floor("image"): the template).
One task, one objective: next_token over the caption with the image as context.
Evaluators: the test-split loss (`default/loss/caption/loss`, its perplexity, token accuracy)
and captioning (`default/captioning/...`: per-token loss and perplexity, and greedy captions
generated from the image: exact match and per-field accuracy).
"""
import importlib.util
import os

import ml_collections as mlc

VARIANTS = ("tiny_early", "tiny_late", "tiny_early_packed", "tiny_early_interleaved",
            "scaling_early", "scaling_late", "scaling_early_moe")
# Packed rows (mmjax/data/packing.py): text tokens per row, image slots per row, and for the
# interleaved documents the (image, caption) pairs of one document.
PACKED_TEXT, PACKED_IMAGES, PAIRS_PER_DOCUMENT = 96, 3, 2


def _mm_world():
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mm_world.py")
  spec = importlib.util.spec_from_file_location("mm_world", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(variant=None):
  variant = variant or "tiny_early"
  if variant not in VARIANTS:
    raise ValueError(f"configs/mm_world_nmm.py: unknown variant {variant!r}; valid: "
                     f"{', '.join(VARIANTS)}")
  if variant.startswith("scaling_"):
    return _scaling(variant.removeprefix("scaling_"))
  c = _mm_world().get_config("tiny")
  with c.unlocked():
    c.model.modalities = mlc.ConfigDict(
        {m: c.model.modalities[m] for m in ("image", "text")})
    if variant == "tiny_late":
      c.model.fusion = dict(type="late_decoder", decoder_modality="text", encoder_depth=1)
    pp = c.tasks.default.data.preprocess
    c.tasks.default.data.preprocess = mlc.ConfigDict({m: pp[m] for m in ("image", "text")})
    c.tasks.default.objectives = mlc.ConfigDict(dict(
        caption=dict(type="next_token", modality="text", context=("image",), weight=1.0,
                     tied=False, z_loss=1e-4)))
    if variant.endswith(("_packed", "_interleaved")):
      kind = "interleaved" if variant.endswith("_interleaved") else "pairs"
      scale = 1.5 if kind == "interleaved" else 1  # documents of 2 pairs: 2 or 3 a row
      c.tasks.default.data.packing = mlc.ConfigDict(dict(
          length=int(PACKED_TEXT * scale), images=int(PACKED_IMAGES * scale), kind=kind,
          pairs_per_document=PAIRS_PER_DOCUMENT))
    c.evals = mlc.ConfigDict(dict(
        loss=dict(type="loss", task="default", split="test", every_steps=c.total_steps),
        # Greedy captions from the image alone (BOS as the prompt): exact match, per field.
        captioning=dict(type="captioning", task="default", split="test",
                        every_steps=c.total_steps, max_examples=64),
        # The control: the same captions scored against other examples' references.
        captioning_shuffled=dict(type="captioning", task="default", split="test",
                                 every_steps=c.total_steps, max_examples=64, shuffle=True)))
  return c


def _scaling(family: str):
  """A sweep's base: one loss to fit, no generation evals (they would dominate tiny runs)."""
  c = get_config("tiny_late" if family == "late" else "tiny_early")
  with c.unlocked():
    c.total_steps, c.log_every_steps, c.eval_batch_size, c.progress = 200, 50, 256, False
    c.tasks.default.data.name = "mm_world/default"  # the image and caption decoded, no more
    c.tasks.default.batch_size = 32
    c.optim.warmup_steps = 20
    c.checkpoint.every_steps = c.total_steps
    c.evals = mlc.ConfigDict(dict(loss=dict(type="loss", task="default", split="validation",
                                            every_steps=c.total_steps)))
    if family == "early_moe":  # NMM's setting (mmjax/models/ffn/moe/config.py)
      c.model.ffn = mlc.ConfigDict(dict(type="moe", num_experts=4, top_k=1, routing="dropless",
                                        lb_loss_weight=0.01))
  return c
