"""Losses have the values their definitions give on hand-made inputs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import objectives
from mmjax.objectives import contrastive, masked
from tests.test_models import MODALITIES, small_model


def test_softmax_infonce_matches_a_hand_computation():
  za = jnp.eye(3)
  zb = jnp.eye(3)
  loss, logits = contrastive.softmax_infonce(za, zb, 2.0)
  expected = -np.log(np.exp(2) / (np.exp(2) + 2))  # diagonal 2, off-diagonal 0
  assert float(loss) == pytest.approx(expected, rel=1e-5)
  swapped, _ = contrastive.softmax_infonce(za, zb[::-1], 2.0)
  assert float(swapped) > float(loss)


def test_sigmoid_loss_matches_a_hand_computation():
  za = zb = jnp.eye(2)
  loss, _ = contrastive.sigmoid_pairwise(za, zb, 10.0, -5.0)
  pos = np.log1p(np.exp(-(10 - 5)))   # -log sigmoid(5)
  neg = np.log1p(np.exp(-5))          # -log sigmoid(-(0-5))
  assert float(loss) == pytest.approx((2 * pos + 2 * neg) / 2, rel=1e-5)


def test_random_token_mask_respects_validity_and_hides_at_least_one():
  valid = jnp.array([[True] * 4 + [False] * 4, [True] * 8])
  hide = masked.random_token_mask(jax.random.key(0), (2, 8), 0.01, valid)
  assert not np.any(np.asarray(hide) & ~np.asarray(valid))
  assert np.all(np.asarray(hide).sum(1) >= 1)


def batch(b=4):
  rng = np.random.default_rng(0)
  return {
      "image": jnp.asarray(rng.normal(size=(b, 16, 16, 3)), jnp.float32),
      "video": jnp.asarray(rng.normal(size=(b, 4, 16, 16, 3)), jnp.float32),
      "audio": jnp.asarray(rng.normal(size=(b, 16, 16)), jnp.float32),
      "text": jnp.asarray(rng.integers(3, 200, size=(b, 12)), jnp.int32),
      "text_mask": jnp.ones((b, 12), bool),
      "label": jnp.asarray(rng.integers(0, 5, size=(b,)), jnp.int32),
  }


@pytest.mark.parametrize("cfg", [
    dict(type="contrastive", a="text", b="image", kind="softmax"),
    dict(type="contrastive", a="text", b="image", kind="sigmoid"),
    dict(type="classification", inputs=("video", "audio"), label="label", num_classes=5),
    dict(type="masked", modality="text", ratio=0.3),
    dict(type="masked", modality="image", ratio=0.5),
    dict(type="masked", modality="text", ratio=0.5, context=["image"]),  # a list, as from JSON
    dict(type="multimodal_masked", modalities=["image", "audio", "text"], input_budget=6,
         target_budget=6, decoder_depth=2),
])
def test_each_objective_gives_a_finite_loss_and_gradient(cfg):
  kinds = {n: s.kind for n, s in MODALITIES.items()}
  obj = objectives.make_objective("o", cfg, kinds)
  model = small_model(objectives.heads_for([obj]))  # exactly the heads the objective declares
  from flax import nnx
  graphdef, params = nnx.split(model, nnx.Param)

  def loss_fn(p):
    return objectives.total_loss((obj,), nnx.merge(graphdef, p), batch(), jax.random.key(1))

  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  assert np.isfinite(float(loss)) and float(loss) > 0
  assert "o/loss" in metrics
  gnorm = float(jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree.leaves(grads))))
  assert np.isfinite(gnorm) and gnorm > 0


@pytest.mark.parametrize("cfg, message", [
    (dict(type="contrastive", a="text", b="text"), "both 'text'"),
    (dict(type="classification", inputs=("video",), num_classes=1), "num_classes=1"),
    (dict(type="masked", modality="smell"), "modality 'smell'"),
    (dict(type="ranking"), "type='ranking': unknown objective type; valid"),
    (dict(type="contrastive", a="text", b="image", temperature=3),
     "unknown config key objective o.temperature"),
    (dict(type="contrastive", a="text", b="image", ratio=0.3),
     "o.ratio belongs to objective type 'masked', not 'contrastive'"),
    (dict(type="masked", modality="text", ratio=1.5), "o.ratio=1.5: need 0 < ratio < 1"),
    (dict(type="masked", modality="text", context=("text",)), "repeats the masked modality"),
    (dict(type="masked", modality="text", context=("smell",)), "uses modality 'smell'"),
])
def test_bad_objective_configs(cfg, message):
  kinds = {n: s.kind for n, s in MODALITIES.items()}
  with pytest.raises(ValueError, match=message):
    objectives.make_objective("o", cfg, kinds)


def test_masked_context_is_seen_by_the_prediction():
  kinds = {n: s.kind for n, s in MODALITIES.items()}
  with_image = objectives.make_objective("o", dict(type="masked", modality="text",
                                                   context=("image",)), kinds)
  text_only = objectives.make_objective("o", dict(type="masked", modality="text"), kinds)
  model = small_model(objectives.heads_for([with_image]))
  b, other = batch(), dict(batch(), image=-batch()["image"])
  key = jax.random.key(1)
  assert with_image.modalities == ("text", "image")
  assert float(with_image(model, b, key)[0]) != float(with_image(model, other, key)[0])
  assert float(text_only(model, b, key)[0]) == float(text_only(model, other, key)[0])


def _decoders(*cfgs):
  kinds = {n: s.kind for n, s in MODALITIES.items()}
  objs = [objectives.make_objective(f"o{i}", c, kinds) for i, c in enumerate(cfgs)]
  return objs, objectives.heads_for(objs)


def test_decoders_are_keyed_by_head_name_not_by_modality():
  # Default: a masked objective's head is its modality's name (the parameter path of every
  # checkpoint written before heads had names), so masked objectives on text share it.
  _, heads = _decoders(dict(type="masked", modality="text"),
                       dict(type="masked", modality="text", unit="word"))
  assert heads.decoders == {"text": "text"}
  # Named heads: separate decoders on one modality, unless they name the same head.
  objs, heads = _decoders(dict(type="masked", modality="text", head="mlm_a"),
                          dict(type="masked", modality="text", head="mlm_b"),
                          dict(type="masked", modality="text", head="mlm_b", ratio=0.3))
  assert heads.decoders == {"mlm_a": "text", "mlm_b": "text"}
  model = small_model(heads)
  assert set(model.decoders) == {"mlm_a", "mlm_b"}
  assert model.decoders["mlm_a"].kernel is not model.decoders["mlm_b"].kernel
  # Each objective trains its own decoder: a's gradient never reaches b's.
  from flax import nnx
  graphdef, params = nnx.split(model, nnx.Param)
  grads = jax.grad(lambda p: objectives.total_loss(objs[:1], nnx.merge(graphdef, p), batch(),
                                                   jax.random.key(0))[0])(params)
  assert float(jnp.abs(grads["decoders"]["mlm_a"]["kernel"][...]).sum()) > 0
  assert float(jnp.abs(grads["decoders"]["mlm_b"]["kernel"][...]).sum()) == 0


def test_one_decoder_head_cannot_predict_two_modalities():
  from mmjax.errors import ConfigError
  with pytest.raises(ConfigError, match="decoder head 'x' would predict both 'text' and 'image'"):
    _decoders(dict(type="masked", modality="text", head="x"),
              dict(type="masked", modality="image", head="x"))


def test_whole_word_masking_reads_the_batch_word_marks():
  kinds = {n: s.kind for n, s in MODALITIES.items()}
  obj = objectives.make_objective("o", dict(type="masked", modality="text", unit="word"), kinds)
  assert "text_words" in obj.batch_keys()
  b = dict(batch(), text_words=jnp.asarray(np.repeat(np.arange(1, 7), 2)[None].repeat(4, 0)))
  model = small_model(objectives.heads_for([obj]))
  loss, metrics = objectives.total_loss((obj,), model, b, jax.random.key(0))
  assert np.isfinite(float(loss))
  # Six two-token words: whole words are hidden, so an even number of tokens per row.
  hide = masked.whole_word_mask(jax.random.key(3), b["text_words"], 0.5, b["text_mask"])
  assert (np.asarray(hide).sum(1) % 2 == 0).all()
