"""GRAM: the volume against numpy's determinant formula, the objective's loss against a
numpy computation, finite gradients at volume 0, bad configs, and retrieval by volume."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mmjax import objectives
from mmjax.evaluators import EVALUATORS, retrieval
from mmjax.models.volume import gram_volume, volume_matrix
from mmjax.objectives.gram import gram_logits
from tests.test_evaluators import _batch, _context, _embed, _unit
from tests.test_models import MODALITIES, small_model
from tests.test_objectives import batch


def _unit_rows(rng, *shape):
  v = rng.normal(size=shape)
  return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _numpy_volume(v_nd):
  v = np.asarray(v_nd, np.float64)
  return np.sqrt(max(np.linalg.det(v @ v.T), 0.0))


def test_two_vectors_span_sqrt_one_minus_cos_squared():
  v = _unit_rows(np.random.default_rng(0), 64, 2, 16)
  cos = np.sum(v[:, 0] * v[:, 1], axis=-1)
  got = np.asarray(gram_volume(jnp.asarray(v, jnp.float32)))
  np.testing.assert_allclose(got, np.sqrt(1 - cos ** 2), atol=1e-6, rtol=0)


@pytest.mark.parametrize("n", [3, 4])
def test_n_vectors_span_sqrt_det_of_their_gram_matrix(n):
  v = _unit_rows(np.random.default_rng(n), 64, n, 16)
  got = np.asarray(gram_volume(jnp.asarray(v, jnp.float32)))
  np.testing.assert_allclose(got, [_numpy_volume(x) for x in v], atol=1e-6, rtol=0)
  # The ends of the range: orthonormal vectors span 1, repeated ones span 0.
  assert float(gram_volume(jnp.eye(n, 16))) == pytest.approx(1.0, abs=1e-6)
  assert float(gram_volume(jnp.stack([jnp.eye(n, 16)[0]] * n))) == 0.0


def test_volume_matrix_is_the_volume_of_anchor_i_with_candidate_j():
  rng = np.random.default_rng(1)
  anchor, others = _unit_rows(rng, 5, 8), _unit_rows(rng, 3, 6, 8)  # 5 anchors, 6 candidates
  got = np.asarray(volume_matrix(jnp.asarray(anchor, jnp.float32),
                                 jnp.asarray(others, jnp.float32)))
  want = [[_numpy_volume(np.concatenate([anchor[i:i + 1], others[:, j]])) for j in range(6)]
          for i in range(5)]
  np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


def _normalised(x):
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def test_gradient_is_finite_where_two_embeddings_coincide():
  rng = np.random.default_rng(2)
  volume = lambda x: gram_volume(_normalised(x))
  # Exactly dependent (the Gram determinant rounds to 0, where sqrt' is infinite) ...
  exact = jnp.eye(3, 8).at[1].set(jnp.eye(3, 8)[0] * 2.0)
  assert float(volume(exact)) == 0.0
  assert np.all(np.isfinite(np.asarray(jax.grad(volume)(exact))))
  # ... and random coincident rows, whose float32 determinant is rounding noise.
  raw = jnp.asarray(rng.normal(size=(3, 8)), jnp.float32)
  raw = raw.at[1].set(raw[0])
  assert float(volume(raw)) < 1e-3
  assert np.all(np.isfinite(np.asarray(jax.grad(volume)(raw))))
  # The same for the loss, where a matched set coincides in every modality.
  anchor = jnp.asarray(_unit_rows(rng, 4, 8), jnp.float32)

  def loss(a):
    logits = gram_logits(_normalised(a), jnp.stack([_normalised(a)] * 2), 10.0)
    return objectives.contrastive.symmetric_softmax_xent(logits)[0]
  assert np.all(np.isfinite(np.asarray(jax.grad(loss)(anchor))))


def _numpy_gram_loss(anchor, others, scale):
  b = len(anchor)
  logits = -scale * np.array([[_numpy_volume(np.concatenate([anchor[i:i + 1], others[:, j]]))
                               for j in range(b)] for i in range(b)])
  log_softmax = lambda x, ax: x - np.log(np.sum(np.exp(x), axis=ax, keepdims=True))
  return -(np.trace(log_softmax(logits, 1)) + np.trace(log_softmax(logits, 0))) / (2 * b)


def test_objective_loss_is_the_two_way_cross_entropy_of_minus_volume():
  kinds = {n: s.kind for n, s in MODALITIES.items()}
  obj = objectives.make_objective(
      "g", dict(type="gram", anchor="text", others=("image", "audio", "video")), kinds)
  model = small_model(objectives.heads_for([obj]))
  graphdef, params = nnx.split(model, nnx.Param)
  data = batch()
  loss_fn = lambda p: obj(nnx.merge(graphdef, p), data, jax.random.key(0))[0]
  loss, grads = jax.value_and_grad(loss_fn)(params)
  x = objectives.model_inputs(data, obj.modalities)
  z = {m: np.asarray(model.embed_modality(x, m)[0]) for m in obj.modalities}
  scale = float(model.contrastive_scale(obj.scale_name)[0])
  others = np.stack([z[m] for m in obj.others])
  assert float(loss) == pytest.approx(_numpy_gram_loss(z["text"], others, scale), rel=1e-5)
  gnorm = float(jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree.leaves(grads))))
  assert np.isfinite(gnorm) and gnorm > 0


@pytest.mark.parametrize("cfg, message", [
    (dict(others=()), r"o.others=\(\): .*n >= 2 modalities"),
    (dict(anchor="text", others=("text", "image")), "contains the anchor 'text'"),
    (dict(others=("image", "image")), "names a modality twice"),
    (dict(others=("image", "smell")), "uses modality 'smell'"),
])
def test_bad_gram_configs(cfg, message):
  kinds = {n: s.kind for n, s in MODALITIES.items()}
  with pytest.raises(ValueError, match=message):
    objectives.make_objective("o", dict(type="gram", **cfg), kinds)


def test_retrieval_by_volume_ranks_the_set_that_spans_least():
  # Text i lies in the plane of image i and audio i (volume 0 with them) and is generic
  # to the other sets; by cosine with the image alone text 0 would pick image 1.
  rng = np.random.default_rng(3)
  image, audio = _unit_rows(rng, 4, 8), _unit_rows(rng, 4, 8)
  text0 = _unit([0.3 * image[0] + audio[0]])[0]
  image[1] = _unit([image[1] + 3 * text0])[0]
  text = _unit(image + audio)
  text[0] = text0
  assert np.argmax(text @ image.T, axis=1)[0] == 1
  batches = [_batch([True] * 4, text=text.astype(np.float32), image=image.astype(np.float32),
                    audio=audio.astype(np.float32), content_id=np.arange(4, dtype=np.int32))]
  ctx, params = _context(batches, {f"embed/{m}": _embed(m) for m in ("text", "image", "audio")})
  cfg = retrieval.RetrievalConfig(task="t", a="text", b="image", b_with=("audio",),
                                  rank_by="volume")
  r = dict(cfg.build("ret", ctx).run(params))
  assert r["t/ret/text_to_image+audio/r@1"] == 1.0
  assert r["t/ret/image+audio_to_text/r@1"] == 1.0


@pytest.mark.parametrize("kw, message", [
    (dict(b_with=("audio",)), "rank_by='cosine' compares two modalities"),
    (dict(rank_by="angle"), "evals.r.rank_by='angle': valid: 'cosine', 'volume'"),
    (dict(rank_by="volume", b_with=("text",)), "distinct modalities other than a='text'"),
])
def test_bad_retrieval_configs(kw, message):
  with pytest.raises(ValueError, match=message):
    EVALUATORS.parse(dict(type="retrieval", a="text", b="image", **kw), "evals.r")


RECIPE = "configs/mm_world_seed_methods.py"


@pytest.mark.parametrize("variant", ["gram", "tiny_gram", "gram_pairwise", "tiny_gram_pairwise"])
def test_gram_recipes_align_text_with_three_modalities(variant):
  from mmjax import experiment
  exp = experiment.parse(experiment.load(f"{RECIPE}:{variant}"))
  objs = exp.tasks["default"].objectives
  if variant.endswith("pairwise"):  # the baseline: one InfoNCE per pair, weights equal
    assert sorted((o.a, o.b, o.weight) for o in objs) == [
        ("text", m, 1.0) for m in ("audio", "image", "video")]
  else:
    (gram,) = objs
    assert gram.anchor == "text" and set(gram.others) == {"image", "audio", "video"}
  volume = exp.evals["retrieval_volume"]
  assert (volume.rank_by, volume.gallery) == ("volume", ("image", "audio", "video"))


@pytest.mark.slow
def test_tiny_gram_trains_and_ranks_by_volume_from_the_command_line(tmp_path, world_dir):
  import json
  from tests.conftest import run_cli
  run_cli("mmjax.train", ["--config", f"{RECIPE}:tiny_gram", "--workdir", str(tmp_path),
                          f"--config.tasks.default.data.data_dir={world_dir}"])
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  losses = [r["train/default/gram/loss"] for r in rows if "train/default/gram/loss" in r]
  assert len(losses) >= 2 and all(np.isfinite(losses))
  (final,) = [r for r in rows if "default/retrieval_volume/num_examples" in r]
  assert final["default/retrieval_volume/num_examples"] == 256.0  # the tiny test split
  assert 0.0 <= final["default/retrieval_volume/text_to_image+audio+video/r@1"] <= 1.0
