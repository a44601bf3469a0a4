"""A digest of a checkpoint's parameter values that survives renames of the parameters.

The redesign of 2026-12 had to leave training bit-identical while it renamed modules and
parameter paths (heads keyed by name), so the digest covers the values, dtypes and shapes of
the parameters as a multiset: sorted per-array hashes, with no path in them."""
from __future__ import annotations

import hashlib
import os

import jax
import numpy as np
import orbax.checkpoint as ocp

# Recorded on 2026-12-03 at commit 6355d98 (before the redesign), 2-core CPU, 8 fake devices.
TINY_12_STEPS = "3a4c1431170a5afb75a21ba74e6700d5e6983e0e10d791f90699c396cce091f6"
AGD_TINY_24_STEPS = "94b67e61968eae7409b520879500ed1392eeffba55c2e341fda1823185bd84ad"


def param_digest(step_dir: str) -> str:
  """sha256 over the sorted sha256 of each parameter array of `<step_dir>/state`."""
  tree = ocp.StandardCheckpointer().restore(os.path.join(str(step_dir), "state"))
  leaves = []
  for leaf in jax.tree.leaves(tree["params"]):
    a = np.asarray(leaf)
    leaves.append(hashlib.sha256(f"{a.dtype}{a.shape}".encode() + a.tobytes()).hexdigest())
  return hashlib.sha256("".join(sorted(leaves)).encode()).hexdigest()
