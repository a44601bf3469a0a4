"""Shared fixtures: one mm_world/tiny build per session and a runner for the real CLIs."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "mm_world.py") + ":tiny"


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: end-to-end runs of the real command lines")


def pytest_collection_modifyitems(session, config, items):
  """The SLURM files first, then the other files with end-to-end tests, then the rest,
  each group in its usual order.

  tests/run.sh hands whole files to two workers in collection order; a long file dealt
  last leaves one worker running alone at the end (alphabetically the SLURM, trainer and
  workdir files come last). Longest first packs the two workers more evenly. The order is
  deterministic, as xdist needs it to be the same on every worker."""
  slow_files = {item.fspath for item in items if item.get_closest_marker("slow")}
  items.sort(key=lambda item: ("slurm" not in item.fspath.basename,
                               item.fspath not in slow_files))  # stable sort
