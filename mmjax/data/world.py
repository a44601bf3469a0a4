"""`mm_world`: the built-in procedural multimodal dataset as a TFDS builder.

Generated offline from a seed (see `world_render.py`) and written as ArrayRecord so
`tfds.data_source` + grain read it with random access and no TensorFlow.
`prepare()` is the one entry point: it refuses data dirs holding another version
or a build from different generator parameters instead of mixing or overwriting them.
"""

import dataclasses
import json
import os

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from mmjax.data import world_render as render
from mmjax.errors import MmjaxError

_SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}
# Tensors as raw bytes: TFDS's default (one int64 varint per value) made the tiny
# build 2.5x slower, and parsing it is slower too.
_RAW = tfds.features.Encoding.BYTES


@dataclasses.dataclass(kw_only=True)
class WorldConfig(tfds.core.BuilderConfig):
  train: int = 0
  validation: int = 0
  test: int = 0
  seed: int = 0

  def split_sizes(self) -> dict[str, int]:
    return {"train": self.train, "validation": self.validation, "test": self.test}


# Train sizes are set by build time on a 2-core machine: `default` builds in about a
# minute, `large` is 10x that; tests use `tiny`.
CONFIGS = (
    WorldConfig(name="tiny", description="For tests: builds in seconds.",
                train=512, validation=128, test=256, seed=0),
    WorldConfig(name="default", description="Laptop-scale pretraining.",
                train=40_960, validation=1_024, test=1_024, seed=0),
    WorldConfig(name="large", description="10x the default train split.",
                train=409_600, validation=1_024, test=1_024, seed=0),
)


def config_fingerprint(config: WorldConfig) -> tuple[str, dict]:
  params = dict(render.generator_params(), seed=config.seed, splits=config.split_sizes())
  return render.fingerprint(params), params


class MmWorld(tfds.core.GeneratorBasedBuilder):
  """Scenes of one object seen as image, video, audio and caption."""

  name = "mm_world"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = list(CONFIGS)
  DEFAULT_CONFIG_NAME = "default"
  # TFDS derives this from the module's package resources, which needs the
  # `importlib_resources` backport that is not installed; the file path is all it uses.
  code_path = epath.Path(__file__)

  def __init__(self, **kwargs):
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    fp, params = config_fingerprint(self.builder_config)
    n = render.IMAGE_SIZE
    class_label = tfds.features.ClassLabel

    def raw(shape, dtype):
      return tfds.features.Tensor(shape=shape, dtype=dtype, encoding=_RAW)

    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            # Raw tensors, not PNG: decoding PNG would dominate the input pipeline.
            "image": raw((n, n, 3), np.uint8),
            "video": raw((render.NUM_FRAMES, n, n, 3), np.uint8),
            "audio": raw((render.NUM_SAMPLES,), np.int16),
            "caption": tfds.features.Text(),
            "shape": class_label(names=render.SHAPES),
            "colour": class_label(names=render.COLOUR_NAMES),
            "size": class_label(names=render.SIZES),
            "position": class_label(names=[p.replace(" ", "_") for p in render.POSITIONS]),
            "motion": class_label(names=render.MOTIONS),
            "label": class_label(num_classes=len(render.SHAPES) * len(render.MOTIONS)),
            "content_id": class_label(num_classes=render.NUM_CONTENT),
        }),
        metadata=tfds.core.MetadataDict(generator_fingerprint=fp, generator_params=params),
        # Examples are iid by construction; keeping generation order makes eval
        # order == index order and skips TFDS's shuffle pass.
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {split: self._generate_examples(split, size)
            for split, size in self.builder_config.split_sizes().items()}

  def _generate_examples(self, split: str, size: int):
    seed = self.builder_config.seed
    for index in range(size):
      yield index, render.render_example(seed, _SPLIT_IDS[split], index)


class DataDirMismatchError(MmjaxError, RuntimeError):
  """The data dir holds an mm_world build this code must not read or overwrite."""


def _check_existing(builder: MmWorld) -> None:
  config_dir = os.path.dirname(os.fspath(builder.data_path))
  expected_version = str(builder.version)
  if not os.path.isdir(config_dir):
    return
  prepared = os.path.exists(os.path.join(builder.data_path, "dataset_info.json"))
  others = sorted(v for v in os.listdir(config_dir)
                  if v != expected_version and os.path.exists(
                      os.path.join(config_dir, v, "dataset_info.json")))
  if others and not prepared:
    raise DataDirMismatchError(
        f"{config_dir} holds mm_world/{builder.builder_config.name} version(s) "
        f"{', '.join(others)}, but this code generates version {expected_version}. "
        f"Refusing to build a second version next to it. Fix: pass another data_dir, "
        f"or delete {config_dir} if the old build is no longer needed.")
  if not prepared:
    return
  expected_fp, _ = config_fingerprint(builder.builder_config)
  meta_path = os.path.join(builder.data_path, "metadata.json")
  found_fp = None
  if os.path.exists(meta_path):
    with open(meta_path) as f:
      found_fp = json.load(f).get("generator_fingerprint")
  if found_fp != expected_fp:
    raise DataDirMismatchError(
        f"{builder.data_path} holds mm_world built with generator fingerprint "
        f"{found_fp}, but this code's generator parameters give {expected_fp} "
        f"(rendering or split sizes changed without a version bump). Fix: pass "
        f"another data_dir, or delete {builder.data_path} to rebuild it.")


def prepare(config: str, data_dir: str) -> MmWorld:
  """Returns the mm_world builder for `config`, generating it on first use."""
  names = [c.name for c in CONFIGS]
  if config not in names:
    raise ValueError(f"unknown mm_world config {config!r}; choices: {names}")
  builder = MmWorld(config=config, data_dir=data_dir)
  _check_existing(builder)
  # Statistics would cost a second pass over the data and are not used.
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      compute_stats=tfds.download.ComputeStatsMode.SKIP))
  return builder
