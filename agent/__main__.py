"""``python -m agent``: see ``agent.server``."""

import sys

from agent.server import main

sys.exit(main())
