"""Traces: the recorded-world file format, its reader and writer, and the recorder.

A trace is every target's outcome for a sequence of requests (:mod:`.format` defines it, reads it
with bounded memory and writes it atomically); :mod:`.recorder` drives any backend to write one.
The format's public names are re-exported here (``autoscale_env.traces.load_trace``).

May import: :mod:`autoscale_env.world` only (the recorder takes a backend object, not a backend
module).
"""

from autoscale_env.traces.format import (
    BUNDLED_PACKAGE, COLUMNS, COVERAGES, FORMAT, SUFFIXES, VERSION, Trace, TraceCutWarning,
    TraceHeader, TraceWriter, bundled_root, bundled_traces, load_trace, load_trace_cached,
    resolve_trace, write_trace,
)

__all__ = ["BUNDLED_PACKAGE", "COLUMNS", "COVERAGES", "FORMAT", "SUFFIXES", "VERSION", "Trace",
           "TraceCutWarning", "TraceHeader", "TraceWriter", "bundled_root", "bundled_traces",
           "load_trace", "load_trace_cached", "resolve_trace", "write_trace"]
