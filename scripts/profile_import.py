"""Build a phone profile from benchmark_model outputs and power_profile.xml: ``autoscale profile
import`` as a script."""
from autoscale_env.tools.profile_import import main

raise SystemExit(main())
