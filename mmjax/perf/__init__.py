"""How fast a run is and what it costs: the devices' peak FLOP/s (`peak.py`), analytic
FLOPs, tokens and parameter counts of a step (`flops.py`), per-device memory of a compiled
step (`memory.py`), step times measured without syncing the loop (`step_times.py`) and the
run's wall-clock accounting (`wallclock.py`). May import models and config; nothing above.
"""
