"""mm_world: a real TFDS build of the tiny config, read back through ArrayRecord."""

import filecmp
import json
import os
import shutil

import numpy as np
import pytest

from mmjax.data import sources
from mmjax.data import world
from mmjax.data import world_render as render


def _files(data_dir, config="tiny"):
  folder = os.path.join(data_dir, "mm_world", config, "1.0.0")
  return folder, sorted(f for f in os.listdir(folder) if ".array_record" in f)


def test_splits_shapes_and_dtypes(world_dir):
  for split, n in world.CONFIGS[0].split_sizes().items():
    src = sources.get_source("mm_world/tiny", split, world_dir)
    assert len(src) == n
  ex = src[0]
  assert ex["image"].shape == (32, 32, 3) and ex["image"].dtype == np.uint8
  assert ex["video"].shape == (4, 32, 32, 3) and ex["video"].dtype == np.uint8
  assert ex["audio"].shape == (2048,) and ex["audio"].dtype == np.int16
  assert isinstance(ex["caption"], bytes)
  assert ex["label"] == ex["shape"] * 5 + ex["motion"]
  assert 0 <= ex["content_id"] < render.NUM_CONTENT


def test_rebuild_gives_identical_bytes_and_splits_differ(world_dir, tmp_path):
  world.prepare("tiny", str(tmp_path))
  (a, names), (b, names_b) = _files(world_dir), _files(str(tmp_path))
  assert names == names_b and len(names) == 3
  for name in names:
    assert filecmp.cmp(os.path.join(a, name), os.path.join(b, name), shallow=False), name
  train = sources.get_source("mm_world/tiny", "train", world_dir)
  test = sources.get_source("mm_world/tiny", "test", world_dir)
  assert not np.array_equal(train[0]["image"], test[0]["image"])


def _object_pixels(image):
  # The background is grey ~50 +- noise; every palette colour has a channel > 150.
  return image.max(-1) > 130


def _beep_count(audio):
  slot = audio.astype(np.float32).reshape(8, -1)
  on = np.sqrt((slot / 32768) ** 2).mean(-1) > 0.15
  return int(on.sum())


