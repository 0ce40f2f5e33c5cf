"""The world as data and pure functions: what a request costs on each target, and how it is scored.

Holds the value types and the backend protocol (:mod:`.types`), the data files' loaders
(:mod:`.config`) and their pydantic schemas with the plausibility bounds (:mod:`.schemas`), the radio and power models (:mod:`.radio`, :mod:`.power`), the rules that turn a
request's conditions into outcomes, rewards and the oracle's choice (:mod:`.rules`, :mod:`.reward`),
the observation encoder (:mod:`.observation`), the provenance count (:mod:`.provenance`), and the
package-wide errors and file helpers (:mod:`.errors`, :mod:`.files`).

May import: numpy, pydantic and the standard library only; nothing else of ``autoscale_env`` (the
bottom room).
"""
