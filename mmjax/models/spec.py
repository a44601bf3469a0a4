"""ModelSpec: everything needed to build the model, read once from `config.model`.

The defaults below are the only model defaults; `spec_from_config` reads each key of a
recipe's `model` section exactly once (unknown keys are errors), the trunk and the
feed-forward layer parse their own sections through their registries, and the checks live
in `__post_init__`. Heads are not set by recipes: they follow from the objectives.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from mmjax.config.registry import FieldError, check, parse_dataclass
from mmjax.models.embedders import ModalitySpec
from mmjax.models.ffn import FFNS
from mmjax.models.ffn.mlp import MlpConfig
from mmjax.models.fusion_heads import FusedHead
from mmjax.models.image_tokenizer import FsqSpec
from mmjax.models.trunks import TRUNKS
from mmjax.models.trunks.early import EarlyFusionConfig
from mmjax.models.trunks.remat import CHOICES as REMATS

POSEMBS = ("learn", "sincos")
POOLS = ("mean", "cls")
DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class Heads:
  """The output heads the objectives train (see mmjax.objectives.heads_for)."""
  class_heads: Mapping[str, int] = dataclasses.field(default_factory=dict)  # head -> classes
  # class heads (of `class_heads`) that fuse per-modality pooled vectors themselves (LMF,
  # concat + MLP) instead of a linear map of the joint vector
  fused_heads: Mapping[str, FusedHead] = dataclasses.field(default_factory=dict)
  projections: tuple[str, ...] = ()         # modalities with a contrastive projection
  contrastive_scales: tuple[str, ...] = ()  # learned temperatures, by head name
  # decoder head name -> the modality it predicts (a masked objective's head defaults to
  # its modality's name; two objectives share a decoder only if they name the same head)
  decoders: Mapping[str, str] = dataclasses.field(default_factory=dict)
  # decoder heads (of `decoders`, text only) that reuse their modality's embedding table
  # as the unembedding: no parameters of their own
  tied: tuple[str, ...] = ()
  # query decoders (query_decoder.py, 4M's decoder) by name -> their depth in blocks
  query_decoders: Mapping[str, int] = dataclasses.field(default_factory=dict)
  # learned image tokenizers (image_tokenizer.py, FSQ autoencoders) by name: a head beside
  # the trunk, trained by the fsq_autoencoder objective
  tokenizers: Mapping[str, FsqSpec] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  modalities: Mapping[str, ModalitySpec]
  width: int = 128
  depth: int = 4
  num_heads: int = 4
  mlp_dim: int = 512
  embed_dim: int = 128
  posemb: str = "learn"
  posemb_std: float = 0.5
  dtype: str = "auto"  # compute dtype: "auto" = bfloat16 on accelerators, float32 on CPU
  param_dtype: str = "float32"
  remat: str = "none"  # per block: none | full | save_matmuls (recompute the rest)
  # How a modality's tokens become one vector: masked mean of its tokens, or a learned
  # per-modality CLS token prepended to them (its output).
  pool: str = "mean"
  fusion: Any = EarlyFusionConfig()  # a trunk config (mmjax.models.trunks)
  ffn: Any = MlpConfig()             # a feed-forward config (mmjax.models.ffn)
  heads: Heads = Heads()

  def __post_init__(self):
    for f in ("width", "depth", "num_heads", "mlp_dim", "embed_dim"):
      v = getattr(self, f)
      check(isinstance(v, int) and not isinstance(v, bool) and v > 0, f,
            "must be a positive integer")
    check(self.width % self.num_heads == 0, "num_heads",
          f"model.width={self.width} is not divisible by num_heads={self.num_heads}")
    check(self.posemb in POSEMBS, "posemb", f"valid: {', '.join(map(repr, POSEMBS))}")
    check(self.dtype in DTYPES + ("auto",), "dtype",
          f"valid: {', '.join(map(repr, DTYPES + ('auto',)))}")
    check(self.param_dtype in DTYPES, "param_dtype", f"valid: {', '.join(map(repr, DTYPES))}")
    check(self.remat in REMATS, "remat", f"valid: {', '.join(map(repr, REMATS))}")
    check(self.pool in POOLS, "pool", f"valid: {', '.join(map(repr, POOLS))}")
    check(len(self.modalities) > 0, "modalities", "define at least one modality")
    discrete = {m: (s.vocab, s.vocab_size) for m, s in self.modalities.items()
                if s.kind == "discrete"}
    check(len(set(discrete.values())) <= 1, "modalities",
          f"discrete modalities {sorted(discrete)} declare different vocabularies "
          f"{sorted(set(discrete.values()))}; they share one embedding table, so give them "
          f"the same vocab and vocab_size")
    try:
      self.fusion.check_model(self.depth, tuple(self.modalities))
    except FieldError as e:  # reported under model.fusion.<field>
      raise FieldError(f"fusion.{e.field}", str(e)) from None

  @property
  def modality_ids(self) -> dict[str, int]:
    """Each modality's index in the model's order: the id every token carries."""
    return {m: i for i, m in enumerate(self.modalities)}


def spec_from_config(model_cfg, heads: Heads = Heads()) -> ModelSpec:
  """The ModelSpec of a recipe's `model` section (a ConfigDict or mapping)."""
  values = dict(model_cfg)
  modalities = {
      name: parse_dataclass(ModalitySpec, m, f"model.modalities.{name}", what="a modality")
      for name, m in dict(values.pop("modalities", {})).items()}
  context = dict(modalities=modalities, heads=heads)
  for key, registry in (("fusion", TRUNKS), ("ffn", FFNS)):
    if key in values:  # absent: the field's default above
      context[key] = registry.parse(values.pop(key), f"model.{key}")
  return parse_dataclass(ModelSpec, values, "model", what="model", context=context)
