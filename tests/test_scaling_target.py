"""The tiny sweep's target: whole-word masked captions with audio context, and its floor E."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.config.registry import FieldError
from mmjax.data.text_tokenizer import ByteTokenizer
from mmjax.objectives.masked import Masked, whole_word_mask, word_separators
from mmjax.scaling import caption_floor


def _captions():
  texts = ["a small red circle at the top left", "the center holds a large blue cross",
           "white square (small), bottom", "x"]
  ids, valid = ByteTokenizer().encode_batch(texts, 48)
  return ids, valid


def test_whole_word_mask_hides_whole_words_and_never_separators():
  ids, valid = _captions()
  words = ByteTokenizer().words(ids)
  sep = np.asarray(word_separators(words, valid))
  word = np.cumsum(sep, axis=1)
  fractions = []
  for seed in range(20):
    hide = np.asarray(whole_word_mask(jax.random.key(seed), words, 0.5, valid))
    assert not (hide & sep).any()
    assert hide.any(axis=1).all()  # every row has a target, even the one-word caption
    for b in range(len(ids)):
      for w in np.unique(word[b][~sep[b]]):
        in_word = hide[b][(word[b] == w) & ~sep[b]]
        assert in_word.all() or not in_word.any()  # a word is hidden whole or not at all
    fractions.append(hide[:3].sum() / (~sep[:3]).sum())
  assert 0.35 < np.mean(fractions) < 0.65


def _id_based_mask(rng, ids, ratio, valid):
  """Whole-word masking as it was when it read the byte tokenizer's ids (space, bos, eos)."""
  sep = (ids == ord(" ") + ByteTokenizer.offset) | (ids == 1) | (ids == 2) | ~valid
  word = jnp.cumsum(sep, axis=1)
  scores = jax.random.uniform(rng, ids.shape)
  word_scores = jnp.where(sep, 2.0, jnp.take_along_axis(scores, word, axis=1))
  lowest = word_scores == word_scores.min(axis=1, keepdims=True)
  return ((word_scores < ratio) | lowest) & ~sep


def test_word_marks_give_byte_text_the_masks_it_had_before_them():
  ids, valid = _captions()
  words = ByteTokenizer().words(ids)
  for seed in range(10):
    rng = jax.random.key(seed)
    np.testing.assert_array_equal(whole_word_mask(rng, words, 0.5, valid),
                                  _id_based_mask(rng, ids, 0.5, valid))


def test_words_that_abut_are_hidden_apart():
  # SentencePiece-style marks: "\u2581the" "\u2581cat" "s" are words 1, 2, 2 with nothing between.
  words = jnp.asarray([[0, 1, 2, 2, 3, 0]] * 64)
  valid = jnp.ones(words.shape, bool)
  hide = np.asarray(whole_word_mask(jax.random.key(0), words, 0.5, valid))
  assert not hide[:, [0, 5]].any()
  assert (hide[:, 2] == hide[:, 3]).all()
  assert (hide[:, 1] != hide[:, 2]).any() and (hide[:, 3] != hide[:, 4]).any()


def test_word_unit_is_for_text_only():
  Masked("m", modality="text", unit="word")
  with pytest.raises(FieldError, match="needs the text modality") as e:
    Masked("m", modality="image", unit="word")
  assert e.value.field == "unit"
  with pytest.raises(FieldError, match="choose token or word") as e:
    Masked("m", unit="span")
  assert e.value.field == "unit"


def test_the_floor_is_zero_with_the_image_and_real_with_audio_whole_words():
  """Why the sweep's target hides whole words and sees the audio: with token masking a
  caption is recoverable from its visible bytes (floor ~0: nothing for E to fit), and the
  image determines every caption word; the audio determines only the shape."""
  floor = lambda context, unit: caption_floor.floor(context, unit=unit, examples=400)
  assert floor("image", "word") == pytest.approx(0.0, abs=1e-3)
  assert floor("audio", "token") < 0.05
  audio_word = floor("audio", "word")
  assert 0.15 < audio_word < floor("none", "word")  # the audio's shape lowers it, not to 0


def test_the_next_token_floor_is_the_template_alone_with_the_image():
  """NMM's generative target: with the image only the template (4, drawn independently of
  the scene) is unknown, so a caption's summed loss is log 4, spread over its targets; each
  modality that says less raises the floor, which is what fusing the image is worth."""
  from mmjax.data import world_render
  ab, _ = ByteTokenizer().encode_batch(["ab"], 48)
  assert (np.asarray(ab) != 0).sum() == 4  # bos a b eos: 3 targets, BOS is none
  ids, _ = caption_floor._captions(48)
  targets = (ids != 0).sum(1) - 1
  image = caption_floor.next_token_floor("image")
  assert image == pytest.approx(np.log(len(world_render.TEMPLATES)) / targets.mean(), rel=1e-9)
  assert 0.02 < image < caption_floor.next_token_floor("audio") \
      < caption_floor.next_token_floor("none")
