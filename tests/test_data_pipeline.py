"""Preprocessing, tokenizer and the grain pipelines over a real mm_world/tiny build."""

import hashlib
import json

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from mmjax.data import pipeline
from mmjax.data import preprocess
from mmjax.data import sources
from mmjax.data import text_tokenizer as tokenizer_lib

SPEC = {
    "image": {"op": "image", "from": "image", "size": 32},
    "video": {"op": "video", "from": "video", "size": 32, "frames": 4},
    "audio": {"op": "log_mel", "from": "audio", "sample_rate": 8000, "num_mels": 32,
              "frame": 256, "hop": 64},
    "text": {"op": "tokenize", "from": "caption", "max_len": 32},
    "label": {"op": "label", "from": "label"},
    "content_id": {"op": "label", "from": "content_id"},
}
# Cheaper spec for tests that only need to identify examples.
ID_SPEC = {"image": {"op": "image", "from": "image", "size": 32},
           "label": {"op": "label", "from": "label"}}


def _cfg(data_dir, spec=SPEC, name="mm_world/tiny"):
  # The trainer passes a (locked) ConfigDict; use the real thing.
  cfg = ml_collections.ConfigDict(dict(
      name=name, data_dir=data_dir, train_split="train", eval_split="test", preprocess=spec,
      tokenizer=dict(kind="byte", model_path=""), worker_count=0))
  cfg.lock()
  return cfg


def _ids(batch):
  """Content hash per row: identifies an example across iterators."""
  return [hashlib.sha1(row.tobytes()).hexdigest() for row in batch["image"]]


def test_byte_tokenizer_round_trip_and_padding():
  tok = tokenizer_lib.make_tokenizer("byte", "")
  ids, mask = tok.encode("a red çircle", 20)
  assert ids.dtype == np.int32 and mask.dtype == np.bool_ and ids.shape == (20,)
  assert ids[0] == tok.bos_id and tok.eos_id in ids and ids.max() < tok.vocab_size
  assert mask.sum() == len("a red çircle".encode()) + 2 and not mask[-1]
  assert tok.decode(ids) == "a red çircle"
  ids, mask = tok.encode("x" * 50, 8)
  assert mask.all() and tok.decode(ids) == "x" * 7
  with pytest.raises(ValueError, match="choices"):
    tokenizer_lib.make_tokenizer("wordpiece", "")


def test_sentencepiece_tokenizer_same_interface(world_dir, tmp_path):
  spm = pytest.importorskip("sentencepiece")
  src = sources.get_source("mm_world/tiny", "train", world_dir)
  captions = [src[i]["caption"].decode() for i in range(200)]
  spm.SentencePieceTrainer.train(sentence_iterator=iter(captions), vocab_size=40,
                                 model_prefix=str(tmp_path / "spm"), minloglevel=2)
  tok = tokenizer_lib.make_tokenizer("sentencepiece", str(tmp_path / "spm.model"))
  ids, mask = tok.encode(captions[0].encode(), 32)
  assert ids.dtype == np.int32 and mask.dtype == np.bool_ and ids.shape == (32,)
  assert ids[0] == tok.bos_id and 0 < ids[mask].min() and ids.max() < tok.vocab_size
  assert (ids[~mask] == 0).all() and tok.decode(ids) == captions[0]
  words = tok.words(ids)
  assert words[0] == 0 and words[mask.sum() - 1] == 0 and (words[~mask] == 0).all()
  # The tokens of word w spell the caption's w-th space-separated word.
  spelt = [tok.decode(ids[words == w]).strip() for w in range(1, words.max() + 1)]
  assert spelt == captions[0].split()
  with pytest.raises(ValueError, match="model_path"):
    tokenizer_lib.make_tokenizer("sentencepiece", str(tmp_path / "missing.model"))
  cfg = _cfg(world_dir, {"text": SPEC["text"]})
  with cfg.unlocked():
    cfg.tokenizer = dict(kind="sentencepiece", model_path=str(tmp_path / "spm.model"))
  batch = next(pipeline.make_train_iterator(cfg, batch_size=4, seed=0))
  assert batch["text"].shape == (4, 32) and batch["text_mask"].any(1).all()
  np.testing.assert_array_equal(batch["text_words"], tok.words(batch["text"]))


