"""The workdir layout users and tools rely on, in one place.

  config.json            the config of the run (rewritten on resume once it is known compatible)
  config_history/        earlier config.json files, kept when a resume changed a setting
  lock                   held by the one trainer writing here (mmjax/checkpoint/workdir_lock.py)
  checkpoints/<step>/    Orbax checkpoints (+ mmjax_checksums.process_<i>.json)
  checkpoints_damaged/   steps that failed verification, moved aside by the trainer
  metrics.jsonl          one JSON object per logged step
  tensorboard/           event files
  eval/                  evaluation results (mmjax.evaluate)
"""
from __future__ import annotations

import json
import logging
import os
import time

from mmjax.config import recipe as config_lib
from mmjax.errors import MmjaxError

log = logging.getLogger("mmjax.checkpoint.workdir")


class WorkdirError(MmjaxError, ValueError):
  """--workdir cannot be a workdir (e.g. it names a file)."""


def check_usable(workdir: str) -> None:
  """Refuses a --workdir that exists but is not a directory, before anything is written."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirError(f"--workdir {workdir} is a file, not a directory; name a new or "
                       f"existing directory")
  existing = os.path.abspath(workdir)
  while not os.path.exists(existing):  # the workdir, or the folder it will be created in
    existing = os.path.dirname(existing)
  if not os.access(existing, os.W_OK | os.X_OK):  # also false on a read-only mount
    raise WorkdirError(f"--workdir {workdir}: this process may not write in {existing} "
                       f"(permissions, or a read-only filesystem); name a writable directory")


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
  try:
    with open(path, "rb") as f:
      return config_lib.from_json(f.read().decode("utf-8"))
  except (ValueError, TypeError, AttributeError) as e:  # not JSON, or not a config object
    raise WorkdirError(f"{path} is not a readable mmjax config ({type(e).__name__}: "
                       f"{str(e)[:200]}); it was damaged or replaced. Restore it from "
                       f"config_history/ or a backup, or rewrite it from the recipe the run was "
                       f"started with") from None


def _flat(tree, prefix: str = "") -> dict:
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flat(v, f"{prefix}{k}."))
    return out
  return {prefix[:-1]: tree}


def changed_keys(old: dict, new: dict) -> list[str]:
  a, b = _flat(old), _flat(new)
  return sorted(k for k in set(a) | set(b) if a.get(k, "<absent>") != b.get(k, "<absent>"))


def write_config(workdir: str, config) -> list[str]:
  """Writes config.json; on a resume that changed settings, keeps the earlier file under
  config_history/ and logs a warning naming the changed keys (which it returns)."""
  text = config_lib.to_json(config)
  changed = []
  if os.path.isfile(config_path(workdir)):
    with open(config_path(workdir)) as f:
      old_text = f.read()
    try:
      changed = changed_keys(json.loads(old_text), json.loads(text))
    except ValueError:
      changed = ["<config.json was unreadable>"]
    if not changed:
      return []
    history = os.path.join(workdir, "config_history")
    os.makedirs(history, exist_ok=True)
    kept = os.path.join(history, f"config.{time.strftime('%Y%m%d-%H%M%S')}.{os.getpid()}.json")
    with open(kept, "w") as f:
      f.write(old_text)
    log.warning("resuming with changed settings: %s (the earlier config.json is kept as %s)",
                ", ".join(changed), kept)
  tmp = config_path(workdir) + ".tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, config_path(workdir))  # atomic: a crash never leaves half a config
  return changed


def write_json(path: str, obj) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True)
  os.replace(tmp, path)
