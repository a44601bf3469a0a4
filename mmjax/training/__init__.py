"""Training: set-up (`setup.py`), the loop and its clean-up (`trainer.py`), the update step
and the abstract state (`step.py`), one compiled step per task and shapes
(`compiled_steps.py`), the optimizer, hooks, metric windows and their log
(`metric_windows.py`, `metric_log.py`, `metrics_writer.py`), saving (`saver.py`) and the
progress bar. The top of the stack below the entry points: may import every other package
but scaling.
"""
