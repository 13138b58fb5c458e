"""``make demo``: the whole story on one machine, on the embedded default, in its own var dir.

The command first wipes ``var/demo`` and runs itself again with
``ARBITRAGE_VAR_DIR=var/demo`` and the demo's settings (the embedded default,
and shorter clocks for the local cloud and the workflows), so it never touches
the developer's ``var/`` nor a configured database. That second run sets up the
database, starts web, worker, beat and the gateway on free ports, plays the
customer over the REST API (``demo.story``) and stops everything it
started, also on failure and on Ctrl-C. It exits 0 when every stage happened,
1 with a one-line reason otherwise, 130 on Ctrl-C.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections, transaction

from demo import DemoFailed

# Set in the environment of the second run: the demo's var dir is ready.
STAGE_VARIABLE = "ARBITRAGE_DEMO_RUN"
# Whatever would take the demo off the embedded default (a database, Redis, S3, real clouds).
MODE_VARIABLES = (
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "CLOUD_BACKENDS",
    "CLOUD_REGIONS",
    "PRICE_SOURCES",
    "PUBLIC_API_URL",
    "DJANGO_SETTINGS_MODULE",
)
STOP_LEFTOVERS = "from placement.clouds.local import terminate_all; terminate_all()"
# The local cloud and the workflows on a short clock, so the story takes a minute or so.
DEMO_SETTINGS = {
    "LOCAL_CLOUD_BOOT_DELAY_MS": "500",
    "LOCAL_CLOUD_STOP_GRACE_SECONDS": "3",
    "WORKFLOW_TIME_SCALE": "0.05",
    "HEALTH_SWEEP_SECONDS": "2",  # read when the migrations make the beat schedule
    "HEALTH_CHECK_TIMEOUT_SECONDS": "1",
    "ARBITRAGE_TICK_SECONDS": "2",  # read when the migrations make the beat schedule
    "LOG_LEVEL": "INFO",
}


def demo_var_dir() -> Path:
    return Path(settings.BASE_DIR) / "var" / "demo"


def demo_environment(var_dir: Path) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in MODE_VARIABLES and not name.startswith("STORAGE_")
    }
    env.update(DEMO_SETTINGS)
    env.update(DJANGO_SETTINGS_MODULE="arbitrage.settings", ARBITRAGE_VAR_DIR=str(var_dir), PYTHONUNBUFFERED="1")
    return env


class Command(BaseCommand):
    help = (
        "The whole story on one machine: set up var/demo, start the service, act as a customer over the REST API "
        "(quote, submit, watch, call through the gateway, survive a spot interruption, terminate, cost) and stop."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--keep-running",
            action="store_true",
            help="after the story, keep the demo's service running (admin, API docs) until Ctrl-C",
        )

    def handle(self, *args, keep_running: bool, **options) -> None:
        var_dir = demo_var_dir()
        if os.environ.get(STAGE_VARIABLE) != "1":
            self.restart_in(var_dir, keep_running=keep_running)  # does not return
        if Path(settings.VAR_DIR) != var_dir:
            raise CommandError(f"ARBITRAGE_VAR_DIR: the demo runs in {var_dir}, not {settings.VAR_DIR}")
        sys.exit(self.tell(var_dir, keep_running=keep_running))

    def restart_in(self, var_dir: Path, *, keep_running: bool) -> None:
        """Wipe the demo's var dir and run this command again with the demo's environment."""
        env = demo_environment(var_dir)
        manage = str(Path(settings.BASE_DIR) / "manage.py")
        if any((var_dir / "local-cloud" / "instances").glob("*.json")):
            # A demo killed outright may have left instances running: stop them before forgetting them.
            subprocess.run(
                [
                    sys.executable,
                    manage,
                    "shell",
                    "-c",
                    "from placement.clouds.local import terminate_all; terminate_all()",
                ],
                cwd=settings.BASE_DIR,
                env=env,
                capture_output=True,
                timeout=120,
                check=False,
            )
        shutil.rmtree(var_dir, ignore_errors=True)
        var_dir.mkdir(parents=True)
        env[STAGE_VARIABLE] = "1"
        argv = [sys.executable, manage, "demo", *(["--keep-running"] if keep_running else [])]
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, argv, env)

    def tell(self, var_dir: Path, *, keep_running: bool) -> int:
        from demo.story import Story
        from placement.clouds.local import terminate_all

        env = demo_environment(var_dir)
        story = Story(
            base_dir=Path(settings.BASE_DIR),
            var_dir=var_dir,
            env=env,
            out=sys.stdout,
            tty=sys.stdout.isatty(),
            prepare=prepare_database,
            stop_instances=terminate_all,
            keep_running=keep_running,
        )
        log_path = var_dir / "logs" / "demo.log"

        def stop_on_sigterm(signum, frame) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, stop_on_sigterm)
        status = 0
        try:
            story.run()
        except DemoFailed as failure:
            status = self.fail(str(failure))
        except KeyboardInterrupt:
            status = 0 if story.finished else 130
            if not story.finished:
                self.stderr.write("\ndemo interrupted")
        except Exception as error:  # noqa: BLE001 (the user gets one line, the log the traceback)
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with log_path.open("a") as log:
                traceback.print_exc(file=log)
            status = self.fail(f"unexpected {type(error).__name__}: {error} (details in {_relative(log_path)})")
        finally:
            # Stop everything, and let no second Ctrl-C cut the clean-up short.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            self.stdout.write("\nStopping the demo's service and instances...")
            began = time.monotonic()
            notes, problems = story.cleanup()
            for note in notes:
                self.stdout.write(f"  {note}")
            for problem in problems:
                self.stderr.write(f"  {problem}")
            left = "" if problems else "; nothing left running"
            logs = _relative(var_dir / "logs")
            self.stdout.write(f"Stopped in {time.monotonic() - began:.1f} s{left}. Logs: {logs}/")
        return status

    def fail(self, reason: str) -> int:
        self.stderr.write(f"\ndemo failed: {reason}")
        return 1


def prepare_database():
    """Migrations, the bundled catalog, the demo customer with an API key and the demo operator."""
    from django.contrib.auth import get_user_model

    from accounts import services
    from demo.story import ADMIN_PASSWORD, ADMIN_USER, CUSTOMER_NAME, Setup
    from placement.services import catalog_load_snapshot

    call_command("migrate", interactive=False, verbosity=0)
    counts = catalog_load_snapshot()
    with transaction.atomic():
        customer = services.customer_create(name=CUSTOMER_NAME)
        _, api_key = services.api_key_create(customer=customer, name="demo")
        get_user_model().objects.create_superuser(ADMIN_USER, "demo@example.com", ADMIN_PASSWORD)
    connections.close_all()  # the services take it from here
    return Setup(api_key=api_key, offers=counts["offers"], instance_types=counts["instance_types"])


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(settings.BASE_DIR))
    except ValueError:
        return str(path)
