"""4M-style multimodal masking against per-modality masking, then the same short finetune.

Each variant pretrains one model for 300 steps on mm_world/default with one masking scheme
over image, audio, video and text, then finetunes it (all weights) for 100 steps on the
20-way label from video + audio; the classification evaluator scores the test split every
20 steps (the finetune curve). Same model, data, batch, optimizer and step counts in every
arm: only the pretraining objective differs. Results: docs/seed_methods.md (the 4M section); these variants are also in configs/mm_world_seed_methods.py.

Variants (`fourm_variants()`; `tiny_*`: seconds on mm_world/tiny, what the tests drive):
  fourm     multimodal_masked: 4M's Dirichlet split of a 24-token input budget and a
            24-token target budget over the four modalities (objectives/multimodal_masked.py)
  masked    the `masked` objective on each modality alone (half of its tokens hidden):
            per-modality masking, the baseline
  scratch   no pretraining: the finetune steps alone (what pretraining adds)
At 100 finetune steps every arm is near 1.0 on this label (measured), so the early points
of the curve are where the pretraining can show.
"""
import os

import ml_collections as mlc

from mmjax.config.recipe import import_file

_MM_WORLD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mm_world.py")

_MODALITIES = ("image", "audio", "video", "text")


def _pretrain_objectives(arm: str) -> mlc.ConfigDict:
  if arm == "fourm":
    return mlc.ConfigDict(dict(fourm=dict(
        type="multimodal_masked", modalities=_MODALITIES, input_budget=24, target_budget=24,
        input_alpha=(1.0,), target_alpha=(1.0,), decoder_depth=1)))
  return mlc.ConfigDict({f"mae_{m}": dict(type="masked", modality=m, ratio=0.5)
                         for m in _MODALITIES})


def _mm_world_tiny() -> mlc.ConfigDict:
  """The main recipe's tiny variant (configs are files, not a package: loaded by path)."""
  return import_file(_MM_WORLD, "recipe").get_config("tiny")


def _variant(arm: str, tiny: bool) -> mlc.ConfigDict:
  c = _mm_world_tiny()
  c.unlock()
  pretrain = 0 if arm == "scratch" else (6 if tiny else 300)
  finetune = 6 if tiny else 100
  c.total_steps = pretrain + finetune
  c.log_every_steps = 3 if tiny else 50
  c.eval_batch_size = 64 if tiny else 256
  c.model.update(dict(width=32 if tiny else 64, depth=1 if tiny else 2, num_heads=2,
                      mlp_dim=64 if tiny else 128))
  data = c.tasks.default.data
  if not tiny:
    data.name = "mm_world/default"
  finetune_task = mlc.ConfigDict(dict(
      data=data, batch_size=16 if tiny else 32, microbatches=1, weight=1.0,
      objectives=dict(av_label=dict(type="classification", inputs=("video", "audio"),
                                    label="label", num_classes=20, weight=1.0))))
  c.tasks = mlc.ConfigDict({"finetune": finetune_task})
  if pretrain:
    c.tasks.pretrain = mlc.ConfigDict(dict(
        data=data, batch_size=16 if tiny else 32, microbatches=1, weight=1.0,
        objectives=_pretrain_objectives(arm)))
  # Every pretraining step first, then every finetune step.
  c.schedule = mlc.ConfigDict(dict(
      type="sequence", cycle=("pretrain",) * pretrain + ("finetune",) * finetune))
  c.optim.warmup_steps = 2 if tiny else 20
  # A constant rate after warmup: a cosine over pretraining + finetuning would leave the
  # finetune steps almost no learning rate (measured: 50 such steps stayed at chance).
  c.optim.end_lr_fraction = 1.0
  c.checkpoint.every_steps = c.total_steps
  # Test accuracy every 20 steps: the finetune curve, not only its end. At its end (100
  # steps) every arm is near 1.0 on this label (measured), so the early points are where
  # the pretraining can show.
  c.evals = mlc.ConfigDict(dict(classification=dict(
      type="classification", task="finetune", objective="av_label", split="test",
      every_steps=c.total_steps if tiny else 20)))
  c.lock()
  return c


def fourm_variants() -> dict[str, mlc.ConfigDict]:
  """{variant name: recipe}: each arm, and its tiny_ form."""
  return {(("tiny_" if tiny else "") + arm): _variant(arm, tiny)
          for arm in ("fourm", "masked", "scratch") for tiny in (False, True)}


def get_config(variant=None):
  variants = fourm_variants()
  variant = variant or "tiny_fourm"
  if variant not in variants:
    raise ValueError(f"configs/mm_world_fourm_variants.py: unknown variant {variant!r}; "
                     f"valid: {', '.join(sorted(variants))}")
  return variants[variant]
