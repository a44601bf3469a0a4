"""The next_token objective: its loss against numpy, its named head beside a masked one,
MoE (token choice) training under causal attention, and the refusals at validation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mmjax import experiment
from mmjax import objectives as objectives_lib
from mmjax.config import recipe
from mmjax.errors import ConfigError
from mmjax.models.embedders import ModalitySpec
from mmjax.models.ffn.moe import MoeConfig
from mmjax.models.model import build_model
from mmjax.models.spec import ModelSpec
from mmjax.objectives.next_token import next_token_loss
from mmjax.training import optimizer as optim
from mmjax.training.step import init_state, make_train_step
from tests.conftest import TINY

KINDS = {"image": "image", "text": "text"}
MODALITIES = {"image": ModalitySpec("image", (8, 8, 3), (4,)),
              "text": ModalitySpec("text", (6,), (), 11)}


def test_next_token_loss_equals_a_numpy_reference():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 5, 7)).astype(np.float32) * 3
  ids = rng.integers(0, 7, size=(2, 5))
  valid = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)  # row 1: 2 valid targets
  terms, hits, zs = [], [], []
  for b in range(2):
    for t in range(4):
      if valid[b, t] and valid[b, t + 1]:
        row = logits[b, t].astype(np.float64)
        log_z = np.log(np.sum(np.exp(row - row.max()))) + row.max()
        terms.append(log_z - row[ids[b, t + 1]])
        hits.append(np.argmax(row) == ids[b, t + 1])
        zs.append(log_z ** 2)
  assert len(terms) == 6
  loss, metrics = next_token_loss(jnp.asarray(logits), jnp.asarray(ids), jnp.asarray(valid))
  np.testing.assert_allclose(loss, np.mean(terms), rtol=1e-6)
  np.testing.assert_allclose(metrics["token_acc"], np.mean(hits), rtol=1e-6)
  np.testing.assert_allclose(metrics["perplexity"], np.exp(np.mean(terms)), rtol=1e-5)
  loss_z, metrics = next_token_loss(jnp.asarray(logits), jnp.asarray(ids), jnp.asarray(valid),
                                    1e-2)
  np.testing.assert_allclose(loss_z, np.mean(terms) + 1e-2 * np.mean(zs), rtol=1e-6)
  np.testing.assert_allclose(metrics["z_loss"], np.mean(zs), rtol=1e-6)


def _objectives(cfg):
  return objectives_lib.make_objectives(cfg, KINDS)


def test_masked_and_next_token_on_text_get_separate_decoders():
  objs = _objectives({"mt": dict(type="masked", modality="text"),
                      "nt": dict(type="next_token", modality="text", context=("image",))})
  heads = objectives_lib.heads_for(objs)
  assert dict(heads.decoders) == {"text": "text", "next_text": "text"} and heads.tied == ()
  model = build_model(ModelSpec(modalities=MODALITIES, width=16, depth=1, num_heads=2,
                                mlp_dim=32, heads=heads), 0)
  assert set(model.decoders) == {"text", "next_text"}
  assert not np.array_equal(model.decoders["text"].kernel[...],
                            model.decoders["next_text"].kernel[...])
  # Tied: no decoder of its own; the logits are the embedding table's, scaled by d^-0.5.
  tied = objectives_lib.heads_for(_objectives(
      {"nt": dict(type="next_token", modality="text", tied=True)}))
  assert tied.tied == ("next_text",)
  model = build_model(ModelSpec(modalities=MODALITIES, width=16, depth=1, num_heads=2,
                                mlp_dim=32, heads=tied), 0)
  assert "next_text" not in model.decoders
  x = jnp.ones((2, 6, 16))
  np.testing.assert_allclose(model.decode(x, "next_text"),
                             x @ model.embedders["text"].embedding[...].T / 4.0, rtol=1e-6)
  with pytest.raises(ConfigError, match="tied to the embedding table"):
    objectives_lib.heads_for(_objectives({
        "a": dict(type="next_token", tied=True), "b": dict(type="next_token")}))


def _batch(b=8, seed=0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(3, 11, size=(b, 6)).astype(np.int32)
  image = rng.normal(size=(b, 8, 8, 3)).astype(np.float32)
  ids[:, 1] = (image[:, 0, 0, 0] > 0) + 3  # the second token is a fact of the image
  mask = np.ones((b, 6), bool)
  mask[0, 4:] = False
  return {"image": jnp.asarray(image), "text": jnp.asarray(ids), "text_mask": jnp.asarray(mask)}


def test_moe_token_choice_with_causal_attention_trains():
  objs = _objectives({"nt": dict(type="next_token", modality="text", context=("image",),
                                 z_loss=1e-4)})
  ffn = MoeConfig(num_experts=4, top_k=1, routing="token_choice", group_size=2)
  spec = ModelSpec(modalities=MODALITIES, width=16, depth=2, num_heads=2, mlp_dim=32,
                   ffn=ffn, heads=objectives_lib.heads_for(objs))
  graphdef, params = nnx.split(build_model(spec, 0), nnx.Param)
  config = recipe.load(TINY)
  optimizer = optim.make_optimizer(config.optim, 20)
  state = init_state(lambda: params, optimizer)
  step = jax.jit(make_train_step(graphdef, objs, optimizer, 0))
  batch, losses = _batch(), []
  for _ in range(8):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0] - 0.2, losses
  assert any("moe/load" in k for k in metrics), sorted(metrics)


def _parse_with(objectives, *overrides, ffn=None):
  config = recipe.load(TINY, list(overrides))
  with config.unlocked():
    config.tasks.default.objectives = objectives
    config.evals = {}
    if ffn is not None:
      config.model.ffn = ffn
  return experiment.parse(config)


PREFIX_LM = {"nt": dict(type="next_token", modality="text", context=("image",))}


@pytest.mark.parametrize("overrides, message", [
    (["model.fusion.type=early"], None),
    (["model.fusion.type=late_decoder"], None),
    (["model.fusion.type=bottleneck"],
     r"objectives.nt attends causally over \['text'\], which config.model.fusion.type="
     r"'bottleneck' cannot do soundly: a causal token never attends to the bottleneck tokens "
     r"after its stream, so \['text'\] would never see \['image'\]; use "
     r"model.fusion.type='early' \(a prefix-LM\) or 'late_decoder'"),
    (["model.fusion.type=late"], r"late fusion meets only at the heads, so \['text'\] would "
                                 r"never see \['image'\]; use model.fusion.type='late_decoder'"),
    (["model.fusion.type=late_decoder", "model.fusion.decoder_modality=image"],
     r"late_decoder runs \['text'\] through bidirectional encoders; only "
     r"model.fusion.decoder_modality='image' is decoded causally: set decoder_modality"),
])
def test_next_token_is_refused_on_a_trunk_that_cannot_be_causal(overrides, message):
  if message is None:
    exp = _parse_with(PREFIX_LM, *overrides)
    assert exp.tasks["default"].objectives[0].causal_modalities == ("text",)
    return
  with pytest.raises(ConfigError, match=message):
    _parse_with(PREFIX_LM, *overrides)


def test_late_and_bottleneck_fusion_may_model_text_alone():
  alone = {"nt": dict(type="next_token", modality="text")}
  _parse_with(alone, "model.fusion.type=late")
  _parse_with(alone, "model.fusion.type=bottleneck")


@pytest.mark.parametrize("ffn, message", [
    (dict(type="moe", routing="expert_choice", top_k=1, num_experts=4),
     r"routing='expert_choice': each expert picks its tokens among the whole group, so "
     r"whether a token is processed depends on the tokens after it; use routing='dropless'"),
    (dict(type="moe", routing="token_choice", top_k=2, num_experts=4),
     r"top_k=2: every token's first choice .* use routing='dropless' or top_k=1"),
])
def test_routing_that_sees_later_tokens_is_refused_with_a_causal_objective(ffn, message):
  with pytest.raises(ConfigError, match=r"tasks.default.objectives.nt attends causally .*"
                     + message):
    _parse_with(PREFIX_LM, ffn=ffn)
  _parse_with(PREFIX_LM, ffn=dict(ffn, routing="dropless"))  # the fix it names parses
  # Without a causal objective, expert choice stays allowed.
  _parse_with({"mt": dict(type="masked", modality="text")}, ffn=ffn)


def test_next_token_of_a_modality_without_tokens_is_refused():
  with pytest.raises(ConfigError, match=r"predicts the next token of 'image', a image "
                                        r"modality; next-token prediction needs a text"):
    _parse_with({"nt": dict(type="next_token", modality="image")})
