"""Bottleneck (MBT) and late fusion against direct references; fusion checks; matching."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.config import recipe as config_lib
from mmjax import experiment
from mmjax import objectives
from mmjax.errors import ConfigError
from mmjax.models.model import build_model
from mmjax.models.spec import ModelSpec
from mmjax.models.model_inputs import ModelInputs as MI
from mmjax.models.token_info import TokenInfo
from mmjax.models.trunks import TRUNKS
from mmjax.objectives.matching import negative_partners
from tests.conftest import TINY
from tests.test_models import MODALITIES
from tests.test_objectives import batch

KINDS = {n: s.kind for n, s in MODALITIES.items()}


def model_with(fusion: dict, depth=2, **kw):
  spec = ModelSpec(modalities=MODALITIES, width=32, depth=depth, num_heads=4, mlp_dim=64,
                   embed_dim=16, fusion=TRUNKS.parse(fusion, "model.fusion"), **kw)
  return build_model(spec, seed=0)


def token_inputs(b=3, seed=0):
  rng = np.random.default_rng(seed)
  tokens = {m: jnp.asarray(rng.normal(size=(b, n, 32)), jnp.float32)
            for m, n in (("video", 5), ("audio", 3))}
  infos = {m: TokenInfo.for_modality(jnp.ones(t.shape[:2], bool), i)
           for i, (m, t) in enumerate(tokens.items())}
  return tokens, infos


def test_bottleneck_update_is_the_mean_of_the_streams_bottleneck_outputs():
  trunk = model_with(dict(type="bottleneck", fusion_layer=1, num_bottlenecks=2), depth=3).trunk
  tokens, infos = token_inputs()
  out, _ = trunk(tokens, infos)
  # Reference: the same blocks applied by hand, MBT's update written out.
  x = dict(tokens)
  z = jnp.broadcast_to(trunk.bottleneck[...][None], (3, 2, 32))
  ones = jnp.ones((3, 2), bool)
  for i, block in enumerate(trunk.blocks):
    if i < 1:
      x = {m: block(x[m], infos[m])[0] for m in x}
      continue
    zs = []
    for m in x:
      info = TokenInfo.concat([infos[m], TokenInfo.for_modality(ones, list(x).index(m))])
      y = block(jnp.concatenate([x[m], z], 1), info)[0]
      x[m], zm = y[:, :x[m].shape[1]], y[:, x[m].shape[1]:]
      zs.append(zm)
    z = (zs[0] + zs[1]) / 2
  for m in x:
    np.testing.assert_allclose(out[m], trunk.final_ln(x[m]), rtol=1e-5, atol=1e-5)


def test_bottleneck_averages_only_the_modalities_present_in_each_row():
  model = model_with(dict(type="bottleneck", fusion_layer=0, num_bottlenecks=4))
  b = batch(3)
  present = jnp.array([False, True, True])
  both = model.encode(MI({"video": b["video"], "audio": b["audio"]}, present={"audio": present}))
  alone = model.encode(MI({"video": b["video"]}))
  fused = model.encode(MI({"video": b["video"], "audio": b["audio"]}))
  np.testing.assert_allclose(both.tokens["video"][0], alone.tokens["video"][0], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(both.tokens["video"][1:], fused.tokens["video"][1:], rtol=1e-5, atol=1e-5)
  assert not np.allclose(fused.tokens["video"][0], alone.tokens["video"][0], atol=1e-3)


@pytest.mark.parametrize("share", [False, True])
def test_late_fusion_equals_separately_run_towers(share):
  model = model_with(dict(type="late", share_weights=share))
  b = batch(2)
  together = model.encode(MI({"image": b["image"], "text": b["text"]}))
  for m in ("image", "text"):
    alone = model.encode(MI({m: b[m]}))
    np.testing.assert_allclose(together.tokens[m], alone.tokens[m], rtol=1e-5, atol=1e-5)
  assert ("towers" in vars(model.trunk)) != share


def test_bottleneck_with_fusion_layer_at_depth_is_late_fusion():
  bott = model_with(dict(type="bottleneck", fusion_layer=2, share_weights=False))
  b = batch(2)
  together = bott.encode(MI({"image": b["image"], "text": b["text"]}))
  alone = bott.encode(MI({"image": b["image"]}))
  np.testing.assert_allclose(together.tokens["image"], alone.tokens["image"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("override, message", [
    (["model.fusion.type=bottleneck", "model.fusion.fusion_layer=2"],
     "model.fusion.fusion_layer: 2 is outside \\[0, model.depth=1\\]"),
    (["model.fusion.type=bottleneck", "model.fusion.fusion_layer=-1"], "-1 is outside"),
    (["model.fusion.type=bottleneck", "model.fusion.num_bottlenecks=0"],
     "num_bottlenecks=0: must be an integer >= 1"),
    (["model.fusion.type=late", "model.fusion.num_bottlenecks=2"],
     "num_bottlenecks belongs to fusion type 'bottleneck', not 'late'"),
    (["model.pool=max"], "model.pool='max': valid: 'mean', 'cls'"),
])
def test_fusion_config_errors(override, message):
  with pytest.raises(ConfigError, match=message):
    experiment.load(TINY, override)


def test_bottleneck_fusion_needs_two_modalities_in_the_model():
  c = config_lib.load_recipe(TINY)
  with c.unlocked():
    for m in ("video", "audio", "text"):
      del c.model.modalities[m]
  c.model.fusion.type = "bottleneck"
  with pytest.raises(ConfigError, match="bottleneck fusion needs >= 2 modalities"):
    from mmjax.models.spec import spec_from_config
    spec_from_config(c.model)


def test_negative_partners_differ_in_content_and_each_caption_is_reused_once():
  content = jnp.array([0, 0, 1, 2, 2, 3, 1, 4])
  partner, ok = negative_partners(content, 8)
  assert bool(ok.all())
  assert np.all(np.asarray(content[partner]) != np.asarray(content))
  all_same, ok_same = negative_partners(jnp.zeros(4, jnp.int32), 3)
  assert not bool(ok_same.any())  # nothing differs: no negatives, masked out


@pytest.mark.parametrize("fusion, pool", [
    ("early", "mean"), ("bottleneck", "mean"), ("late", "mean"), ("bottleneck", "cls")])
def test_every_objective_runs_on_every_trunk(fusion, pool):
  b = dict(batch(4), content_id=jnp.array([0, 1, 1, 2]))
  objs = tuple(objectives.make_objective(n, c, KINDS) for n, c in (
      ("match", dict(type="matching", inputs=("video", "audio"))),
      ("ti", dict(type="contrastive")),
      ("cls", dict(type="classification", inputs=("video", "audio"), num_classes=5,
                   logits="modality_mean")),
      ("mim", dict(type="masked", modality="image"))))
  model = model_with(dict(type=fusion), depth=1, pool=pool, heads=objectives.heads_for(objs))
  from flax import nnx
  graphdef, params = nnx.split(model, nnx.Param)
  loss_fn = lambda p: objectives.total_loss(objs, nnx.merge(graphdef, p), b, jax.random.key(0))[0]
  # Jitted: the bottleneck trunk run op by op took ~45 s here; compiled, a few seconds.
  loss, grads = jax.jit(jax.value_and_grad(loss_fn))(params)
  assert np.isfinite(float(loss))
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_fusion_recipe_reads_only_text_image_and_content_and_scores_the_test_split():
  # Video/audio/label preprocessing would cost input time every step for nothing.
  import os
  from tests.conftest import ROOT
  recipe = os.path.join(ROOT, "configs", "mm_world_fusion.py")
  for variant in ("early", "tiny_late_moe"):
    c = experiment.load(f"{recipe}:{variant}")
    assert sorted(c.tasks.default.data.preprocess) == ["content_id", "image", "text"]
    assert sorted(c.model.modalities) == ["image", "text"]
    assert c.evals.loss.split == "test" == c.tasks.default.data.eval_split
