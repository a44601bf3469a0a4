"""Scaling-law sweeps: sweep files and their runs (`sweep.py`), running them locally or
under SLURM (`runner.py`), collecting results (`collect.py`, `counts.py`), fitting
L = E + A/N^alpha + B/D^beta (`fit.py`), plots, and the computed loss floor of the world.
`python -m mmjax.scaling {sweep,collect,fit,plot}`. An entry point: may import anything
below it; nothing imports it.
"""
