"""Command-line plumbing shared by the entry points."""
from __future__ import annotations

import os
import sys

from absl import flags


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
  """(argv without --config.KEY=VALUE args, ["KEY=VALUE", ...])."""
  rest, overrides = [], []
  for a in argv:
    if a.startswith("--config."):
      overrides.append(a[len("--config."):])
    else:
      rest.append(a)
  return rest, overrides


def parse(argv: list[str]) -> list[str]:
  """absl flags parsing that keeps --config.* overrides for mmjax.config.recipe; exits 2 on errors."""
  rest, overrides = split_overrides(argv)
  try:
    flags.FLAGS(rest)
  except flags.Error as e:
    sys.stderr.write(f"error: {e}\nRun with --helpfull for all flags.\n")
    sys.exit(2)
  return overrides


def fail(message: str, code: int = 2):
  """Prints a user-facing error (no traceback) and exits at once.

  os._exit, not sys.exit: after a failed save Orbax leaves non-daemon threads waiting for
  signals that never come, and a normal interpreter shutdown would wait for them forever.
  Everything of ours is closed by then (the trainer's finally blocks).
  """
  sys.stderr.write(f"error: {message}\n")
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)
