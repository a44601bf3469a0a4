"""Where metrics go: `<workdir>/metrics.jsonl` (one JSON object per line) and TensorBoard
event files under `<workdir>/tensorboard/` (tensorboardX; no TensorFlow). Only process 0 writes.

metrics.jsonl survives crashes: each row is one append of one whole line, undone if the write
fails half-way (a full disk), so lines are whole or absent. On resume, a partial trailing line
(left by a crash mid-write) is dropped, and rows past the resumed step (written after the
checkpoint the run resumes from) move to metrics.superseded.jsonl, so no step appears twice.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import time

from mmjax.checkpoint import write_errors
from mmjax.errors import MmjaxError

log = logging.getLogger("mmjax.metrics")


class MetricsWriteError(MmjaxError, OSError):
  """metrics.jsonl could not be written; the message says why and what to do."""


def tensorboard_name(name: str) -> str:
  """TensorBoard tags allow [A-Za-z0-9_./-]: 'r@1' becomes 'r_at_1' there (jsonl keeps 'r@1')."""
  return re.sub(r"[^A-Za-z0-9_./-]", "_", name.replace("@", "_at_"))


def _row_step(line: bytes) -> int | None:
  try:
    return int(json.loads(line)["step"])
  except (ValueError, KeyError, TypeError, OverflowError):  # e.g. {"step": 1e400}: not a row
    return None


def repair(path: str, resume_step: int | None) -> None:
  """Drops a partial last line and moves rows with step > resume_step aside (see above)."""
  if not os.path.isfile(path):  # absent, or not a plain file (nothing to repair there)
    return
  with open(path, "rb") as f:
    data = f.read()
  lines = data.split(b"\n")
  partial = lines.pop()  # b"" when the file ends with a newline
  keep, later = [], []
  for line in lines:
    step = _row_step(line)
    (later if step is None or step > (resume_step or 0) else keep).append(line)
  if not partial and not later:
    return
  if partial:
    log.warning("%s: dropped a partial last line (%d bytes) left by a crash", path, len(partial))
  if later:
    log.warning("%s: moved %d rows logged after step %s (the resumed checkpoint) to "
                "metrics.superseded.jsonl", path, len(later), resume_step or 0)
    with open(os.path.join(os.path.dirname(path), "metrics.superseded.jsonl"), "ab") as f:
      f.write(b"".join(l + b"\n" for l in later))
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(b"".join(l + b"\n" for l in keep))
  os.replace(tmp, path)  # atomic: a crash here leaves the old file, repaired next time


class MetricsWriter:

  def __init__(self, workdir: str, *, enabled: bool = True, resume_step: int | None = None,
               last_checkpoint=lambda: None):
    self.enabled = enabled
    self._tb = None
    self._fd = None
    self._last_checkpoint = last_checkpoint
    if not enabled:
      return
    self.path = os.path.join(workdir, "metrics.jsonl")
    try:
      repair(self.path, resume_step)
      self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as e:
      self._fail(e)
    from tensorboardX import SummaryWriter  # import cost only where metrics are written
    self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), flush_secs=10)

  def _fail(self, error: OSError):
    raise MetricsWriteError(write_errors.stopped(
        f"writing {self.path}", error, self._last_checkpoint())) from None

  def _append(self, line: bytes) -> None:
    size = os.fstat(self._fd).st_size
    try:
      written = os.write(self._fd, line)
      if written != len(line):
        raise OSError(28, "short write (No space left on device?)")
    except OSError as e:
      try:
        os.ftruncate(self._fd, size)  # whole lines or nothing
      except OSError:
        pass
      self._fail(e)

  def write(self, step: int, metrics: dict) -> None:
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in metrics.items()}
    # JSON has no NaN/Inf: write them as strings so the line stays parseable.
    row = {k: (v if math.isfinite(v) else str(v)) for k, v in clean.items()}
    self._append((json.dumps({"step": int(step), "time": time.time(), **row}) + "\n").encode())
    # One event holding the row's scalars: one add_scalar per value (one event each, through
    # tensorboardX's queue) cost ~5 ms per row, a trivial step's whole host budget.
    from tensorboardX.proto.summary_pb2 import Summary  # loaded with SummaryWriter
    values = [Summary.Value(tag=tensorboard_name(k), simple_value=v) for k, v in clean.items()]
    self._tb.file_writer.add_summary(Summary(value=values), int(step))

  def close(self) -> None:
    if self._fd is not None:
      os.close(self._fd)
      self._fd = None
    if self._tb is not None:
      try:
        self._tb.close()
      except OSError:  # a full disk was already reported by whoever hit it first
        pass
      self._tb = None
