"""The auxiliary-output channel and per-token modality ids, through a probe feed-forward
layer that reports a loss and what it saw."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mmjax import objectives
from mmjax.models.aux_outputs import Aux
from mmjax.models.model import build_model
from mmjax.models.spec import ModelSpec
from tests.test_models import MODALITIES
from tests.test_objectives import batch

DEPTH = 2


class ProbeFfn(nnx.Module):
  """Adds nothing to the tokens; reports a unit loss and the valid tokens per modality id."""

  def __call__(self, x_bld, info):
    counts = jnp.stack([jnp.sum(info.valid & (info.modality == i)) for i in range(len(MODALITIES))])
    return jnp.zeros_like(x_bld), Aux(losses={"probe": jnp.ones((), jnp.float32)},
                                      stats={"tokens_by_modality": counts.astype(jnp.float32)})


@dataclasses.dataclass(frozen=True)
class ProbeFfnConfig:
  def build(self, layer, **kw):
    del layer, kw
    return ProbeFfn()


def probe_model(objs):
  spec = ModelSpec(modalities=MODALITIES, width=32, depth=DEPTH, num_heads=4, mlp_dim=64,
                   embed_dim=16, ffn=ProbeFfnConfig(), heads=objectives.heads_for(objs))
  return build_model(spec, seed=0)


@pytest.mark.parametrize("cfg, passes", [
    (dict(type="contrastive", a="text", b="image"), 2),   # text and image encoded apart
    (dict(type="classification", inputs=("video", "audio"), num_classes=5), 1),  # fused
    (dict(type="masked", modality="image"), 1),
])
def test_each_forward_pass_adds_its_auxiliary_losses_exactly_once(cfg, passes):
  kinds = {n: s.kind for n, s in MODALITIES.items()}
  obj = objectives.make_objective("o", dict(cfg, weight=0.5), kinds)
  model = probe_model((obj,))
  total, metrics = objectives.total_loss((obj,), model, batch(), jax.random.key(0))
  # Every block of every pass reports 1.0; none is weighted by the objective's weight.
  assert float(metrics["o/aux_loss/probe"]) == passes * DEPTH
  assert float(total) == pytest.approx(0.5 * float(metrics["o/loss"]) + passes * DEPTH, rel=1e-6)


def test_blocks_see_each_tokens_modality_through_concatenation_and_absence():
  kinds = {n: s.kind for n, s in MODALITIES.items()}
  obj = objectives.make_objective(
      "o", dict(type="classification", inputs=("video", "audio"), num_classes=5), kinds)
  model = probe_model((obj,))
  b = batch(4)
  b["audio_present"] = jnp.array([True, True, False, True])
  _, metrics = objectives.total_loss((obj,), model, b, jax.random.key(0))
  ids = list(MODALITIES)
  video_tokens = MODALITIES["video"].num_tokens()   # 2*2*2 tubelets
  audio_tokens = MODALITIES["audio"].num_tokens()   # 2*2 patches
  for layer in range(DEPTH):
    seen = [float(metrics[f"o/layer{layer}/tokens_by_modality/{i}"]) for i in range(len(ids))]
    assert seen[ids.index("video")] == 4 * video_tokens
    assert seen[ids.index("audio")] == 3 * audio_tokens  # the absent row's tokens are invalid
    assert seen[ids.index("image")] == seen[ids.index("text")] == 0


def test_dense_model_reports_no_auxiliary_losses():
  kinds = {n: s.kind for n, s in MODALITIES.items()}
  obj = objectives.make_objective("o", dict(type="contrastive", a="text", b="image"), kinds)
  spec = ModelSpec(modalities=MODALITIES, width=32, depth=1, num_heads=4, mlp_dim=64,
                   embed_dim=16, heads=objectives.heads_for((obj,)))
  total, metrics = objectives.total_loss((obj,), build_model(spec, 0), batch(), jax.random.key(0))
  assert not any("aux_loss" in k for k in metrics)
  np.testing.assert_allclose(float(total), float(metrics["o/loss"]), rtol=1e-6)
