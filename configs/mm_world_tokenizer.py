"""A learned image tokenizer for mm_world: an FSQ autoencoder trained by the usual trainer.

The tokenizer is a head of the model (mmjax/models/image_tokenizer.py), trained by the
`fsq_autoencoder` objective alone; the trunk is built (a model has one) but makes no pass,
so it is kept as small as a model may be. Its checkpoint is an ordinary Orbax checkpoint,
and `python -m mmjax.pretokenize --tokenizer WORKDIR ...` turns a dataset's images into its
token ids (docs/discrete_tokens.md).

Variants:
  default  levels (8, 5, 5, 5): 1,000 codes; 32x32 images at stride 4: 64 tokens per image;
           trained 600 steps at batch 64 on mm_world/default (40,960 training scenes).
  tiny     the same tokenizer, narrower, a few steps on mm_world/tiny: what tests run.
"""
import os

import ml_collections as mlc

from mmjax.config.recipe import import_file


def _base():
  return import_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), "mm_world.py"),
                     "recipe")


def _tokenizer_objective(tiny: bool):
  return dict(type="fsq_autoencoder", modality="image", levels=(8, 5, 5, 5), downsample=4,
              channels=(16, 32) if tiny else (32, 64), weight=1.0)


def get_config(variant=None):
  variant = variant or "default"
  if variant not in ("default", "tiny"):
    raise ValueError(f"configs/mm_world_tokenizer.py: unknown variant {variant!r}; "
                     f"valid: default, tiny")
  tiny = variant == "tiny"
  c = _base().get_config("tiny" if tiny else "default")
  c.total_steps = 30 if tiny else 600
  c.log_every_steps = 10 if tiny else 25
  c.eval_batch_size = 64 if tiny else 256
  # The trunk makes no pass (the tokenizer is a head beside it): the smallest valid one.
  for key, value in dict(width=8, depth=1, num_heads=1, mlp_dim=8, embed_dim=8).items():
    c.model[key] = value
  c.model.modalities = mlc.ConfigDict(dict(
      image=dict(kind="image", shape=(32, 32, 3), patch=(8,))))
  data = c.tasks.default.data
  data.preprocess = mlc.ConfigDict(dict(
      image=dict(op="image", **{"from": "image"}, size=32)))
  c.tasks.default.batch_size = 16 if tiny else 64
  c.tasks.default.objectives = mlc.ConfigDict(dict(
      tokenizer=_tokenizer_objective(tiny)))
  c.optim.learning_rate = 3e-3 if tiny else 2e-3
  c.optim.warmup_steps = 3 if tiny else 50
  c.optim.weight_decay = 0.0  # a reconstruction model: nothing to regularise toward zero
  c.checkpoint.every_steps = 15 if tiny else 300
  every = c.total_steps
  c.evals = mlc.ConfigDict(dict(
      tokenizer=dict(type="tokenizer", task="default", objective="tokenizer", split="test",
                     every_steps=every),
      loss=dict(type="loss", task="default", split="validation", every_steps=every),
  ))
  return c
