"""Alternating-gradient multi-task pretraining (IMP's AGD) on the built-in world (mm_world).

One early-fusion model; every step trains ONE task -- its own data, modalities, objective
and input resolution -- with its own optimizer update, in the deterministic weighted
schedule's order (each task's share within 1/n of its weight after n steps). Every
task's step is compiled once, at start-up. Six tasks:

  t2i_32  text<->image contrastive, 32x32 images (the model's reference size)
  t2i_16  text<->image contrastive, 16x16 images (same temperature head; the image
          position table is interpolated to the 2x2 grid)
  av_4f   video+audio classification (20 classes), 4-frame clips
  av_2f   the same on 2-frame clips (one tubelet in time; same classifier)
  a2t     audio<->text contrastive (audio tells the shape and the motion only)
  mlm     masked caption modelling with the image as context

Variants:
  default  laptop-scale: the main recipe's model (width 128, depth 4) on mm_world/default.
  tiny     seconds on a laptop CPU; what the tests drive through the real trainer.
The final eval reports every task: its own validation loss, plus retrieval (t2i_32,
t2i_16, a2t) and classification (av_4f, av_2f).
"""
import importlib.util
import os

import ml_collections as mlc

_MM_WORLD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mm_world.py")

# The tasks: (objectives, the preprocess ops they need and their resolutions, weight).
# Their seed offsets are their index here: tasks on one dataset read it in different orders.
_TASKS = {
    "t2i_32": (dict(t2i=dict(type="contrastive", a="text", b="image", kind="softmax")),
               dict(image=32, text=None, content_id=None), 2.0),
    "t2i_16": (dict(t2i=dict(type="contrastive", a="text", b="image", kind="softmax")),
               dict(image=16, text=None, content_id=None), 1.0),
    "av_4f": (dict(av=dict(type="classification", inputs=("video", "audio"), label="label",
                           num_classes=20)),
              dict(video=4, audio=None, label=None), 1.0),
    "av_2f": (dict(av=dict(type="classification", inputs=("video", "audio"), label="label",
                           num_classes=20)),
              dict(video=2, audio=None, label=None), 1.0),
    "a2t": (dict(a2t=dict(type="contrastive", a="audio", b="text", kind="softmax")),
            dict(audio=None, text=None, content_id=None), 1.0),
    "mlm": (dict(caption_mlm=dict(type="masked", modality="text", context=("image",),
                                  ratio=0.5)),
            dict(image=32, text=None), 1.0),
}
# Evaluators beyond every task's validation loss: task -> {name: config}.
_EVALS = {
    "t2i_32": dict(retrieval=dict(type="retrieval", a="text", b="image")),
    "t2i_16": dict(retrieval=dict(type="retrieval", a="text", b="image")),
    "a2t": dict(retrieval=dict(type="retrieval", a="audio", b="text")),
    "av_4f": dict(classification=dict(type="classification", objective="av")),
    "av_2f": dict(classification=dict(type="classification", objective="av")),
}


def _mm_world_recipe():
  spec = importlib.util.spec_from_file_location("_mm_world_recipe", _MM_WORLD)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _task(base_data, objectives: dict, resolution: dict, weight: float, batch_size: int,
          seed_offset: int):
  data = base_data.copy_and_resolve_references()
  kept = mlc.ConfigDict()
  for key, size in resolution.items():
    op = data.preprocess[key]
    if key == "image" and size is not None:
      op.size = size
    if key == "video" and size is not None:
      op.frames = size
    kept[key] = op
  data.preprocess = kept
  return mlc.ConfigDict(dict(data=data, batch_size=batch_size, microbatches=1, weight=weight,
                             seed_offset=seed_offset, lr_multiplier=1.0, objectives=objectives))


def get_config(variant=None):
  variant = variant or "default"
  if variant not in ("default", "tiny"):
    raise ValueError(f"configs/mm_world_agd.py: unknown variant {variant!r}; valid: default, tiny")
  tiny = variant == "tiny"
  c = _mm_world_recipe().get_config(variant)  # model, optimizer, mesh, sharding, run settings
  base_data = c.tasks.default.data
  c.total_steps = 24 if tiny else 1200
  c.log_every_steps = 6 if tiny else 50
  c.checkpoint.every_steps = 12 if tiny else 600
  c.optim.warmup_steps = 2 if tiny else 100
  batch = 16 if tiny else 128
  c.tasks = mlc.ConfigDict({
      name: _task(base_data, objectives, resolution, weight, batch, offset)
      for offset, (name, (objectives, resolution, weight)) in enumerate(_TASKS.items())})
  every = c.total_steps
  evals = {}
  for name in _TASKS:
    evals[f"{name}_loss"] = dict(type="loss", task=name, split="validation", every_steps=every)
    for ename, ev in _EVALS.get(name, {}).items():
      evals[f"{name}_{ename}"] = dict(ev, task=name, every_steps=every)
  c.evals = mlc.ConfigDict(evals)
  return c
