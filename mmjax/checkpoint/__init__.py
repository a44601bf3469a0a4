"""Storage of a run: Orbax checkpoints (`checkpointer.py`), their checksums and verified
restore (`checksums.py`, `verified_restore.py`), the workdir's layout and its lock
(`workdir.py`, `workdir_lock.py`), and the words for a failed write (`write_errors.py`).
May import config, runtime and errors; never models, objectives, evaluators or training.
"""
