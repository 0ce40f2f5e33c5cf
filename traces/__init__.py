"""Bundled traces (the repository's traces/ folder, installed as autoscale_env.bundled_traces)."""
