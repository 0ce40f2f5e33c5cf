"""The experiment harness: benchmark grids, sweeps, training and evaluation runs, the drift study,
sensitivity analysis, the sim-to-real gap, the fleet benchmark, and their figures, tables and
TensorBoard logs.

May import: the agent zoo (:mod:`agents`) and :mod:`autoscale_env`; the agents never import it.
"""
