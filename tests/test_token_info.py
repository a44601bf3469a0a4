"""TokenInfo's attention mask against hand-built masks, and through a trunk."""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mmjax.models.ffn.mlp import MlpConfig
from mmjax.models.token_info import TokenInfo
from mmjax.models.transformer import Block
from mmjax.models.trunks.early import EarlyFusionConfig


def info(causal, valid=None, segment=None):
  causal = np.asarray(causal, bool)[None]
  valid = np.ones_like(causal) if valid is None else np.asarray(valid, bool)[None]
  segment = np.zeros(causal.shape, np.int32) if segment is None else np.asarray(segment)[None]
  return TokenInfo(valid=jnp.asarray(valid), modality=jnp.zeros(causal.shape, jnp.int32),
                   causal=jnp.asarray(causal), segment=jnp.asarray(segment, jnp.int32))


def mask_of(i: TokenInfo) -> np.ndarray:
  m = np.asarray(i.attention_mask())
  assert m.shape == (1, 1) + (i.valid.shape[1],) * 2 and m.dtype == bool
  return m[0, 0].astype(int)


def test_bidirectional_attends_to_every_valid_key():
  want = np.array([[1, 1, 1, 0]] * 4)  # the last key is padding
  np.testing.assert_array_equal(mask_of(info([0, 0, 0, 0], valid=[1, 1, 1, 0])), want)


def test_causal_attends_to_the_past_and_itself():
  want = np.array([[1, 0, 0, 0],
                   [1, 1, 0, 0],
                   [1, 1, 1, 0],
                   [1, 1, 1, 1]])
  np.testing.assert_array_equal(mask_of(info([1, 1, 1, 1])), want)


def test_prefix_lm_sees_the_whole_prefix_and_the_causal_past():
  want = np.array([[1, 1, 0, 0, 0],   # the prefix sees itself whole ...
                   [1, 1, 0, 0, 0],   # ... and never the causal rest
                   [1, 1, 1, 0, 0],
                   [1, 1, 1, 1, 0],
                   [1, 1, 1, 1, 1]])
  np.testing.assert_array_equal(mask_of(info([0, 0, 1, 1, 1])), want)


def test_a_bidirectional_block_inside_causal_text_sees_itself_and_the_past():
  want = np.array([[1, 0, 0, 0, 0],   # text
                   [1, 1, 1, 0, 0],   # image: itself whole and the text before it
                   [1, 1, 1, 0, 0],
                   [1, 1, 1, 1, 0],   # text after the image
                   [1, 1, 1, 1, 1]])
  np.testing.assert_array_equal(mask_of(info([1, 0, 0, 1, 1])), want)


def test_segments_keep_packed_examples_apart():
  want = np.array([[1, 1, 0, 0, 0],
                   [1, 1, 0, 0, 0],
                   [0, 0, 1, 0, 0],   # segment 1 is causal: a prefix-LM packed after segment 0
                   [0, 0, 1, 1, 0],
                   [0, 0, 1, 1, 1]])
  got = mask_of(info([0, 0, 1, 1, 1], segment=[0, 0, 1, 1, 1]))
  np.testing.assert_array_equal(got, want)
  both_bidirectional = mask_of(info([0] * 5, segment=[0, 0, 1, 1, 1], valid=[1, 1, 1, 1, 0]))
  np.testing.assert_array_equal(both_bidirectional, [[1, 1, 0, 0, 0]] * 2 + [[0, 0, 1, 1, 0]] * 3)


def test_concat_and_for_modality_keep_every_field_aligned():
  a = TokenInfo.for_modality(jnp.ones((2, 3), bool), 0)
  b = TokenInfo.for_modality(jnp.ones((2, 2), bool), 1, causal=True,
                             segment_bl=jnp.ones((2, 2), jnp.int32))
  c = TokenInfo.concat([a, b])
  np.testing.assert_array_equal(c.modality[0], [0, 0, 0, 1, 1])
  np.testing.assert_array_equal(c.causal[0], [0, 0, 0, 1, 1])
  np.testing.assert_array_equal(c.segment[0], [0, 0, 0, 1, 1])


def _early_trunk(depth=2, width=16):
  kw = dict(param_dtype=jnp.float32, dtype=jnp.float32, rngs=nnx.Rngs(0))

  def make_block(layer):
    return Block(width, 2, MlpConfig().build(layer, width=width, mlp_dim=32, **kw), **kw)
  return EarlyFusionConfig().build(depth=depth, width=width, make_block=make_block,
                                   remat="none", modalities=("x",), **kw)


def test_a_packed_row_computes_what_its_examples_compute_alone():
  trunk = _early_trunk()
  x = jax.random.normal(jax.random.key(0), (1, 7, 16))
  seg = jnp.asarray([[0, 0, 0, 1, 1, 1, 1]], jnp.int32)
  causal = jnp.asarray([[0, 0, 1, 0, 1, 1, 1]], bool)  # two prefix-LM examples, packed
  packed = TokenInfo(valid=jnp.ones((1, 7), bool), modality=jnp.zeros((1, 7), jnp.int32),
                     causal=causal, segment=seg)
  out, _ = trunk({"x": x}, {"x": packed})
  for lo, hi in ((0, 3), (3, 7)):
    alone = TokenInfo(valid=jnp.ones((1, hi - lo), bool),
                      modality=jnp.zeros((1, hi - lo), jnp.int32), causal=causal[:, lo:hi],
                      segment=jnp.zeros((1, hi - lo), jnp.int32))
    want, _ = trunk({"x": x[:, lo:hi]}, {"x": alone})
    np.testing.assert_allclose(out["x"][:, lo:hi], want["x"], rtol=1e-5, atol=1e-5)


def test_causal_outputs_never_depend_on_later_tokens():
  trunk = _early_trunk()
  x = jax.random.normal(jax.random.key(1), (1, 6, 16))
  i = TokenInfo.for_modality(jnp.ones((1, 6), bool), 0, causal=True)
  changed = x.at[:, 4:].set(0.0)
  a, _ = trunk({"x": x}, {"x": i})
  b, _ = trunk({"x": changed}, {"x": i})
  np.testing.assert_allclose(a["x"][:, :4], b["x"][:, :4], rtol=1e-6, atol=1e-6)
  assert not np.allclose(a["x"][:, 4:], b["x"][:, 4:])
