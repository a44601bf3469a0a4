"""The extended vocabulary: discrete modalities share one table, each in its own rows."""
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import experiment
from mmjax.errors import ConfigError
from mmjax.experiment import build
from mmjax.models.model import build_model
from tests.conftest import ROOT

RECIPE = f"{ROOT}/configs/mm_world_discrete.py:tiny"


@pytest.fixture
def data_dir(tmp_path):
  """A data_dir where the recipe's dataset name resolves (config parsing reads no data)."""
  (tmp_path / "mm_world_tokens").mkdir()
  return str(tmp_path)


def test_text_and_image_ids_take_disjoint_rows_of_one_table(data_dir):
  spec = build.model_spec(experiment.load(RECIPE, [
      f"tasks.default.data.data_dir={data_dir}"]))
  assert {m: s.offset for m, s in spec.modalities.items()} == {"text": 0, "image": 259}
  model = build_model(spec, seed=0)
  table = np.asarray(model.vocab_table.embedding[...])
  assert table.shape == (259 + 1000 + 2, spec.width)
  image = model.embedders["image"]
  text = model.embedders["text"]
  assert image.table is text.table is model.vocab_table  # one parameter, not copies
  image_rows = np.asarray(image.lookup(jnp.arange(1000)[None]))[0]
  text_rows = np.asarray(text.lookup(jnp.arange(259)[None]))[0]
  np.testing.assert_array_equal(image_rows, table[259:1259])
  np.testing.assert_array_equal(text_rows, table[:259])
  # the same id is a different token in each modality
  assert not np.allclose(image.lookup(jnp.zeros((1, 1), int)), text.lookup(jnp.zeros((1, 1), int)))


@pytest.mark.parametrize("override, message", [
    ("model.modalities.image.vocab_size=1000",
     r"image.vocab_size=1000: the discrete vocabulary \(text 259 \+ image 1000 \+ special 2 = 1261 "
     r"ids\) is larger than the embedding table; use vocab_size >= 1261"),
    ("model.modalities.image.segment=pixels",
     r"image.segment='pixels': name the vocabulary segment.*valid: \['text', 'image', 'special'\]"),
])
def test_a_vocabulary_that_does_not_fit_is_refused(data_dir, override, message):
  with pytest.raises(ConfigError, match=message):
    experiment.load(RECIPE, [f"tasks.default.data.data_dir={data_dir}", override])
