"""The workdir layout users and tools rely on, in one place.

  config.json            the config of the run (rewritten on resume once it is known compatible)
  checkpoints/<step>/    Orbax checkpoints
  metrics.jsonl          one JSON object per logged step
  tensorboard/           event files
  eval/                  evaluation results (mmjax.evaluate)
"""
from __future__ import annotations

import json
import os

from mmjax import config as config_lib


def config_path(workdir: str) -> str:
  return os.path.join(workdir, "config.json")


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(workdir, "checkpoints")


def eval_dir(workdir: str) -> str:
  return os.path.join(workdir, "eval")


def read_config(workdir: str):
  path = config_path(workdir)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} not found: {workdir!r} is not an mmjax workdir "
                            f"(train into it first with python -m mmjax.train --workdir)")
  with open(path) as f:
    return config_lib.from_json(f.read())


def write_config(workdir: str, config) -> None:
  tmp = config_path(workdir) + ".tmp"
  with open(tmp, "w") as f:
    f.write(config_lib.to_json(config))
  os.replace(tmp, config_path(workdir))  # atomic: a crash never leaves half a config


def write_json(path: str, obj) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True)
  os.replace(tmp, path)