def test_byte_tokenizer_marks_words_between_whitespace():
  tok = tokenizer_lib.make_tokenizer("byte", "")
  ids, _ = tok.encode("a red  circle\tat", 20)
  #          bos a _ r e d _ _ c i r c l e \t a t eos pad pad
  want = [0, 1, 0, 2, 2, 2, 0, 0, 3, 3, 3, 3, 3, 3, 0, 4, 4, 0, 0, 0]
  np.testing.assert_array_equal(tok.words(ids), want)
  batch_ids, _ = tok.encode_batch(["a red  circle\tat", "x"], 20)
  np.testing.assert_array_equal(tok.words(batch_ids)[0], want)


def test_train_batch_shapes_and_dtypes(world_dir):
  batch = next(pipeline.make_train_iterator(_cfg(world_dir), batch_size=8, seed=0))
  expected = {
      "image": ((8, 32, 32, 3), np.float32), "video": ((8, 4, 32, 32, 3), np.float32),
      "audio": ((8, 29, 32), np.float32), "text": ((8, 32), np.int32),
      "text_mask": ((8, 32), np.bool_), "text_words": ((8, 32), np.int32),
      "label": ((8,), np.int32),
      "content_id": ((8,), np.int32),
  }
  assert {k: (v.shape, v.dtype) for k, v in batch.items()} == expected
  assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0
  assert abs(batch["audio"].mean()) < 0.1  # standardised log-mel
  assert batch["text"][:, 0].tolist() == [tokenizer_lib.BOS] * 8


def test_log_mel_peak_follows_pitch(world_dir):
  """The audio op keeps what the waveform encodes: higher pitch -> higher mel bin."""
  src = sources.get_source("mm_world/tiny", "validation", world_dir)
  op = preprocess.Preprocess({"a": SPEC["audio"]})
  peak_by_shape = {}
  for i in range(40):
    mel = op(src[i])["a"]
    peak_by_shape.setdefault(src[i]["shape"], set()).add(int(mel.max(0).argmax()))
  peaks = [min(peak_by_shape[s]) for s in sorted(peak_by_shape)]
  assert peaks == sorted(peaks) and len(set(peaks)) == len(peaks)


def test_preprocess_errors_name_key_op_and_choices():
  with pytest.raises(ValueError) as err:
    preprocess.Preprocess({"image": {"op": "imag", "from": "image", "size": 32}})
  assert "'image'" in str(err.value) and "'imag'" in str(err.value) and "log_mel" in str(err.value)
  with pytest.raises(ValueError) as err:
    preprocess.Preprocess({"pic": {"op": "image", "from": "jpeg", "size": 32}},
                          features=["image", "label"])
  assert "'pic'" in str(err.value) and "'jpeg'" in str(err.value) and "'image'" in str(err.value)
  with pytest.raises(ValueError, match="missing args \\['size'\\].*unknown args \\['sise'\\]"):
    preprocess.Preprocess({"image": {"op": "image", "from": "image", "sise": 32}})
  with pytest.raises(ValueError, match="crop='top'; choices"):
    preprocess.Preprocess({"v": {"op": "video", "from": "v", "size": 8, "frames": 2,
                                 "crop": "top"}})
  op = preprocess.Preprocess({"label": {"op": "label", "from": "label"}})
  with pytest.raises(ValueError, match="available features: \\['image'\\]"):
    op({"image": np.zeros((2, 2, 3), np.uint8)})


def test_image_op_decodes_resizes_and_crops():
  import io
  from PIL import Image
  png = io.BytesIO()
  Image.fromarray(np.full((40, 60), 255, np.uint8)).save(png, format="PNG")  # grayscale
  spec = {"x": {"op": "image", "from": "img", "size": 16, "crop": "random"}}
  out = preprocess.Preprocess(spec, train=True)({"img": png.getvalue()},
                                                np.random.default_rng(0))["x"]
  assert out.shape == (16, 16, 3) and out.dtype == np.float32 and np.allclose(out, 1.0)


