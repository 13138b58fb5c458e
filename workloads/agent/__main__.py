"""``python -m workloads.agent``: see ``workloads.agent.server``."""

import sys

from workloads.agent.server import main

sys.exit(main())
