"""Batched preprocessing equals the per-example ops bit for bit; workers keep the stream
exact; bad data settings fail before training with a message naming the key."""
import json

import ml_collections
import numpy as np
import pytest
from PIL import Image

from mmjax.data import decode, pipeline, preprocess, resize, sources, workers
from mmjax.data import text_tokenizer as tokenizer_lib

SPEC = {
    "image": {"op": "image", "from": "image", "size": 24, "crop": "random"},
    "video": {"op": "video", "from": "video", "size": 16, "frames": 3, "crop": "random"},
    "audio": {"op": "log_mel", "from": "audio", "sample_rate": 8000, "num_mels": 32,
              "frame": 256, "hop": 64, "samples": 2240},
    "text": {"op": "tokenize", "from": "caption", "max_len": 20},
    "label": {"op": "label", "from": "label"},
}


def _cfg(data_dir, spec=SPEC, worker_count=0):
  cfg = ml_collections.ConfigDict(dict(
      name="mm_world/tiny", data_dir=data_dir, train_split="train", eval_split="test",
      preprocess=spec, tokenizer=dict(kind="byte", model_path=""), worker_count=worker_count))
  cfg.lock()
  return cfg


@pytest.mark.parametrize("train", [True, False])
def test_pipeline_batches_equal_per_example_ops(world_dir, train):
  """The reference: today's per-example path (Preprocess.__call__ per global position)."""
  cfg = _cfg(world_dir)
  src = sources.get_source("mm_world/tiny", "train", world_dir)
  per_example = preprocess.Preprocess(SPEC, tokenizer=tokenizer_lib.ByteTokenizer(), train=train)
  assert all(op.batched for op in per_example.ops)
  if train:
    it = pipeline.make_train_iterator(cfg, batch_size=16, seed=7)
    order = pipeline.GlobalOrder(len(src), 7, 16, 0, 1)
    for k in range(3):
      got = next(it)
      for row in range(16):
        g = order.position(k * 16 + row)
        want = per_example(src[order.index(g)], np.random.default_rng([7, 1, g]))
        for key in want:
          np.testing.assert_array_equal(got[key][row], want[key], err_msg=key)
          assert got[key].dtype == want[key].dtype
  else:
    batches = list(pipeline.iter_eval_batches(cfg, split="train", batch_size=200))
    got = {k: np.concatenate([b[k] for b in batches])[:len(src)] for k in batches[0]}
    for i in range(0, len(src), 37):
      for key, value in per_example(src[i]).items():
        np.testing.assert_array_equal(got[key][i], value, err_msg=key)


def test_columnar_decode_equals_tfds_decode(world_dir):
  src = sources.get_source("mm_world/tiny", "validation", world_dir)
  indices = [5, 0, 99, 5, 127]
  got = src.read_batch(indices)
  want = decode.columns_of([src[i] for i in indices])
  assert sorted(got) == sorted(want)
  for key in want:
    if isinstance(want[key][0], np.ndarray):
      np.testing.assert_array_equal(got[key], np.stack(want[key]))
      assert got[key].dtype == want[key][0].dtype
    else:
      assert list(got[key]) == list(want[key]) and type(got[key][0]) is type(want[key][0])


def test_batched_resize_equals_pillow_up_and_down():
  rng = np.random.default_rng(0)
  for h, w, nh, nw in [(32, 32, 16, 16), (40, 60, 16, 24), (61, 22, 7, 5), (17, 23, 32, 45),
                       (87, 42, 21, 82), (5, 9, 64, 3), (34, 13, 24, 9)]:
    imgs = rng.integers(0, 256, (3, h, w, 3), dtype=np.uint8)
    want = np.stack([np.asarray(Image.fromarray(i).resize((nw, nh), Image.BILINEAR))
                     for i in imgs])
    np.testing.assert_array_equal(resize.resize_bilinear(imgs, nh, nw), want)


