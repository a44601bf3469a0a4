"""Native multimodal models (NMM, Shukor et al. 2025) on the built-in world: captions
generated from images by next-token prediction.

Variants (so far only the tiny ones; issue 16's item 7 adds the full recipe, MoE and the
interleaved data):
  tiny_early  early fusion as a prefix-LM: the image a bidirectional prefix, the caption
              causal after it
  tiny_late   NMM's late fusion (`late_decoder`): an image encoder whose projected outputs
              are the prefix of a causal decoder over the caption
One task, one objective: next_token over the caption with the image as context.
Evaluators: the test-split loss (`default/loss/caption/loss`, its perplexity, token accuracy)
and captioning (`default/captioning/...`: per-token loss and perplexity, and greedy captions
generated from the image: exact match and per-field accuracy).
"""
import importlib.util
import os

import ml_collections as mlc

VARIANTS = ("tiny_early", "tiny_late")


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
    c.evals = mlc.ConfigDict(dict(
        loss=dict(type="loss", task="default", split="test", every_steps=c.total_steps),
        # Greedy captions from the image alone (BOS as the prompt): exact match, per field.
        captioning=dict(type="captioning", task="default", split="test",
                        every_steps=c.total_steps, max_examples=64),
        # The control: the same captions scored against other examples' references.
        captioning_shuffled=dict(type="captioning", task="default", split="test",
                                 every_steps=c.total_steps, max_examples=64, shuffle=True)))
  return c
