"""Encoders, positions, the early-fusion trunk and its masks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mmjax.models import logical_axes as axes
from mmjax.models import patchify
from mmjax.models.embedders import ModalitySpec
from mmjax.models.model import build_model
from mmjax.models.model_inputs import ModelInputs as MI
from mmjax.models.model_inputs import model_inputs
from mmjax.models.spec import Heads, ModelSpec

MODALITIES = {
    "image": ModalitySpec("image", (16, 16, 3), (8,)),
    "video": ModalitySpec("video", (4, 16, 16, 3), (2, 8)),
    "audio": ModalitySpec("audio", (16, 16), (8, 8)),
    "text": ModalitySpec("text", (12,), (), 259),
}


def small_model(heads: Heads | None = None, **kw):
  heads = heads or Heads(projections=("image", "text"), contrastive_scales=("ti",),
                         class_heads={"label": 5}, decoders={"text": "text", "image": "image"})
  spec = ModelSpec(modalities=MODALITIES, width=32, depth=2, num_heads=4, mlp_dim=64,
                   embed_dim=16, heads=heads, **kw)
  return build_model(spec, seed=0)


def test_patchify_is_a_reshape_of_the_patch_grid():
  x = jnp.arange(1 * 4 * 4 * 2, dtype=jnp.float32).reshape(1, 4, 4, 2)
  p = patchify.patchify(x, 2)
  assert p.shape == (1, 4, 8)
  np.testing.assert_array_equal(p[0, 1], x[0, 0:2, 2:4].reshape(-1))  # top-right patch
  v = jnp.zeros((2, 4, 8, 8, 3))
  assert patchify.tubelets(v, 2, 4).shape == (2, 2 * 2 * 2, 2 * 4 * 4 * 3)
  assert patchify.spectrogram_patches(jnp.zeros((2, 16, 8)), 4, 4).shape == (2, 8, 16)
  with pytest.raises(ValueError, match="not divisible by patch size 3"):
    patchify.patchify(x, 3)


def test_sincos_and_learned_positions_at_other_sizes():
  t = patchify.sincos_table((2, 3), 16)
  assert t.shape == (6, 16) and np.all(np.isfinite(t))
  assert len({tuple(r) for r in t}) == 6  # every position distinct
  learned = jnp.arange(4 * 8, dtype=jnp.float32).reshape(4, 8)  # a 2x2 grid
  up = patchify.resize_positions(learned, (2, 2), (4, 4))
  assert up.shape == (16, 8)
  # A bigger image runs through the same model with interpolated positions.
  m = small_model()
  enc = m.encode(MI({"image": jnp.ones((2, 32, 32, 3))}))
  assert enc.tokens["image"].shape == (2, 16, 32)


def test_every_parameter_has_logical_axes_matching_its_rank():
  m = small_model()
  _, params = nnx.split(m, nnx.Param)
  names = axes.logical_axes_of(params)
  flat_p = jax.tree.leaves(params)
  flat_n = jax.tree.leaves(names, is_leaf=lambda x: isinstance(x, axes.Names))
  assert len(flat_p) == len(flat_n) > 20
  for p, n in zip(flat_p, flat_n):
    assert len(n) == p.ndim
  big = [n for p, n in zip(flat_p, flat_n) if p.size >= 32 * 32]
  assert all(any(a is not None for a in n) for n in big), "large params must be shardable"


def test_text_padding_does_not_change_the_pooled_embedding():
  m = small_model()
  ids = jnp.array([[1, 40, 41, 42, 2, 0, 0, 0, 0, 0, 0, 0]])
  mask = ids != 0
  a = m.encode(MI({"text": ids}, valid={"text": mask})).pooled["text"]
  ids2 = ids.at[0, 6:].set(77)  # garbage in the padded slots
  b = m.encode(MI({"text": ids2}, valid={"text": mask})).pooled["text"]
  np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_missing_modality_mask_equals_leaving_it_out():
  m = small_model()
  rng = np.random.default_rng(0)
  video = jnp.asarray(rng.normal(size=(2, 4, 16, 16, 3)), jnp.float32)
  audio = jnp.asarray(rng.normal(size=(2, 16, 16)), jnp.float32)
  both = m.encode(MI({"video": video, "audio": audio},
                     present={"audio": jnp.array([False, True])}))
  alone = m.encode(MI({"video": video}))
  fused = m.encode(MI({"video": video, "audio": audio}))
  np.testing.assert_allclose(both.joint[0], alone.joint[0], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(both.joint[1], fused.joint[1], rtol=1e-5, atol=1e-5)
  assert not np.allclose(both.joint[1], alone.joint[1], atol=1e-3)  # audio really fused
  # An example with every modality missing yields zeros, not NaN.
  none = m.encode(MI({"audio": audio}, present={"audio": jnp.array([False, False])}))
  assert np.all(np.isfinite(none.joint))


def test_bfloat16_compute_with_float32_params():
  m = small_model(dtype="bfloat16", param_dtype="float32")
  _, params = nnx.split(m, nnx.Param)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  enc = m.encode(MI({"image": jnp.ones((2, 16, 16, 3))}))
  assert enc.tokens["image"].dtype == jnp.bfloat16
  z, _ = m.embed_modality(MI({"image": jnp.ones((2, 16, 16, 3))}), "image")
  assert z.dtype == jnp.float32
  np.testing.assert_allclose(jnp.linalg.norm(z, axis=-1), 1.0, rtol=1e-3)


def test_heads_shapes():
  m = small_model()
  enc = m.encode(MI({"text": jnp.ones((3, 12), jnp.int32)}))
  logits, aux = m.class_logits(MI({"text": jnp.ones((3, 12), jnp.int32)}), "label")
  assert logits.shape == (3, 5) and aux.losses == {}
  assert m.decode(enc.tokens["text"], "text").shape == (3, 12, 259)
  scale, bias = m.contrastive_scale("ti")
  assert float(scale) == pytest.approx(10.0) and float(bias) == pytest.approx(-10.0)
  with pytest.raises(ValueError, match="not model modalities"):
    m.encode(MI({"smell": jnp.ones((3, 4))}))


def test_prefix_lm_through_the_model_image_prefix_and_causal_text():
  m = small_model()
  rng = np.random.default_rng(0)
  image = jnp.asarray(rng.normal(size=(2, 16, 16, 3)), jnp.float32)
  ids = jnp.asarray(rng.integers(3, 200, size=(2, 12)), jnp.int32)
  later = ids.at[:, 8:].set(5)  # only the last text tokens differ
  enc = lambda t, causal: m.encode(MI({"image": image, "text": t}, causal=causal))
  a, b = enc(ids, ("text",)), enc(later, ("text",))
  np.testing.assert_allclose(a.tokens["image"], b.tokens["image"], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(a.tokens["text"][:, :8], b.tokens["text"][:, :8], rtol=1e-5,
                             atol=1e-5)
  # Bidirectional (the default), the image prefix does see the later text.
  a, b = enc(ids, ()), enc(later, ())
  assert not np.allclose(a.tokens["image"], b.tokens["image"], atol=1e-4)


def test_model_inputs_reads_the_batch_contract():
  batch = {"text": jnp.ones((2, 12), jnp.int32), "text_mask": jnp.ones((2, 12), bool),
           "image": jnp.ones((2, 16, 16, 3)), "image_present": jnp.array([True, False]),
           "label": jnp.zeros((2,), jnp.int32)}
  x = model_inputs(batch, ("image", "text"))
  assert x.modalities == ("image", "text")
  assert set(x.valid) == {"text"} and set(x.present) == {"image"} and x.keep == {}
  assert x.select(("text",)).modalities == ("text",) and x.select(("text",)).present == {}
  np.testing.assert_array_equal(x.present_rows(("image", "text"), 2), [True, False])
  with pytest.raises(ValueError, match="missing"):
    x.select(("audio",))
