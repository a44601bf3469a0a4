"""How every benchmark ends: a readable table of its figures, then (the very last line)
the same figures as one JSON object for scripts."""
from __future__ import annotations

import json


def print_figures(fig: dict) -> None:
  print(f"{'figure':<28}{'value':>16}")
  for k, v in fig.items():
    print(f"{k:<28}{v:>16.4g}" if isinstance(v, float) else f"{k:<28}{str(v):>16}")
  print(json.dumps(fig))
