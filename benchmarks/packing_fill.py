"""How full packed rows are: the share of a row's text positions that hold a real token,
and the examples per row, for a recipe's training stream, against the same examples
unpacked (each caption padded to preprocess max_len). Reads data only; no model.

  python benchmarks/packing_fill.py --config configs/mm_world_nmm.py:tiny_early_packed

Last line: JSON {"text_fill_packed", "text_fill_unpacked", "examples_per_row",
"image_slot_fill", "batches", "rows"}.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from mmjax import experiment  # noqa: E402
from mmjax.data import pipeline  # noqa: E402


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", required=True, help="recipe:variant with data.packing")
  parser.add_argument("--batches", type=int, default=20)
  parser.add_argument("--batch_size", type=int, default=16)
  args = parser.parse_args()
  task = experiment.parse(experiment.load(args.config)).tasks["default"]
  pack = pipeline.packing_config(task.data)
  if pack is None:
    raise SystemExit(f"{args.config} has no data.packing section")
  it = pipeline.make_train_iterator(task.data, batch_size=args.batch_size, seed=0)
  fill, docs, slots, real = [], [], [], 0
  for _ in range(args.batches):
    b = next(it)
    seg = b[pack.text + "_segment"]
    fill.append(np.mean(seg > 0))
    real += int(np.sum(seg > 0))
    docs.extend(int(row.max()) for row in seg)
    if pack.images:
      slots.append(np.mean(b[pack.image + "_segment"] > 0))
  rows = args.batches * args.batch_size
  examples = sum(docs) * pack.pairs
  max_len = task.data.preprocess[pack.text].max_len
  print(json.dumps({
      "text_fill_packed": round(float(np.mean(fill)), 4),
      "text_fill_unpacked": round(real / (examples * max_len), 4),
      "examples_per_row": round(examples / rows, 3),
      "image_slot_fill": round(float(np.mean(slots)), 4) if slots else None,
      "batches": args.batches, "rows": rows}))


if __name__ == "__main__":
  main()
