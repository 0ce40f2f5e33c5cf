"""Record a trace (every target's outcome of every request): ``autoscale record`` as a script."""
from autoscale_env.recording import main

raise SystemExit(main())
