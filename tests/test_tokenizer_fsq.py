"""The learned image tokenizer: FSQ's quantiser is exact, its gradient straight-through, and
the tiny tokenizer recipe trains through the real trainer."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import experiment
from mmjax.errors import ConfigError
from mmjax.models import fsq
from tests.conftest import ROOT, run_cli

RECIPE = f"{ROOT}/configs/mm_world_tokenizer.py:tiny"


@pytest.mark.parametrize("levels", [(8, 5, 5, 5), (7, 6), (2,)])
def test_index_and_code_are_a_bijection(levels):
  n = fsq.codebook_size(levels)
  codes = fsq.indices_to_codes(jnp.arange(n), levels)
  assert len({tuple(c) for c in np.asarray(codes).tolist()}) == n  # distinct codes
  np.testing.assert_array_equal(fsq.codes_to_indices(codes, levels), np.arange(n))
  assert float(jnp.abs(codes).max()) <= 1.0


@pytest.mark.parametrize("levels", [(8, 5, 5, 5), (7, 6)])
def test_quantize_uses_exactly_the_levels_and_round_trips(levels):
  z = jax.random.normal(jax.random.key(0), (20000, len(levels))) * 4.0
  codes = fsq.quantize(z, levels)
  for i, lv in enumerate(levels):  # every channel takes exactly L values, all of them
    assert len(np.unique(np.asarray(codes[:, i]))) == lv
  ids = fsq.codes_to_indices(codes, levels)
  assert int(ids.min()) >= 0 and int(ids.max()) < fsq.codebook_size(levels)
  np.testing.assert_array_equal(fsq.indices_to_codes(ids, levels), codes)


def test_straight_through_gradient_is_the_identity():
  x = jnp.linspace(-3.3, 3.3, 7)
  np.testing.assert_array_equal(jax.jacobian(fsq.round_ste)(x), np.eye(7))
  levels = (8, 5)
  z = jax.random.normal(jax.random.key(1), (5, 2))
  w = jax.random.normal(jax.random.key(2), (5, 2))
  # quantize = round_ste(bound(z)) / half: its gradient is that of bound(z) / half
  got = jax.grad(lambda z: jnp.sum(fsq.quantize(z, levels) * w))(z)
  want = jax.grad(lambda z: jnp.sum(fsq.bound(z, levels) / np.array([4.0, 2.0]) * w))(z)
  np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("override, message", [
    ("tasks.default.objectives.tokenizer.downsample=64",
     "channels=.*downsample=64 needs 6 positive widths"),
    ("tasks.default.objectives.tokenizer.levels=(8, 1)", "levels=.*integers >= 2"),
])
def test_bad_tokenizer_settings_are_refused_naming_the_key(override, message):
  with pytest.raises(ConfigError, match=message):
    experiment.load(RECIPE, [override])


def test_an_image_size_the_downsampling_does_not_divide_is_refused():
  overrides = ["tasks.default.objectives.tokenizer.downsample=64",
               "tasks.default.objectives.tokenizer.channels=(2, 2, 2, 2, 2, 2)"]
  with pytest.raises(ConfigError, match="image H=32 is not divisible by downsample=64"):
    experiment.load(RECIPE, overrides)


@pytest.mark.slow
def test_tiny_tokenizer_trains_checkpoints_and_reports_its_quality(tmp_path, world_dir):
  workdir = tmp_path / "tok"
  run_cli("mmjax.train", ["--config", RECIPE, "--workdir", str(workdir),
                          f"--config.tasks.default.data.data_dir={world_dir}"])
  rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  losses = [r["train/default/loss"] for r in rows if "train/default/loss" in r]
  assert losses[-1] < 0.5 * losses[0], losses
  final = {k: v for r in rows for k, v in r.items()}
  assert final["default/tokenizer/tokens_per_image"] == 64.0  # 32x32 at stride 4
  assert final["default/tokenizer/codebook_size"] == 1000.0
  assert final["default/tokenizer/psnr"] > 15.0
  assert 1.0 < final["default/tokenizer/perplexity"] <= 1000.0
  assert 0.0 < final["default/tokenizer/code_usage"] <= 1.0
  assert (workdir / "checkpoints" / "30").is_dir()  # an Orbax checkpoint like any run's
