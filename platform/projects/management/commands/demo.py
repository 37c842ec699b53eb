"""``manage.py demo``: the demo platform in one command: web, Celery worker and scheduler.

It migrates the database, collects static files, creates the galaxy demo project (idempotent), a
scientist account that owns it, then runs gunicorn, a Celery worker (aggregation and
machine-learning queues) and Celery beat as child processes, and prints the URL to open.
Without DATABASE_URL / REDIS_URL the embedded PostgreSQL and Redis are used (see chorus.embedded).

``--sample`` picks the galaxies (``projects.services.DEMO_SAMPLES``): ``gz1_2000`` (the default:
2,000 galaxies, the machine in the loop on) or ``small`` (48 galaxies, no machine; the tests').
``--crowd N`` also starts N simulated volunteers (``projects.demo_crowd``) once the web server
answers, at ``--crowd-rate`` classifications a second in all; they stop by themselves when nothing is
left to classify (the demo goes on), and with the demo on Ctrl-C. Bad values are refused before
anything starts. Running the demo again resumes on the same database: no galaxy is imported twice,
and the crowd's volunteers (their sessions kept in the data folder) go on where they stopped.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from projects.demo_crowd import positive_int, positive_rate
from projects.services import DEMO_SAMPLES, create_demo_project

PLATFORM_DIR = Path(__file__).resolve().parents[3]


class Command(BaseCommand):
    help = "Run the demo: web server, Celery worker and scheduler, with a ready-to-classify galaxy project."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=os.environ.get("CHORUS_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("CHORUS_PORT", "8000")))
        parser.add_argument("--web-workers", type=int, default=2)
        parser.add_argument("--setup-only", action="store_true", help="prepare the database and exit")
        parser.add_argument("--sample", choices=sorted(DEMO_SAMPLES), default="gz1_2000",
                            help="the galaxies: gz1_2000 (2,000, machine on; default) or small (48)")
        parser.add_argument("--crowd", type=positive_int, default=None, metavar="N",
                            help="also run N simulated volunteers classifying through the API")
        parser.add_argument("--crowd-rate", type=positive_rate, default=None, metavar="R",
                            help="the simulated crowd's classifications per second, all together (default 20)")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["crowd_rate"] is not None and options["crowd"] is None:
            raise CommandError("--crowd-rate needs --crowd N (how many simulated volunteers)")
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        scientist, password = self._scientist()
        if options["sample"] != "small":
            self.stdout.write(f"Importing the {options['sample']} galaxies (the first time: a minute or two) ...")
        workflow = create_demo_project(owner=scientist, sample=options["sample"])
        url = f"http://{options['host']}:{options['port']}"
        self.stdout.write(f"Demo project ready: workflow {workflow.pk} with {workflow.subject_states.count()} galaxies.")
        if password:
            self.stdout.write(f"Scientist account: scientist / {password} (saved in {settings.DATA_DIR / 'demo-scientist.txt'})")
        if options["setup_only"]:
            return
        children = self._start_children(options)
        self.stdout.write(self.style.SUCCESS(f"\nChorus is running. Open {url}/"))
        self.stdout.write(
            f"  classify:      {url}/projects/{workflow.project.slug}/workflows/{workflow.pk}/classify/\n"
            f"  dashboard:     {url}/projects/{workflow.project.slug}/workflows/{workflow.pk}/dashboard/ (as scientist)\n"
            f"  admin:         {url}/projects/{workflow.project.slug}/workflows/{workflow.pk}/admin/ (as scientist)\n"
            f"  next subjects: {url}/api/workflows/{workflow.pk}/next-subjects/\n"
            f"  API docs:      {url}/api/docs/\n  Django admin:  {url}/django-admin/\nCtrl+C stops everything."
        )
        if options["crowd"]:
            self._wait_for_web(options["host"], options["port"], children["web"])
            children["crowd"] = self._start_crowd(options, workflow.pk)
        self._supervise(children)

    @staticmethod
    def _wait_for_web(host: str, port: int, web: subprocess.Popen, timeout: float = 120) -> None:
        """Until the web server accepts connections (the crowd's first call needs it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and web.poll() is None:
            try:
                with socket.create_connection((_local(host), port), timeout=1):
                    return
            except OSError:
                time.sleep(0.5)

    def _start_crowd(self, options: dict[str, Any], workflow_id: int) -> subprocess.Popen:
        """The simulated crowd, a child process like the others (projects.demo_crowd)."""
        rate = options["crowd_rate"] or 20.0
        self.stdout.write(f"Simulated crowd: {options['crowd']} volunteers, up to {rate:g} classifications/s "
                          "(marked \"simulated\": true in each classification's metadata).")
        command = [
            sys.executable, "-m", "projects.demo_crowd", "--url", f"http://{_local(options['host'])}:{options['port']}",
            "--workflow", str(workflow_id), "--volunteers", str(options["crowd"]), "--rate", str(rate),
            "--state-dir", str(settings.DATA_DIR / "demo-crowd"),
        ]
        return subprocess.Popen(command, env=self._child_env(), cwd=PLATFORM_DIR)

    def _scientist(self) -> tuple[Any, str | None]:
        """The demo's project owner; its password is made once and kept in the data folder."""
        User = get_user_model()
        user = User.objects.filter(username="scientist").first()
        credentials = settings.DATA_DIR / "demo-scientist.txt"
        if user is not None:
            return user, credentials.read_text().strip() if credentials.exists() else None
        password = secrets.token_urlsafe(12)
        user = User.objects.create_superuser("scientist", "scientist@example.org", password)
        credentials.write_text(password + "\n")
        credentials.chmod(0o600)
        return user, password

    def _child_env(self) -> dict[str, str]:
        return os.environ | {
            # The children join the same servers instead of starting their own.
            "DATABASE_URL": settings.DATABASE_URL,
            "REDIS_URL": settings.REDIS_URL,
            "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "chorus.settings"),
            # torch's OpenMP threads spin while idle unless told not to: on a small shared machine that
            # steals the CPU the web server and PostgreSQL need.
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
            # platform/ for the apps, the repository root for aggregation/ and ml/.
            "PYTHONPATH": os.pathsep.join(filter(None, [str(PLATFORM_DIR), str(PLATFORM_DIR.parent), os.environ.get("PYTHONPATH")])),
        }

    def _start_children(self, options: dict[str, Any]) -> dict[str, subprocess.Popen]:
        env = self._child_env()
        bin_dir = Path(sys.executable).parent
        commands = {
            "web": [
                str(bin_dir / "gunicorn"), "chorus.wsgi", "--chdir", str(PLATFORM_DIR),
                "--bind", f"{options['host']}:{options['port']}", "--workers", str(options["web_workers"]),
                "--access-logfile", "-", "--graceful-timeout", "5",
            ],
            "worker": [
                str(bin_dir / "celery"), "-A", "chorus", "worker", "-Q", "aggregation,ml", "--concurrency", "1",
                "--loglevel", "INFO", "--hostname", "demo-worker@%h",
            ],
            "scheduler": [
                str(bin_dir / "celery"), "-A", "chorus", "beat", "--loglevel", "INFO",
                "--schedule", str(settings.DATA_DIR / "celerybeat-schedule"),
            ],
        }
        return {name: subprocess.Popen(command, env=env, cwd=PLATFORM_DIR) for name, command in commands.items()}

    def _supervise(self, children: dict[str, subprocess.Popen]) -> None:
        def stop(*_: Any) -> None:
            for child in children.values():
                if child.poll() is None:
                    child.terminate()
            deadline = time.monotonic() + 10
            for child in children.values():
                try:
                    child.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.kill()
            raise SystemExit(0)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        while True:
            for name, child in list(children.items()):
                if child.poll() is None:
                    continue
                if name == "crowd":  # the crowd ends by itself when nothing is left: the demo goes on
                    how = "finished" if child.returncode == 0 else f"stopped with code {child.returncode}"
                    self.stdout.write(f"The simulated crowd {how}; the demo goes on (Ctrl+C stops it).")
                    del children[name]
                    continue
                self.stderr.write(f"{name} exited with code {child.returncode}; stopping the demo.")
                stop()
            time.sleep(1)


def _local(host: str) -> str:
    """An address to reach a server listening on ``host`` from this machine."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
