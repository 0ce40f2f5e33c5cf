"""``python -m agents.cli``: the ``autoscale`` command line."""

from agents.cli import main

raise SystemExit(main())
