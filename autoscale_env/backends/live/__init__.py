"""The live backend: real inference on this host and on loopback servers (needs the [live] extra)."""
