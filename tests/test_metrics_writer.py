"""metrics.jsonl and the TensorBoard event file hold the same rows."""
from __future__ import annotations

import glob
import json
import os
import struct

from tensorboardX.proto.event_pb2 import Event

from mmjax.training.metrics_writer import MetricsWriter


def read_events(path: str) -> list[Event]:
  """The records of a TFRecord file (length, its CRC, data, its CRC), parsed as Events."""
  events, data = [], open(path, "rb").read()
  pos = 0
  while pos < len(data):
    (length,) = struct.unpack("<Q", data[pos:pos + 8])
    events.append(Event.FromString(data[pos + 12:pos + 12 + length]))
    pos += 12 + length + 4
  return events


def test_every_scalar_of_a_row_reaches_tensorboard_with_its_step(tmp_path):
  writer = MetricsWriter(str(tmp_path))
  writer.write(4, {"train/default/loss": 2.5, "default/retrieval/r@1": 0.25})
  writer.write(8, {"train/default/loss": 1.5, "perf/mfu": float("nan")})
  writer.close()
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [r["step"] for r in rows] == [4, 8] and rows[1]["perf/mfu"] == "nan"
  [path] = glob.glob(os.path.join(tmp_path, "tensorboard", "events.out.tfevents.*"))
  scalars = {(e.step, v.tag): v.simple_value for e in read_events(path) for v in e.summary.value}
  assert scalars[(4, "train/default/loss")] == 2.5
  assert scalars[(4, "default/retrieval/r_at_1")] == 0.25  # TensorBoard's tag alphabet
  assert scalars[(8, "train/default/loss")] == 1.5
  assert scalars[(8, "perf/mfu")] != scalars[(8, "perf/mfu")]  # NaN stays NaN there
  assert len(scalars) == 4
