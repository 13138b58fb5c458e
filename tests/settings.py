"""The product's settings, with the test run's own var/ directory.

Tests get their own database file, routing KV and broker folders, so running
them never touches the data of a running `make run`. Everything else comes
from the environment exactly as in production (DATABASE_URL, REDIS_URL, ...).
"""

import os
from pathlib import Path

# A log follower polls the database often, so a test sees its lines and its end at once.
os.environ.setdefault("LOGS_FOLLOW_POLL_SECONDS", "0.05")
# No beat runs the readiness sweep under the live tests: a waiting run's own checks keep their 5 s pace.
os.environ.setdefault("READINESS_POLL_SECONDS", "5")
os.environ.setdefault("ARBITRAGE_VAR_DIR", str(Path(__file__).resolve().parent.parent / "var" / "test"))

from arbitrage.settings import *  # noqa: F403