def test_process_shards_are_disjoint_and_cover_the_split(world_dir):
  seen = []
  for p in range(2):
    it = pipeline.make_train_iterator(_cfg(world_dir, ID_SPEC), batch_size=64, seed=1,
                                      process_index=p, process_count=2)
    ids = [h for _ in range(256 // 32) for h in _ids(next(it))]  # one epoch of the shard
    assert len(set(ids)) == 256
    seen.append(set(ids))
  assert not seen[0] & seen[1]
  with pytest.raises(ValueError, match="not divisible"):
    pipeline.make_train_iterator(_cfg(world_dir), batch_size=9, seed=0, process_count=2)


def test_state_round_trip_resumes_at_the_next_batch(world_dir):
  spec = dict(ID_SPEC, image={"op": "image", "from": "image", "size": 24, "crop": "random"})
  cfg = _cfg(world_dir, spec)
  it = pipeline.make_train_iterator(cfg, batch_size=16, seed=3)
  for _ in range(3):
    next(it)
  state = json.loads(json.dumps(it.get_state()))  # must survive JSON (checkpoints)
  expected = [next(it) for _ in range(2)]
  resumed = pipeline.make_train_iterator(cfg, batch_size=16, seed=3)
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    for key in want:  # random crops included: same rng per record
      np.testing.assert_array_equal(got[key], want[key])
  other_seed = next(pipeline.make_train_iterator(cfg, batch_size=16, seed=4))
  assert _ids(other_seed) != _ids(next(pipeline.make_train_iterator(cfg, batch_size=16, seed=3)))


def test_eval_batches_cover_every_example_once_in_order(world_dir):
  cfg = _cfg(world_dir, ID_SPEC)
  src = sources.get_source("mm_world/tiny", "test", world_dir)
  want_labels = [src[i]["label"] for i in range(len(src))]
  single = list(pipeline.iter_eval_batches(cfg, split="test", batch_size=48))
  assert len(single) == 6 and all(b["image"].shape[0] == 48 for b in single)
  assert all(b["_valid"].dtype == np.bool_ for b in single)
  valid = np.concatenate([b["_valid"] for b in single])
  assert valid.sum() == 256 and valid[:256].all() and not valid[256:].any()
  assert np.concatenate([b["label"] for b in single])[:256].tolist() == want_labels
  # Two processes: equal batch counts, and their rows interleave back to the same order.
  halves = [list(pipeline.iter_eval_batches(cfg, split="test", batch_size=48,
                                            process_index=p, process_count=2)) for p in range(2)]
  assert len(halves[0]) == len(halves[1]) == 6
  for whole, a, b in zip(single, *halves):
    for key in whole:
      np.testing.assert_array_equal(np.concatenate([a[key], b[key]]), whole[key])


@pytest.mark.parametrize("name,size", [("imagenet2012", 32), ("cifar10", 24)])
def test_tfds_datasets_through_get_source_and_spec(name, size, tmp_path):
  spec = {"image": {"op": "image", "from": "image", "size": size, "crop": "random"},
          "label": {"op": "label", "from": "label"}}
  with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, num_examples=12):
    src = pipeline.get_source(name, "train", str(tmp_path))
    assert len(src) == 12 and "image" in src.features
    batch = next(pipeline.make_train_iterator(_cfg(str(tmp_path), spec, name), batch_size=4,
                                              seed=0))
    evals = list(pipeline.iter_eval_batches(_cfg(str(tmp_path), spec, name), split="train",
                                            batch_size=8))
  assert batch["image"].shape == (4, size, size, 3) and batch["image"].dtype == np.float32
  assert batch["label"].dtype == np.int32
  assert [int(b["_valid"].sum()) for b in evals] == [8, 4]


def test_unprepared_dataset_error_says_how_to_prepare(tmp_path):
  with pytest.raises(sources.DataError) as err:
    sources.get_source("cifar10", "train", str(tmp_path))
  assert "tfds build cifar10" in str(err.value) and str(tmp_path) in str(err.value)


def test_default_data_dir_from_environment(monkeypatch, tmp_path):
  monkeypatch.setenv("MMJAX_DATA_DIR", str(tmp_path))
  assert sources.default_data_dir("") == str(tmp_path)
  assert sources.default_data_dir("/x") == "/x"
  monkeypatch.delenv("MMJAX_DATA_DIR")
  assert sources.default_data_dir("").endswith(".cache/mmjax/tensorflow_datasets")
