"""Where metrics go: `<workdir>/metrics.jsonl` (one JSON object per line) and TensorBoard
event files under `<workdir>/tensorboard/` (tensorboardX; no TensorFlow). Only process 0 writes.
"""
from __future__ import annotations

import json
import math
import os
import re
import time


def tensorboard_name(name: str) -> str:
  """TensorBoard tags allow [A-Za-z0-9_./-]: 'r@1' becomes 'r_at_1' there (jsonl keeps 'r@1')."""
  return re.sub(r"[^A-Za-z0-9_./-]", "_", name.replace("@", "_at_"))


class MetricsWriter:

  def __init__(self, workdir: str, *, enabled: bool = True):
    self.enabled = enabled
    self._tb = None
    if not enabled:
      return
    self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", buffering=1)
    from tensorboardX import SummaryWriter  # import cost only where metrics are written
    self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), flush_secs=10)

  def write(self, step: int, metrics: dict) -> None:
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in metrics.items()}
    # JSON has no NaN/Inf: write them as strings so the line stays parseable.
    row = {k: (v if math.isfinite(v) else str(v)) for k, v in clean.items()}
    self._jsonl.write(json.dumps({"step": int(step), "time": time.time(), **row}) + "\n")
    for k, v in clean.items():
      self._tb.add_scalar(tensorboard_name(k), v, int(step))

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._tb.close()
