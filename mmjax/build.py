"""From a validated config to the model spec and each task's objectives."""
from __future__ import annotations

from mmjax import objectives as objectives_lib
from mmjax.models.embedders import ModalitySpec
from mmjax.models.model import ModelSpec


def modality_specs(model_cfg) -> dict[str, ModalitySpec]:
  return {name: ModalitySpec(kind=m.kind, shape=tuple(m.shape), patch=tuple(m.get("patch", ())),
                             vocab_size=int(m.get("vocab_size", 0)))
          for name, m in model_cfg.modalities.items()}


def task_objectives(config) -> dict[str, tuple]:
  kinds = {n: m.kind for n, m in config.model.modalities.items()}
  return {t: objectives_lib.make_objectives(task.objectives, kinds)
          for t, task in config.tasks.items()}


def compute_dtype(name: str) -> str:
  """'auto' is bfloat16 on accelerators and float32 on CPU (where bf16 matmuls are slower)."""
  if name != "auto":
    return name
  import jax
  return "float32" if jax.default_backend() == "cpu" else "bfloat16"


def model_spec(config, objectives: dict[str, tuple] | None = None) -> ModelSpec:
  """The model holds the heads of every task's objectives (tasks share one model).

  objectives: task_objectives(config), when the caller has built them already.
  """
  m = config.model
  objectives = objectives if objectives is not None else task_objectives(config)
  all_objectives = [o for objs in objectives.values() for o in objs]
  return ModelSpec(
      modalities=modality_specs(m), width=m.width, depth=m.depth, num_heads=m.num_heads,
      mlp_dim=m.mlp_dim, fusion=m.fusion, embed_dim=m.embed_dim, posemb=m.posemb,
      posemb_std=m.posemb_std, dtype=compute_dtype(m.dtype), param_dtype=m.param_dtype,
      remat=m.get("remat", "none"),  # absent from configs written before remat existed
      **objectives_lib.heads_for(all_objectives))
