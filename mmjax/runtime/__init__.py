"""The job around the model: processes (`distributed.py`), the step and peer watchdog
(`watchdog.py`), stop signals and the processes' agreement on them (`signals.py`), and the
mesh with its ONE table from logical axis names to mesh axes (`sharding.py`).
May import models' logical axis names (`models/logical_axes.py`) and errors; nothing above.
"""
