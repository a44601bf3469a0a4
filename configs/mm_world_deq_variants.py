"""Deep-equilibrium fusion (model.fusion.type='deq') against stacked fusion layers of equal
parameters, on the fusion recipe's task (configs/mm_world_fusion.py: text<->image
contrastive plus caption-image matching, which only fused passes can solve).

Variants, and `tiny_` forms of each (the tests' sizes):
  deq          the fused tokens are the fixed point of f(z; x) = LN(Blocks(z + x)), the
               `depth` blocks weight-tied and iterated to tol (mmjax/models/trunks/deq.py)
  deq_stacked  the same blocks applied once each, in a stack: early fusion at the same
               depth, exactly the DEQ's parameters
`deq_variants()` returns every variant's ConfigDict; `get_config(variant)` one of them.
Both run the same steps, batch and optimizer; sized so that the DEQ run (the slower)
finishes inside 15 minutes on the shared 2-core CPU (docs/seed_methods.md).
"""
import os

from mmjax.config.recipe import import_file

NAMES = ("deq", "deq_stacked")


def _fusion_recipe():
  return import_file(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                  "mm_world_fusion.py"), "recipe")


def _variant(name: str, tiny: bool):
  c = _fusion_recipe().get_config("tiny_early" if tiny else "early")
  if not tiny:
    # A DEQ step runs f up to 12 times forward and its adjoint as often backward, on
    # each of the step's 4 trunk passes (2 contrastive, 2 matching): at the fusion
    # recipe's size (600 steps of 64, depth 3) one DEQ run would take hours on the
    # shared CPU (~6 s a DEQ step there at load 14). Two blocks, 100 steps of 32, for
    # both variants alike.
    c.model.depth = 2
    c.total_steps = 100
    c.log_every_steps = 25
    c.tasks.default.batch_size = 32
    c.optim.warmup_steps = 10
    c.checkpoint.every_steps = c.total_steps
    for ev in c.evals.values():
      ev.every_steps = c.total_steps
  if name == "deq":
    c.model.fusion = dict(type="deq", tol=1e-3, max_iterations=12 if not tiny else 15,
                          backward_tol=1e-3, backward_max_iterations=12 if not tiny else 15,
                          memory=5)
  return c


def deq_variants() -> dict:
  """{variant: ConfigDict} of every variant, the `tiny_` forms too."""
  return {f"{t}{n}": _variant(n, bool(t)) for t in ("", "tiny_") for n in NAMES}


def get_config(variant=None):
  variant = variant or "deq"
  valid = [f"{t}{n}" for t in ("", "tiny_") for n in NAMES]
  if variant not in valid:
    raise ValueError(f"configs/mm_world_deq_variants.py: unknown variant {variant!r}; valid: "
                     f"{', '.join(valid)}")
  tiny = variant.startswith("tiny_")
  return _variant(variant.removeprefix("tiny_"), tiny)
