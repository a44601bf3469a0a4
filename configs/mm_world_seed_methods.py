"""The seed paper list's fusion methods on the built-in world, each beside its baseline
(measured in docs/seed_methods.md).

Variants (each also as `tiny_<name>`, seconds-sized, for tests):
  gram            GRAM: text aligned with image, audio and video at once by the volume they
                  span (mmjax/objectives/gram.py); 4 modalities, n = 4.
  gram_pairwise   its baseline: the sum of the pairwise InfoNCE losses text-image,
                  text-audio and text-video.
                  Both are scored by retrieval text -> (image, audio, video) ranked by
                  volume, and text -> image ranked by cosine.
  lmf             LMF: the 20-way label from video + audio through a low-rank tensor
                  fusion head (rank 4) on a late-fusion trunk (mmjax/models/fusion_heads.py).
  lmf_concat_mlp  its baseline: the same trunk, with concatenation + MLP as the head.
  deq             DEQ fusion: one block's fixed point, solved by Anderson acceleration with an
                  implicit backward pass (mmjax/models/trunks/deq.py), on the matching task;
  deq_stacked     its baseline: the early trunk of equal parameters.
  fourm           4M: multimodal masked modelling with Dirichlet token budgets, then a
                  finetune on the label (mmjax/objectives/multimodal_masked.py);
  masked          its baseline: per-modality masking, then the same finetune;
  scratch         the finetune alone (configs/mm_world_fourm_variants.py holds all three).
"""
import os

from mmjax.config.recipe import import_file


def _sibling(filename: str):
  """A recipe module next to this one (recipes are files, not a package)."""
  return import_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), filename), "recipe")


def _mm_world():
  return _sibling("mm_world.py")


def _base(tiny: bool, steps: int, batch: int):
  """mm_world at a size that trains in minutes on the 2-core CPU: a narrow trunk."""
  c = _mm_world().get_config("tiny" if tiny else "default")
  if not tiny:
    c.model.update(dict(width=64, depth=2, num_heads=2, mlp_dim=256, embed_dim=64))
    c.total_steps = steps
    c.log_every_steps = 25
    c.tasks.default.batch_size = batch
    c.optim.warmup_steps = 20
  c.checkpoint.every_steps = c.total_steps
  with c.evals.unlocked():
    for key in list(c.evals):
      del c.evals[key]
  return c


def _gram(tiny: bool, pairwise: bool):
  c = _base(tiny, steps=300, batch=64)
  with c.tasks.default.data.preprocess.unlocked():
    del c.tasks.default.data.preprocess["label"]
  others = ("image", "audio", "video")
  if pairwise:
    objectives = {f"text_{m}": dict(type="contrastive", a="text", b=m, kind="softmax",
                                    weight=1.0) for m in others}
  else:
    objectives = dict(gram=dict(type="gram", anchor="text", others=others, weight=1.0))
  c.tasks.default.objectives = objectives
  every = c.total_steps
  c.evals.update(dict(
      retrieval_volume=dict(type="retrieval", task="default", a="text", b="image",
                            b_with=("audio", "video"), rank_by="volume", every_steps=every),
      retrieval_image=dict(type="retrieval", task="default", a="text", b="image",
                           every_steps=every)))
  return c


def _lmf(tiny: bool, head: str):
  # 50 steps: the label saturates (audio alone tells shape and motion): at 120 steps
  # LMF's test accuracy was 0.994 (docs/seed_methods.md), which cannot tell heads apart.
  c = _base(tiny, steps=50, batch=32)
  c.model.fusion = dict(type="late", share_weights=False)
  with c.tasks.default.data.preprocess.unlocked():
    for key in ("image", "text"):
      del c.tasks.default.data.preprocess[key]
  with c.model.modalities.unlocked():
    for key in ("image", "text"):
      del c.model.modalities[key]
  label = dict(type="classification", inputs=("video", "audio"), label="label",
               num_classes=20, weight=1.0, logits=head)
  if head == "lmf":
    label["rank"] = 4
  c.tasks.default.objectives = dict(av_label=label)
  c.evals.update(dict(classification=dict(type="classification", task="default",
                                          objective="av_label", every_steps=c.total_steps)))
  return c


def _gram_variants():
  return {"gram": lambda tiny: _gram(tiny, pairwise=False),
          "gram_pairwise": lambda tiny: _gram(tiny, pairwise=True)}


def _lmf_variants():
  return {"lmf": lambda tiny: _lmf(tiny, "lmf"),
          "lmf_concat_mlp": lambda tiny: _lmf(tiny, "concat_mlp")}


def _fourm_variants():
  """4M masking, per-modality masking and no pretraining (configs/mm_world_fourm_variants.py)."""
  recipes = _sibling("mm_world_fourm_variants.py").fourm_variants()
  return {n: (lambda tiny, n=n: recipes[f"tiny_{n}" if tiny else n])
          for n in ("fourm", "masked", "scratch")}


def _deq_variants():
  """DEQ fusion and the stacked early trunk of equal parameters
  (configs/mm_world_deq_variants.py)."""
  recipes = _sibling("mm_world_deq_variants.py").deq_variants()
  return {n: (lambda tiny, n=n: recipes[f"tiny_{n}" if tiny else n])
          for n in ("deq", "deq_stacked")}


def _variants():
  builders = {**_gram_variants(), **_lmf_variants(), **_deq_variants(),
              **_fourm_variants()}
  return {**builders, **{f"tiny_{n}": b for n, b in builders.items()}}


def get_config(variant=None):
  variants = _variants()
  if variant not in variants:
    raise ValueError(f"configs/mm_world_seed_methods.py: unknown variant {variant!r}; "
                     f"valid: {', '.join(variants)}")
  return variants[variant](variant.startswith("tiny_"))
