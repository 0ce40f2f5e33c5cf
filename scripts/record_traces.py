"""Record a trace (every target's outcome of every request): ``autoscale record`` as a script."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without installing

from autoscale_env.traces.recorder import main  # noqa: E402

raise SystemExit(main())
