"""python -m mmjax.pretokenize --tokenizer WORKDIR --dataset NAME --out DIR [--name N]
[--data_dir D] [--batch_size 256] [--shard_size 8192] [--overwrite]

Prints one JSON object (what was written and skipped, examples/s) on stdout; progress,
one line per shard, on stderr. Bad input ends with one line `error: ...` and exit code 2,
before anything is read or written.
"""
from __future__ import annotations

import argparse
import json
import sys


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m mmjax.pretokenize",
                              description="token ids of a dataset's images, as a dataset")
  p.add_argument("--tokenizer", required=True, help="workdir of a tokenizer run "
                 "(configs/mm_world_tokenizer.py)")
  p.add_argument("--dataset", required=True, help="source dataset, e.g. mm_world/default")
  p.add_argument("--out", required=True, help="data_dir to write the result into")
  p.add_argument("--name", default="", help="result's dataset name (default <source>_tokens)")
  p.add_argument("--data_dir", default="", help="the source's data_dir "
                 "(default $MMJAX_DATA_DIR or ~/.cache/mmjax/tensorflow_datasets)")
  p.add_argument("--batch_size", type=int, default=256)
  p.add_argument("--shard_size", type=int, default=8192, help="examples per ArrayRecord file")
  p.add_argument("--overwrite", action="store_true",
                 help="replace an output made by another tokenizer or from another dataset")
  return p


def main(argv: list[str]) -> int:
  args = _parser().parse_args(argv)
  from mmjax.errors import MmjaxError
  from mmjax.pretokenize import run
  try:
    result = run.pretokenize(run.Request(**vars(args)))
  except MmjaxError as e:
    sys.stderr.write(f"error: {e}\n")
    return 2
  print(json.dumps(result, sort_keys=True))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
