"""Offline tools over the world: fit a profile from traces (:mod:`.calibrate`), fit observation
bin edges (:mod:`.fit_bins`), compare the world with public measurements (:mod:`.validate`), list
its estimated numbers with their ranges (:mod:`.estimates`), regenerate the bundled sim traces
(:mod:`.bundled_traces`).

May import: :mod:`autoscale_env.world`, :mod:`autoscale_env.traces`, :mod:`autoscale_env.backends`;
never the Gymnasium faces or :mod:`agents`.
"""
