"""Per-family accounting of a run, as the NMM study counts it (Shukor et al. 2025).

For late fusion (`late_decoder`: modality encoders feeding a causal decoder) NMM counts
    C = 6 (N_enc D_enc + N_dec D_dec)
because the encoder's weights touch only the encoded modality's tokens:
  N_enc  the encoders' parameters: their blocks, final norms and connectors, and the patch
         embedders of the encoded modalities
  N_dec  every other parameter (decoder blocks, text embedding, heads)
  D_enc  tokens of the encoded modalities (image patches)
  D_dec  tokens the decoder runs over: the encoded prefix plus the text
With early fusion every parameter sees every token: N_enc = 0 and C = 6 N D. `flops_6nd`
(6 N D with N = the active parameters, D = all input tokens) is given beside it for every
family. With MoE, N counts the parameters a token uses (the trainer's `active_params`):
the experts it is not routed to do no work for it. Only the decoder's inactive experts are
subtracted; a late-fusion MoE's encoder experts would need the same (no sweep has one).
Both conventions leave out attention's L^2 term; the trainer's `perf/flops` (the `flops`
column) counts what runs, attention and heads included (mmjax/perf/flops.py).

A run's family is the sweep's `family` tag when it has one, else the fusion type, with
"_moe" appended for a mixture-of-experts feed-forward.
"""
from __future__ import annotations

import math


def encoded_modalities(exp, task: str) -> tuple[str, ...]:
  """The modalities of `task` that have an encoder of their own (late_decoder only)."""
  fusion = exp.model.fusion
  if not hasattr(fusion, "decoder_modality"):
    return ()
  used = dict.fromkeys(m for o in exp.tasks[task].objectives for m in o.modalities)
  return tuple(m for m in used if m != fusion.decoder_modality)


def _is_encoder(path: tuple, encoded: tuple[str, ...]) -> bool:
  names = tuple(str(getattr(p, "key", p)) for p in path)
  if names[:1] == ("embedders",):
    return names[1] in encoded
  return names[:1] == ("trunk",) and names[1] in ("encoders", "encoder_lns", "connectors") \
      and names[2] in encoded


def param_split(exp, task: str = "default") -> dict:
  """{encoder, decoder}: parameter counts, from abstract shapes (allocates nothing)."""
  import jax
  from flax import nnx
  from mmjax.models.model import build_model
  params = nnx.state(nnx.eval_shape(lambda: build_model(exp.model, 0)), nnx.Param)
  encoded = encoded_modalities(exp, task)
  split = dict(encoder=0, decoder=0)
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    split["encoder" if _is_encoder(path, encoded) else "decoder"] += math.prod(leaf.shape)
  return split


def family_of(exp) -> str:
  from mmjax.scaling.sweep import fusion_of
  fusion = fusion_of(exp)
  family = "late" if fusion == "late_decoder" else fusion
  return family + ("_moe" if type(exp.model.ffn).__name__.lower().startswith("moe") else "")


def family_counts(exp, examples: float, task: str = "default") -> dict:
  """The results.csv accounting columns of a run that saw `examples` examples of `task`."""
  specs = exp.model.modalities
  used = dict.fromkeys(m for o in exp.tasks[task].objectives for m in o.modalities)
  per_example = {m: specs[m].num_tokens(specs[m].shape) for m in used}
  encoded = encoded_modalities(exp, task)
  split = param_split(exp, task)
  d_enc = examples * sum(per_example[m] for m in encoded)
  d_all = examples * sum(per_example.values())
  from mmjax.perf import flops as flops_lib
  total = split["encoder"] + split["decoder"]
  active = flops_lib.active_param_count(exp.model, total)
  dec_active = split["decoder"] - (total - active)
  return dict(family=family_of(exp), params_encoder=float(split["encoder"]),
              params_decoder=float(split["decoder"]), active_params=float(active),
              tokens_encoder=d_enc, tokens_decoder=d_all,
              flops_nmm=6.0 * (split["encoder"] * d_enc + dec_active * d_all),
              flops_6nd=6.0 * active * d_all)


def per_example(exp) -> bool:
  """Whether the counts here apply: one task whose batches are examples, not packed rows
  (a packed row's tokens and shapes are the packer's, recorded by the trainer)."""
  return len(exp.tasks) == 1 and not next(iter(exp.tasks.values())).data.get("packing")


def trainer_flops(exp, steps: int, task: str = "default") -> float:
  """The trainer's analytic count (`perf/flops`) after `steps` steps of an unpacked task:
  the very function the trainer calls, on the batch shapes the recipe gives."""
  from mmjax.perf import flops as flops_lib
  t = exp.tasks[task]
  if t.data.get("packing"):
    raise ValueError(f"task {task!r} packs its examples: its step shapes are the packer's; "
                     f"read perf/flops from the run's metrics.jsonl instead")
  shapes = {m: (t.batch_size, *s.shape) for m, s in exp.model.modalities.items()}
  return steps * flops_lib.train_step_flops(exp.model, t.objectives, shapes, t.microbatches,
                                            t.settings.token_drop)
