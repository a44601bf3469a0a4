"""The MoE feed-forward config: defaults, checks, which blocks get experts, parameter counts."""
from __future__ import annotations

import dataclasses

from flax import nnx

from mmjax.config.registry import check
from mmjax.errors import ConfigError
from mmjax.models.ffn.mlp import ACTIVATIONS, Mlp, mlp_flops_per_token
from mmjax.models.ffn.moe.layer import MoeFfn

ROUTINGS = ("token_choice", "dropless", "expert_choice")
MODALITY_AWARE = ("none", "routers", "experts")
KERNELS = ("auto", "blocked", "ragged")
RENORMALIZE_ORDERS = ("before_drops", "after_drops")
LB_LOSS_CONVENTIONS = ("choices", "switch")


@dataclasses.dataclass(frozen=True)
class MoeConfig:
  """MoE in every `every`-th block (layers every-1, 2*every-1, ...), the dense Mlp elsewhere.

  routing: token_choice  each token picks its top_k experts; an expert keeps at most
                         `capacity` tokens per routing group, the rest are dropped
           dropless      token choice without a capacity: tokens sorted by expert and run
                         through a grouped matmul (`kernel`)
           expert_choice each expert picks its top-`capacity` tokens of the group (IMP,
                         V-MoE); it sees every token of the group, so it suits bidirectional
                         attention only (nothing refuses it for causal tokens yet)
  capacity = ceil(capacity_factor * top_k * tokens_per_group / num_experts): for expert
    choice, top_k * capacity_factor is the mean number of experts per token.
  group_size: examples per routing group. Capacity and expert choice are per group, so
    the math does not depend on the mesh; the batch must be a multiple of it.
  modality_aware: none | routers (one router per modality id) | experts (the experts split
    into one equal group per modality; a token picks within its modality's group).
  expert_dim: hidden size of each expert (0 = model.mlp_dim).
  kernel: the dropless grouped matmul: blocked (per-expert loops over block-padded rows,
    XLA:CPU) | ragged (jax.lax.ragged_dot, GPU/TPU) | auto (by backend; README, MoE).

  Conventions that differ between published implementations (they agree at top_k=1):
  renormalize: a token's top_k weights are divided by their sum (top_k > 1, token choice
    and dropless); False keeps the raw router probabilities (V-MoE).
  renormalize_order: when, for token choice with a capacity (dropless drops nothing, so
    both orders agree there):
      before_drops  over the top_k choices, then the capacity drops some: a token whose
                    second choice was dropped keeps p1/(p1+p2) on its first (GShard as in
                    lingvo's legacy_mtf_behavior). The default: today's recipes' order.
      after_drops   over the choices that survived the drops: that token gets weight 1 on
                    its first (Mesh-TF, fairseq).
  lb_loss_convention: the load-balancing loss is lb_loss_weight * E * sum_e f_e * P_e (P_e:
    expert e's mean router probability over the batch's valid tokens), with f_e
      choices  e's share of all routed choices (sums to 1): perfectly balanced routing
               scores 1 at any top_k, as in Switch's top-1 paper. The default, because
               the MoE fusion recipes (top_k=2) train with it and their runs must stay
               reproducible.
      switch   the share of tokens that chose e (sums to top_k; balanced routing scores
               top_k): flaxformer's and MaxText's loss, top_k x "choices". Use it to
               copy a published lb_loss_weight from those codebases at top_k > 1.
    Both pool the whole batch's valid tokens (padding is never counted); flaxformer
    averages the same product per routing group and MaxText per sequence, which equals
    this with one group and no padding.
  Published settings: NMM's MoE (Shukor et al. 2025) is routing="dropless", top_k=1,
  lb_loss_weight=0.01 (either convention: they agree at top_k=1); IMP's is
  routing="expert_choice", top_k=1, capacity_factor=1.0, z_loss_weight=0 (no aux loss;
  expert choice never uses the load-balancing one).
  """
  every: int = 1
  num_experts: int = 8
  top_k: int = 2
  routing: str = "dropless"
  capacity_factor: float = 1.25
  group_size: int = 1
  expert_dim: int = 0
  activation: str = "gelu"
  modality_aware: str = "none"
  shared_expert: bool = False
  renormalize: bool = True      # top-k weights sum to 1 (token choice with top_k > 1)
  renormalize_order: str = "before_drops"  # before_drops | after_drops (see above)
  lb_loss_weight: float = 0.01  # Switch load balancing (token choice and dropless)
  lb_loss_convention: str = "choices"      # choices | switch (see above)
  z_loss_weight: float = 0.001  # router z-loss (ST-MoE)
  kernel: str = "auto"
  block_size: int = 128         # rows per block of the blocked dropless kernel

  def __post_init__(self):
    for f in ("every", "num_experts", "top_k", "group_size", "block_size"):
      check(getattr(self, f) > 0, f, "must be a positive integer")
    check(self.expert_dim >= 0, "expert_dim", "must be >= 0 (0 = model.mlp_dim)")
    check(self.top_k <= self.num_experts, "top_k",
          f"must be <= num_experts={self.num_experts} (a token cannot pick more experts "
          f"than there are)")
    check(self.capacity_factor > 0, "capacity_factor", "must be > 0")
    check(self.routing in ROUTINGS, "routing", f"valid: {', '.join(map(repr, ROUTINGS))}")
    check(self.modality_aware in MODALITY_AWARE, "modality_aware",
          f"valid: {', '.join(map(repr, MODALITY_AWARE))}")
    check(self.kernel in KERNELS, "kernel", f"valid: {', '.join(map(repr, KERNELS))}")
    check(self.renormalize_order in RENORMALIZE_ORDERS, "renormalize_order",
          f"valid: {', '.join(map(repr, RENORMALIZE_ORDERS))}")
    check(self.lb_loss_convention in LB_LOSS_CONVENTIONS, "lb_loss_convention",
          f"valid: {', '.join(map(repr, LB_LOSS_CONVENTIONS))}")
    check(self.activation in ACTIVATIONS, "activation",
          f"valid: {', '.join(map(repr, ACTIVATIONS))}")
    check(self.lb_loss_weight >= 0, "lb_loss_weight", "must be >= 0")
    check(self.z_loss_weight >= 0, "z_loss_weight", "must be >= 0")

  def is_moe_layer(self, layer: int) -> bool:
    return (layer + 1) % self.every == 0

  def experts_per_token(self) -> float:
    """Experts that process a token on average: top_k, or (expert choice) the capacity's
    mean of top_k * capacity_factor."""
    return self.top_k * (self.capacity_factor if self.routing == "expert_choice" else 1.0)

  def flops_per_token(self, layer: int, *, width: int, mlp_dim: int) -> float:
    """Active forward FLOPs per token: the router, the experts it is sent to, the shared
    expert (dispatch bookkeeping and dropped or padded slots are not model FLOPs)."""
    if not self.is_moe_layer(layer):
      return mlp_flops_per_token(width, mlp_dim)
    expert = mlp_flops_per_token(width, self.expert_dim or mlp_dim)
    return (2.0 * width * self.num_experts + self.experts_per_token() * expert
            + (expert if self.shared_expert else 0.0))

  def param_counts(self, *, width: int, mlp_dim: int, depth: int,
                   num_modalities: int = 1) -> dict[str, int]:
    return moe_param_counts(self, width=width, mlp_dim=mlp_dim, depth=depth,
                            num_modalities=num_modalities)

  def check_modalities(self, num_modalities: int) -> None:
    if self.modality_aware != "experts":
      return
    per = self.num_experts // num_modalities
    if self.num_experts % num_modalities or self.top_k > per:
      raise ConfigError(
          f"config.model.ffn.modality_aware='experts' splits num_experts={self.num_experts} "
          f"into {num_modalities} equal groups (one per modality) of at least top_k="
          f"{self.top_k}: use a multiple of {num_modalities} that is >= "
          f"{num_modalities * self.top_k}")

  def build(self, layer: int, *, width: int, mlp_dim: int, num_modalities: int = 1,
            param_dtype, dtype, rngs: nnx.Rngs) -> nnx.Module:
    if not self.is_moe_layer(layer):
      return Mlp(width, mlp_dim, activation=self.activation, param_dtype=param_dtype,
                 dtype=dtype, rngs=rngs)
    self.check_modalities(num_modalities)
    return MoeFfn(self, width, self.expert_dim or mlp_dim, num_modalities=num_modalities,
                  param_dtype=param_dtype, dtype=dtype, rngs=rngs)


def moe_param_counts(cfg: MoeConfig, *, width: int, mlp_dim: int, depth: int,
                     num_modalities: int = 1) -> dict[str, int]:
  """Feed-forward parameters of a `depth`-block trunk with this ffn config (biases and
  routers included): `total` stored, `active` used per token (top_k experts + the shared
  expert + the router; dense blocks count fully), for scaling laws' N."""
  def mlp(d_ff):
    return 2 * width * d_ff + d_ff + width
  expert_dim = cfg.expert_dim or mlp_dim
  routers = num_modalities if cfg.modality_aware == "routers" else 1
  router = routers * width * cfg.num_experts
  shared = mlp(expert_dim) if cfg.shared_expert else 0
  moe_layers = sum(cfg.is_moe_layer(i) for i in range(depth))
  dense_layers = depth - moe_layers
  total = dense_layers * mlp(mlp_dim) + moe_layers * (
      cfg.num_experts * mlp(expert_dim) + router + shared)
  per_token = cfg.experts_per_token()
  active = dense_layers * mlp(mlp_dim) + moe_layers * (
      per_token * mlp(expert_dim) + router // routers + shared)
  return {"total": int(total), "active": int(round(active))}