def test_modalities_agree_on_factors(world_dir):
  src = sources.get_source("mm_world/tiny", "validation", world_dir)
  palette = np.array(list(render.COLOURS.values()), np.float32)
  pitches = np.array(list(render.PITCH_HZ.values()))
  beeps = {m: len(s) for m, s in render.BEEP_SLOTS.items()}
  for i in range(64):
    ex = src[i]
    caption = ex["caption"].decode()
    shape, colour = render.SHAPES[ex["shape"]], render.COLOUR_NAMES[ex["colour"]]
    size, position = render.SIZES[ex["size"]], render.POSITIONS[ex["position"]]
    motion = render.MOTIONS[ex["motion"]]
    for word in (shape, colour, size, position):
      assert word in caption, (word, caption)

    # Image: the object's pixels have the caption's colour and sit in its grid cell.
    mask = _object_pixels(ex["image"])
    mean_rgb = ex["image"][mask].astype(np.float32).mean(0)
    assert render.COLOUR_NAMES[np.argmin(((palette - mean_rgb) ** 2).sum(-1))] == colour
    ys, xs = np.nonzero(mask)
    cell = int(ys.mean() // (32 / 3)) * 3 + int(xs.mean() // (32 / 3))
    assert cell == ex["position"], (caption, ys.mean(), xs.mean())
    # Large objects cover more pixels than any small one.
    assert (mask.sum() > 38) == (size == "large"), (caption, mask.sum())

    # Video: the object moves in the direction of `motion` (or not at all).
    centres = [np.argwhere(_object_pixels(f)).mean(0) for f in ex["video"]]
    dy, dx = centres[-1] - centres[0]
    expected = {"still": (0, 0), "left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}
    ey, ex_ = expected[motion]
    edge_clamped = motion != "still" and abs(dy) + abs(dx) < 1  # object already at the border
    if not edge_clamped:
      assert np.sign(round(dy)) == ey and np.sign(round(dx)) == ex_, (motion, dy, dx)

    # Audio: the dominant frequency is the shape's pitch; beep count encodes motion.
    spectrum = np.abs(np.fft.rfft(ex["audio"].astype(np.float32)))
    peak_hz = np.argmax(spectrum) * render.SAMPLE_RATE / len(ex["audio"])
    assert render.SHAPES[np.argmin(abs(pitches - peak_hz))] == shape, (peak_hz, shape)
    assert _beep_count(ex["audio"]) == beeps[motion], motion


def test_caption_templates_vary(world_dir):
  src = sources.get_source("mm_world/tiny", "train", world_dir)
  starts = {src[i]["caption"].decode().split()[0] for i in range(64)}
  assert len(starts) >= 3


def test_other_version_in_data_dir_is_refused(tmp_path):
  old = tmp_path / "mm_world" / "tiny" / "0.9.0"
  old.mkdir(parents=True)
  (old / "dataset_info.json").write_text("{}")
  with pytest.raises(world.DataDirMismatchError) as err:
    world.prepare("tiny", str(tmp_path))
  msg = str(err.value)
  assert "0.9.0" in msg and "1.0.0" in msg and "another data_dir" in msg
  assert (old / "dataset_info.json").exists()  # nothing deleted
  assert not (tmp_path / "mm_world" / "tiny" / "1.0.0").exists()  # nothing built


def test_changed_generator_parameters_are_refused(world_dir, tmp_path, monkeypatch):
  shutil.copytree(world_dir, tmp_path / "data")
  monkeypatch.setattr(render, "IMAGE_NOISE", render.IMAGE_NOISE + 1)
  with pytest.raises(world.DataDirMismatchError) as err:
    world.prepare("tiny", str(tmp_path / "data"))
  msg = str(err.value)
  found = json.loads((tmp_path / "data/mm_world/tiny/1.0.0/metadata.json").read_text())
  assert found["generator_fingerprint"] in msg
  assert world.config_fingerprint(world.CONFIGS[0])[0] in msg
  assert "delete" in msg and "another data_dir" in msg


def test_truncated_record_file_gives_one_clear_error(world_dir, tmp_path):
  shutil.copytree(world_dir, tmp_path / "data")
  folder, names = _files(str(tmp_path / "data"))
  train_file = os.path.join(folder, next(n for n in names if "-train." in n))
  size = os.path.getsize(train_file)
  with open(train_file, "r+b") as f:
    f.truncate(size - 3000)
  with pytest.raises(sources.DataError) as err:
    sources.get_source("mm_world/tiny", "train", str(tmp_path / "data"))
  msg = str(err.value)
  assert train_file in msg and "'train'" in msg and "fresh data_dir" in msg
  assert os.path.getsize(train_file) == size - 3000  # left as found
  # The other splits are intact and still readable.
  assert len(sources.get_source("mm_world/tiny", "test", str(tmp_path / "data"))) == 256


def test_unknown_config_lists_choices(tmp_path):
  with pytest.raises(ValueError, match="tiny"):
    world.prepare("huge", str(tmp_path))


def test_every_caption_fits_the_recipes_text_length():
  # A truncated caption can lose its position ("bottom" vs "bottom right"), which makes
  # retrieval targets ambiguous; the recipes' max_len must hold every caption + bos/eos.
  import itertools
  from mmjax.config import recipe as config_lib
  from mmjax import experiment
  from tests.conftest import TINY
  longest = max(len(t.format(shape=s, colour=c, size=z, position=p).encode())
                for t in render.TEMPLATES
                for s, c, z, p in itertools.product(render.SHAPES, render.COLOURS, render.SIZES,
                                                    render.POSITIONS))
  for variant in ("tiny", "default"):
    cfg = experiment.load(TINY.replace(":tiny", f":{variant}"))
    assert longest + 2 <= cfg.tasks.default.data.preprocess.text.max_len
    assert cfg.tasks.default.data.preprocess.text.max_len == cfg.model.modalities.text.shape[0]
