"""Native multimodal models (NMM, Shukor et al. 2025) on the built-in world: captions
generated from images by next-token prediction.

Full-size variants (mm_world/default; figures and the default's build-to-eval time in
docs/fusion_moe.md, "NMM recipe"):
  early (default)  early fusion as a prefix-LM: the image a bidirectional prefix, the
                   caption causal after it; trains on image-caption pairs (task `default`)
                   and, a quarter of the steps, on packed interleaved documents of 2
                   (image, caption) pairs (task `interleaved`)
  late             NMM's late fusion (`late_decoder`: an image encoder whose projected
                   outputs prefix a causal decoder); pairs only, because packing refuses
                   every trunk but early fusion
  early_moe        early with NMM's MoE: top-1, dropless, load-balance loss 0.01 (8 experts
                   in every second block)
Tiny variants (mm_world/tiny, seconds; what the tests drive):
  tiny_early, tiny_late   as above, on pairs alone
  tiny_early_moe          tiny_early with NMM's MoE (4 experts in every block)
  tiny_early_packed       tiny_early with image-caption pairs packed several to a row
  tiny_early_interleaved  tiny_early on packed interleaved documents: 2 (image, caption)
              pairs each, the images inline before their captions (NMM's interleaved data)
  scaling_early, scaling_late, scaling_early_moe
              the bases of the NMM scaling sweeps (configs/sweeps/nmm_*.py): the tiny model on
              the default world (batch 32), scored on the validation loss alone; early_moe is
              early fusion with NMM's MoE (top-1, dropless, load balance 0.01, 4 experts).
              All three share one target, whose floor is 0.041 nats per caption token
              (mmjax/scaling/caption_floor.next_token_floor("image"): the template).
One objective: next_token over the caption with the image as context.
Evaluators: the test-split loss (`default/loss/caption/loss`, its perplexity, token accuracy)
and captioning (`default/captioning/...`: per-token loss and perplexity, and greedy captions
generated from the image: exact match and per-field accuracy). The full variants prompt
`captioning` with BOS and the caption's first byte, which names its template (mm_world
draws the template independently of the image, so BOS alone caps exact match near the
template's share); `captioning_bos` is the BOS-only figure and `captioning_shuffled` the
control (captions scored against other examples' references).
"""
import importlib.util
import os

import ml_collections as mlc

VARIANTS = ("tiny_early", "tiny_late", "tiny_early_packed", "tiny_early_interleaved",
            "scaling_early", "scaling_late", "scaling_early_moe",
            "early", "late", "early_moe", "tiny_early_moe")
FULL = ("early", "late", "early_moe")
# Packed rows (mmjax/data/packing.py): text tokens per row, image slots per row, and for the
# interleaved documents the (image, caption) pairs of one document.
PACKED_TEXT, PACKED_IMAGES, PAIRS_PER_DOCUMENT = 96, 3, 2
# The full-size variants (sized by the runs in docs/fusion_moe.md).
FULL_WIDTH, FULL_DEPTH, FULL_STEPS, FULL_BATCH = 128, 4, 400, 128
INTERLEAVED_SHARE = 0.25  # of the steps (schedule "weighted"); the rest train on pairs


def _mm_world():
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mm_world.py")
  spec = importlib.util.spec_from_file_location("mm_world", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(variant=None):
  variant = variant or "early"
  if variant not in VARIANTS:
    raise ValueError(f"configs/mm_world_nmm.py: unknown variant {variant!r}; valid: "
                     f"{', '.join(VARIANTS)}")
  if variant.startswith("scaling_"):
    return _scaling(variant.removeprefix("scaling_"))
  if variant in FULL:
    return _full_recipe(get_config("tiny_late" if variant == "late" else "tiny_early"),
                        variant)
  c = _mm_world().get_config("tiny")
  with c.unlocked():
    c.model.modalities = mlc.ConfigDict(
        {m: c.model.modalities[m] for m in ("image", "text")})
    if variant == "tiny_early_moe":
      c.model.ffn = mlc.ConfigDict(_nmm_moe(num_experts=4, every=1))
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


def _nmm_moe(num_experts, every):
  """NMM's MoE (Shukor et al. 2025): top-1 token choice without drops, load balancing 0.01.
  Dropless, because capacity drops or expert choice would let a caption token's routing
  depend on tokens after it (refused for causal trunks and for packed rows)."""
  return dict(type="moe", every=every, num_experts=num_experts, top_k=1, routing="dropless",
              lb_loss_weight=0.01, z_loss_weight=0.001)


def _full_recipe(c, variant):
  """The full-size variants: mm_world's default world and trunk; training steps split
  between image-caption pairs (`default`) and packed interleaved documents (`interleaved`,
  early fusion only: packing refuses every other trunk, so `late` trains on pairs alone).
  Sized so `early` finishes build-to-eval in <= 15 min on the 2-core CPU (docs/fusion_moe.md)."""
  with c.unlocked():
    c.model.update(dict(width=FULL_WIDTH, depth=FULL_DEPTH, num_heads=4,
                        mlp_dim=4 * FULL_WIDTH, embed_dim=FULL_WIDTH))
    if variant == "late":
      c.model.fusion.encoder_depth = FULL_DEPTH // 2
    if variant == "early_moe":
      c.model.ffn = mlc.ConfigDict(_nmm_moe(num_experts=8, every=2))
    c.total_steps, c.log_every_steps, c.eval_batch_size = FULL_STEPS, 50, 256
    c.progress = True
    c.optim.update(dict(learning_rate=2e-3, warmup_steps=50))
    c.checkpoint.every_steps = c.total_steps
    task = c.tasks.default
    task.data.name = "mm_world/default"
    task.batch_size = FULL_BATCH
    if variant != "late":
      task.weight = 1.0 - INTERLEAVED_SHARE
      docs = task.copy_and_resolve_references()
      docs.weight, docs.batch_size = INTERLEAVED_SHARE, FULL_BATCH // 4  # ~3.8 pairs a row
      docs.data.packing = mlc.ConfigDict(dict(
          length=int(PACKED_TEXT * 1.5), images=int(PACKED_IMAGES * 1.5),
          kind="interleaved", pairs_per_document=PAIRS_PER_DOCUMENT))
      c.tasks.interleaved = docs
    _full_evals(c)
  return c


def _full_evals(c):
  """The whole test split. `captioning` prompts with BOS and the caption's first byte,
  which names the template (mm_world draws it independently of the image; docs/fusion_moe.md
  says what that first byte leaks); `captioning_bos` is the BOS-only figure beside it."""
  every = c.total_steps
  c.evals = mlc.ConfigDict(dict(
      loss=dict(type="loss", task="default", split="test", every_steps=every),
      captioning=dict(type="captioning", task="default", split="test", every_steps=every,
                      prompt_tokens=2),
      # Beside it, on a quarter of the split (each captioning pass decodes every example):
      captioning_bos=dict(type="captioning", task="default", split="test",
                          every_steps=every, prompt_tokens=1, max_examples=256),
      captioning_shuffled=dict(type="captioning", task="default", split="test",
                               every_steps=every, prompt_tokens=2, shuffle=True,
                               max_examples=256)))
