"""LMF: the low-rank head equals full tensor fusion (numpy) with the weight tensor its
factors make, its parameter count, its use by classification and matching, bad ranks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mmjax import objectives
from mmjax.models.fusion_heads import ConcatMlp, LowRankFusion, lmf_param_counts
from tests.test_models import MODALITIES, small_model
from tests.test_objectives import batch


def _numpy_tensor_fusion(z_list, factors, rank_weights, bias):
  """h = W . ([z_1;1] (x) ... (x) [z_M;1]) + b with W = sum_r w_r F_1[r] (x) ... (x) F_M[r]
  built in full: W has shape (d_1+1, ..., d_M+1, K)."""
  m = len(z_list)
  letters = "abcdefgh"[:m]
  w = 0.0
  for r, w_r in enumerate(rank_weights):  # W += w_r * outer product of the factors' rows
    w = w + w_r * np.einsum(",".join(f"{c}k" for c in letters) + f"->{letters}k",
                            *[f[r] for f in factors])
  padded = [np.concatenate([z, np.ones((len(z), 1))], axis=1) for z in z_list]
  outer = np.einsum(",".join(f"n{c}" for c in letters) + f"->n{letters}", *padded)
  return np.einsum(f"n{letters},{letters}k->nk", outer, w) + bias


@pytest.mark.parametrize("dims_rank", [(2, 3), (3, 2), (3, 1)])
def test_low_rank_fusion_equals_full_tensor_fusion(dims_rank):
  num_modalities, rank = dims_rank
  width, classes, b = 5, 4, 6
  head = LowRankFusion(num_modalities, width, classes, rank, param_dtype=jnp.float32,
                       dtype=jnp.float32, rngs=nnx.Rngs(0))
  head.bias[...] = jnp.linspace(-1, 1, classes)  # not the zeros it starts with
  rng = np.random.default_rng(num_modalities)
  z = [rng.normal(size=(b, width)).astype(np.float32) for _ in range(num_modalities)]
  got = np.asarray(head([jnp.asarray(x) for x in z]))
  want = _numpy_tensor_fusion([x.astype(np.float64) for x in z],
                              [np.asarray(f[...], np.float64) for f in head.factors],
                              np.asarray(head.rank_weights[...], np.float64),
                              np.asarray(head.bias[...], np.float64))
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def _num_params(module):
  return sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


def test_parameter_counts_of_lmf_and_tensor_fusion():
  counts = lmf_param_counts([64, 64], 20, 4)
  head = LowRankFusion(2, 64, 20, 4, param_dtype=jnp.float32, dtype=jnp.float32,
                       rngs=nnx.Rngs(0))
  assert counts["lmf"] == _num_params(head) == 4 * 2 * 65 * 20 + 4 + 20
  assert counts["tensor"] == 65 * 65 * 20 + 20  # the weight tensor W and the bias
  assert lmf_param_counts([2, 3, 4], 5, 1) == {"lmf": 1 * (3 + 4 + 5) * 5 + 1 + 5,
                                              "tensor": 3 * 4 * 5 * 5 + 5}
  mlp = ConcatMlp(2, 64, 20, param_dtype=jnp.float32, dtype=jnp.float32, rngs=nnx.Rngs(0))
  assert _num_params(mlp) == 128 * 64 + 64 + 64 * 20 + 20


@pytest.mark.parametrize("cfg", [
    dict(type="classification", inputs=("video", "audio"), num_classes=5, logits="lmf", rank=3),
    dict(type="classification", inputs=("video", "audio"), num_classes=5, logits="concat_mlp"),
    dict(type="matching", text="text", inputs=("image",), logits="lmf", rank=2),
])
def test_fused_heads_train_with_a_finite_gradient(cfg):
  kinds = {n: s.kind for n, s in MODALITIES.items()}
  obj = objectives.make_objective("o", cfg, kinds)
  heads = objectives.heads_for([obj])
  assert heads.fused_heads[obj.head_name].modalities == obj.modalities
  model = small_model(heads)
  graphdef, params = nnx.split(model, nnx.Param)
  data = dict(batch(), content_id=jnp.arange(4, dtype=jnp.int32))
  loss_fn = lambda p: obj(nnx.merge(graphdef, p), data, jax.random.key(0))[0]
  loss, grads = jax.value_and_grad(loss_fn)(params)
  head_grads = jax.tree.leaves(nnx.state(nnx.merge(graphdef, grads).classifiers))
  assert np.isfinite(float(loss))
  assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grads))
  assert sum(float(jnp.sum(jnp.abs(g))) for g in head_grads) > 0


@pytest.mark.parametrize("cfg", [
    dict(type="classification", inputs=("video", "audio"), num_classes=5, logits="lmf"),
    dict(type="matching", text="text", inputs=("image",), logits="lmf"),
])
@pytest.mark.parametrize("rank", [0, -2])
def test_a_rank_below_one_is_refused(cfg, rank):
  kinds = {n: s.kind for n, s in MODALITIES.items()}
  with pytest.raises(ValueError, match=f"o.rank={rank}: the rank of LMF's weight tensor "
                                       "must be a positive integer"):
    objectives.make_objective("o", dict(cfg, rank=rank), kinds)


RECIPE = "configs/mm_world_seed_methods.py"


@pytest.mark.parametrize("variant", ["lmf", "tiny_lmf", "lmf_concat_mlp", "tiny_lmf_concat_mlp"])
def test_lmf_recipes_differ_only_in_the_head(variant):
  from mmjax import experiment
  exp = experiment.parse(experiment.load(f"{RECIPE}:{variant}"))
  (label,) = exp.tasks["default"].objectives
  assert (label.inputs, label.num_classes) == (("video", "audio"), 20)
  assert label.logits == ("lmf" if variant.endswith("lmf") else "concat_mlp")
  assert type(exp.model.fusion).__name__ == "LateFusionConfig"  # the head does the fusing
  assert sorted(exp.model.modalities) == ["audio", "video"]


@pytest.mark.slow
def test_tiny_lmf_trains_and_is_scored_from_the_command_line(tmp_path, world_dir):
  import json
  from tests.conftest import run_cli
  run_cli("mmjax.train", ["--config", f"{RECIPE}:tiny_lmf", "--workdir", str(tmp_path),
                          f"--config.tasks.default.data.data_dir={world_dir}"])
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  losses = [r["train/default/av_label/loss"] for r in rows if "train/default/av_label/loss" in r]
  assert len(losses) >= 2 and all(np.isfinite(losses))
  (final,) = [r for r in rows if "default/classification/num_examples" in r]
  assert final["default/classification/num_examples"] == 256.0
  assert 0.0 <= final["default/classification/accuracy"] <= 1.0


def test_one_head_name_cannot_be_both_linear_and_fused():
  kinds = {n: s.kind for n, s in MODALITIES.items()}
  make = lambda name, **kw: objectives.make_objective(
      name, dict(type="classification", inputs=("video", "audio"), num_classes=5, **kw), kinds)
  with pytest.raises(ValueError, match="head 'label' is linear for objective 'a' but a fused "
                                       "'lmf' head elsewhere"):
    objectives.heads_for([make("a"), make("b", logits="lmf")])
  with pytest.raises(ValueError, match="head 'label' is used as"):
    objectives.heads_for([make("a", logits="lmf", rank=2), make("b", logits="lmf", rank=3)])
  heads = objectives.heads_for([make("a", logits="lmf"), make("b", logits="lmf")])
  assert heads.fused_heads["label"].rank == 4  # the same head, shared