def test_batched_image_op_decodes_encoded_images_per_example():
  import io
  rng = np.random.default_rng(1)
  column = []
  for shape in [(40, 60, 3), (60, 40, 3), (30, 30)]:  # different sizes, one grayscale
    png = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(png, format="PNG")
    column.append(png.getvalue())
  op = preprocess.Preprocess({"x": {"op": "image", "from": "img", "size": 16}}, train=False)
  got = op.batch({"img": column})["x"]
  np.testing.assert_array_equal(got, np.stack([op({"img": v})["x"] for v in column]))


def test_byte_tokenizer_batch_equals_per_text():
  tok = tokenizer_lib.ByteTokenizer()
  texts = [b"a red circle", "çé", b"", b"x" * 60, "moves left"]
  for max_len in (0, 1, 2, 7, 64):
    ids, mask = tok.encode_batch(texts, max_len)
    want = [tok.encode(t, max_len) for t in texts]
    np.testing.assert_array_equal(ids, np.stack([w[0] for w in want]))
    np.testing.assert_array_equal(mask, np.stack([w[1] for w in want]))


def test_bad_data_settings_fail_before_training(world_dir):
  cores = workers.host_cores()
  with pytest.raises(workers.InputConfigError, match=f"worker_count={cores + 1}.*{cores} cores"):
    pipeline.make_train_iterator(_cfg(world_dir, worker_count=cores + 1), batch_size=8, seed=0)
  with pytest.raises(workers.InputConfigError, match="worker_count=-2"):
    pipeline.validate(_cfg(world_dir, worker_count=-2), batch_size=8)
  with pytest.raises(workers.InputConfigError, match="not divisible by process_count 3"):
    pipeline.validate(_cfg(world_dir), batch_size=8, process_count=3)
  spec = dict(SPEC, audio=dict(SPEC["audio"], samples=0, batched=True))
  with pytest.raises(ValueError, match=r"preprocess\['audio'\].*cannot run batched.*samples"):
    pipeline.validate(_cfg(world_dir, spec), batch_size=8)
  # Without batched=True, an op that cannot batch runs per example.
  del spec["audio"]["batched"]
  pipeline.validate(_cfg(world_dir, spec), batch_size=8)


def test_auto_worker_count_is_in_process_on_small_hosts():
  assert workers.resolve(-1, cores=2) == workers.Parallelism(workers=0, read_threads=1)
  assert workers.resolve(-1, cores=16).workers == 15
  assert workers.resolve(3, cores=16) == workers.Parallelism(workers=3, read_threads=0)


# Starts grain worker processes (~25 s cold): in the slow tier.
@pytest.mark.slow
def test_worker_processes_give_the_same_stream_and_resume_exactly(world_dir):
  """A grain worker process builds the same batches; a state saved with workers resumes
  without them (and on two processes) with nothing repeated or lost."""
  spec = {k: SPEC[k] for k in ("image", "label")}
  ref = pipeline.make_train_iterator(_cfg(world_dir, spec), batch_size=16, seed=2)
  reference = [next(ref) for _ in range(5)]
  with_workers = pipeline.make_train_iterator(_cfg(world_dir, spec, worker_count=1),
                                              batch_size=16, seed=2)
  try:
    for want in reference[:3]:
      got = next(with_workers)
      for key in want:
        np.testing.assert_array_equal(got[key], want[key])
    state = json.loads(json.dumps(with_workers.get_state()))
  finally:
    with_workers.close()
  halves = []
  for p in range(2):
    it = pipeline.make_train_iterator(_cfg(world_dir, spec), batch_size=16, seed=2,
                                      process_index=p, process_count=2)
    it.set_state(state)
    halves.append([next(it) for _ in range(2)])
  for k, want in enumerate(reference[3:]):
    np.testing.assert_array_equal(
        np.concatenate([halves[0][k]["image"], halves[1][k]["image"]]), want["image"])


def test_a_failing_example_is_named(world_dir):
  cfg = _cfg(world_dir, {"image": {"op": "image", "from": "caption", "size": 8}})
  it = pipeline.make_train_iterator(cfg, batch_size=4, seed=0)
  with pytest.raises(pipeline.InputError, match=r"examples \[\d+, \d+, \d+, \d+\]"):
    next(it)
