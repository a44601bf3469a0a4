"""python -m mmjax.generate --workdir DIR [--split test] [--n 16] [--prompt TEXT]
    [--temperature 0] [--top_k 0] [--seed 0] [--step N] [--task T] [--objective O]

Restores a checkpoint's parameters onto one device (as mmjax.evaluate does) and decodes,
with a KV cache (mmjax/models/decoding.py), the text of the first `n` examples of a split
from their context (the image): one JSON line per example on stdout,
  {"id": index in the split, "prompt": ..., "generated": ..., "reference": ...}.
The prompt is BOS and then --prompt's text, the same for every example. Refused before
anything compiles: a model with no next-token head, a prompt that leaves the model's text
length no room, bad sampling settings.
"""
from __future__ import annotations

import json
import logging
import sys

from absl import flags

flags.DEFINE_string("workdir", None, "a workdir written by python -m mmjax.train")
flags.DEFINE_integer("step", None, "checkpoint step (default: the latest)")
flags.DEFINE_string("split", "test", "the data split whose examples are captioned")
flags.DEFINE_integer("n", 16, "how many examples (the split's first n)")
flags.DEFINE_string("prompt", "", "text after BOS that every generation continues")
flags.DEFINE_float("temperature", 0.0, "0 = greedy; else sample softmax(logits / T)")
flags.DEFINE_integer("top_k", 0, "sample among the k likeliest tokens; 0 = all")
flags.DEFINE_integer("seed", 0, "the sampling seed")
flags.DEFINE_string("task", "", "the task whose next_token objective generates; '' = the only one")
flags.DEFINE_string("objective", "", "that objective's name; '' = the task's only one")
FLAGS = flags.FLAGS


def find_objective(exp, task: str, objective: str):
  """(task name, the next_token objective) that generates; a clear error where none does."""
  from mmjax.errors import ConfigError
  found = [(t, o) for t, spec in exp.tasks.items() for o in spec.objectives
           if any(n.startswith("generate/") for n in o.predict_fns())
           and (not task or t == task) and (not objective or o.name == objective)]
  if len(found) != 1:
    have = {t: [o.name for o in spec.objectives] for t, spec in exp.tasks.items()}
    what = ("no next-token head: generate needs a task with a next_token objective"
            if not found else "several next-token heads: choose one with --task/--objective")
    raise ConfigError(f"the workdir's model has {what} (--task={task!r}, "
                      f"--objective={objective!r}; its tasks' objectives: {have})")
  return found[0]


def prompt_ids(tokenizer, text: str, max_len: int):
  """int32 ids [P]: BOS and the text's tokens (no EOS); refused if they leave no room."""
  import numpy as np
  from mmjax.errors import ConfigError
  ids, valid = tokenizer.encode(text, 1 << 16)
  ids = ids[:int(valid.sum())]
  ids = ids[:-1] if len(ids) and ids[-1] == tokenizer.eos_id else ids
  if len(ids) >= max_len:
    raise ConfigError(f"--prompt={text!r} is {len(ids)} tokens with BOS, longer than the "
                      f"model's text length {max_len} allows (at most {max_len - 1}, leaving "
                      f"room to generate); shorten the prompt")
  return np.asarray(ids, np.int32)


def sampling_from_flags(temperature: float, top_k: int):
  from mmjax.config.registry import FieldError
  from mmjax.errors import ConfigError
  from mmjax.models.decoding import Sampling
  try:
    return Sampling(temperature=temperature, top_k=top_k)
  except FieldError as e:
    raise ConfigError(f"--{e.field}: {e}") from None


def generate(workdir: str, *, split: str = "test", n: int = 16, prompt: str = "",
             temperature: float = 0.0, top_k: int = 0, seed: int = 0, step=None,
             task: str = "", objective: str = "", overrides=()) -> list[dict]:
  import jax
  import numpy as np
  from mmjax.evaluators import captioning
  from mmjax.evaluators.common import gather, strip_private
  from mmjax.training.restore import restore_params

  sampling = sampling_from_flags(temperature, top_k)
  exp, _, ctx, params, _ = restore_params(workdir, step, overrides)
  task, obj = find_objective(exp, task, objective)
  tokenizer = captioning.tokenizer_of(ctx.data[task])
  prompt = prompt_ids(tokenizer, prompt, exp.model.modalities[obj.modality].shape[0])
  fn = ctx.predict(task, f"generate/{obj.name}")
  rng = jax.random.key(seed)
  run = ctx.jit(lambda model, batch: fn(model, batch, rng, sampling, tokenizer.eos_id,
                                        prompt=prompt))
  rows = []
  for batch in ctx.batches(task, split):
    keep = np.asarray(batch["_valid"], bool)
    out = {k: gather(v) for k, v in run(params, ctx.to_device(strip_private(batch))).items()}
    made = captioning.decode_rows(tokenizer, out["ids"][keep], out["length"][keep])
    refs = captioning.decode_rows(tokenizer, out["reference"][keep],
                                  out["reference_valid"][keep].sum(1))
    for made_text, ref in zip(made, refs):
      rows.append({"id": len(rows), "prompt": tokenizer.decode(prompt),
                   "generated": made_text, "reference": ref})
      if len(rows) == n:
        return rows
  return rows


def main(argv: list[str]) -> int:
  from mmjax.config import cli
  overrides = cli.parse(argv)
  if not FLAGS.workdir:
    cli.fail("--workdir is required, e.g. python -m mmjax.generate --workdir workdirs/nmm")
  if FLAGS.n < 1:
    cli.fail(f"--n={FLAGS.n}: must be >= 1")
  logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
  from mmjax.errors import MmjaxError
  try:
    rows = generate(FLAGS.workdir, split=FLAGS.split, n=FLAGS.n, prompt=FLAGS.prompt,
                    temperature=FLAGS.temperature, top_k=FLAGS.top_k, seed=FLAGS.seed,
                    step=FLAGS.step, task=FLAGS.task, objective=FLAGS.objective,
                    overrides=overrides)
  except (MmjaxError, FileNotFoundError) as e:
    cli.fail(str(e), code=1)
  for row in rows:
    print(json.dumps(row))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
