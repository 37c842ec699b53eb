"""``manage.py demo``: the demo platform in one command: web, Celery workers and scheduler.

It migrates the database, collects static files, creates the galaxy demo project (idempotent), a
scientist account that owns it, then runs gunicorn, two Celery workers (the live loop's
"aggregation" queue, and the machine's "ml" queue, so that a training never holds up votes) and
Celery beat as child processes, and prints the URL to open.
Without DATABASE_URL / REDIS_URL the embedded PostgreSQL and Redis are used (see chorus.embedded).

``--sample`` picks the galaxies (``projects.services.DEMO_SAMPLES``): ``gz1_2000`` (the default:
2,000 galaxies, the machine in the loop on) or ``small`` (48 galaxies, no machine; the tests').
``--crowd N`` also starts N simulated volunteers (``projects.demo_crowd``) once the web server
answers, at ``--crowd-rate`` classifications a second in all; they stop by themselves when nothing is
left to classify (the demo goes on), and with the demo on Ctrl-C. Bad values are refused before
anything starts (``scripts/demo.sh`` checks them before it even installs: ``projects.demo_options``).
``--galaxies N`` imports only the sample's first N galaxies and ``--machine-settings JSON`` overrides
the demo's machine settings (``projects.services.DEMO_ACTIVE_LEARNING``; ``machine.config``): quick
tries and the browser test's small loop.

Stopping: Ctrl-C (or SIGTERM, or the terminal closing) stops the crowd, then the web server,
worker and scheduler (each child runs in its own process group, which gets SIGTERM, then SIGKILL
after 10 seconds; a child also gets SIGTERM if the demo itself is killed), then the embedded
PostgreSQL and Redis, unless another process still uses them (then they are left running, and it
says so); external servers (DATABASE_URL / REDIS_URL) are never touched. The same happens when the
demo ends any other way from the command line (a child died, ``--setup-only`` done, an error);
``manage.py demo --stop-servers`` stops servers that a killed demo left behind. Running the demo
again resumes on the same database: no galaxy is imported twice, and the crowd's volunteers (their
sessions kept in the data folder) go on where they stopped, re-sent classifications not counted
twice (idempotency keys).
"""

from __future__ import annotations

import contextlib
import json
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

from projects.demo_options import crowd_problem, positive_int, positive_rate
from projects.services import DEMO_SAMPLES, create_demo_project, log_admin_action

PLATFORM_DIR = Path(__file__).resolve().parents[3]
STOP_SECONDS = 10  # how long the children get to stop after SIGTERM, before SIGKILL
# Ctrl-C, kill, and the terminal closing: the children run in their own process groups, so the
# terminal's signals reach the demo alone, and the demo stops them.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(Exception):
    """Ctrl-C or SIGTERM: stop everything the demo started."""


def json_object(text: str) -> dict:
    """argparse type: a JSON object (``--machine-settings``)."""
    import argparse

    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("a JSON object {setting: value} is needed")
    return value


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
        parser.add_argument("--galaxies", type=positive_int, default=None, metavar="N",
                            help="import only the sample's first N galaxies (a later run with more adds the rest)")
        parser.add_argument("--machine-settings", type=json_object, default=None, metavar="JSON",
                            help="override the demo's machine settings, e.g. '{\"image_size\": 32}' (machine.config)")
        parser.add_argument("--stop-servers", action="store_true",
                            help="stop the embedded PostgreSQL and Redis a killed demo left running, and exit")

    def run_from_argv(self, argv: list[str]) -> None:
        """From the command line the demo owns the embedded servers of its data folder: whatever way it
        ends, it stops them (unless something else still uses them). ``call_command`` (in a process
        that may use them) never does."""
        try:
            super().run_from_argv(argv)
        finally:
            for sig in STOP_SIGNALS:  # the process is ending: let the servers stop cleanly
                signal.signal(sig, signal.SIG_IGN)
            self._stop_servers()

    def handle(self, *args: Any, **options: Any) -> None:
        problem = crowd_problem(options["crowd"], options["crowd_rate"])
        if problem:
            raise CommandError(problem)
        if options["machine_settings"] is not None:
            from machine.config import validate_active_learning

            errors = validate_active_learning(options["machine_settings"])
            if errors:
                raise CommandError("--machine-settings: " + "; ".join(errors))
        if options["stop_servers"]:
            return  # run_from_argv stops them
        self._children: dict[str, subprocess.Popen] = {}
        handlers = {sig: signal.signal(sig, _raise_stopped) for sig in STOP_SIGNALS}
        died = None
        try:
            died = self._run(options)
        except Stopped:
            self.stdout.write("\nStopping the demo ...")
        finally:
            for sig in handlers:  # a second Ctrl-C must not cut the clean-up short
                signal.signal(sig, signal.SIG_IGN)
            self._stop_children()
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        if died:
            raise CommandError(f"the demo stopped: {died}")

    def _run(self, options: dict[str, Any]) -> str | None:
        """Set up, start the children and watch them; what died, if one did (else it runs until stopped)."""
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        scientist, password = self._scientist()
        if options["sample"] != "small":
            self.stdout.write(f"Importing the {options['sample']} galaxies (the first time: a minute or two) ...")
        workflow = create_demo_project(owner=scientist, sample=options["sample"], galaxies=options["galaxies"])
        if options["machine_settings"]:
            before = dict(workflow.active_learning or {})
            workflow.active_learning = {**before, "enabled": True, **options["machine_settings"]}
            workflow.save(update_fields=["active_learning", "updated_at"])
            log_admin_action(workflow, scientist, "active_learning_updated",
                             {"before": before, "after": workflow.active_learning, "by": "manage.py demo --machine-settings"})
        url = f"http://{options['host']}:{options['port']}"
        self.stdout.write(f"Demo project ready: workflow {workflow.pk} with {workflow.subject_states.count()} galaxies.")
        if password:
            self.stdout.write(f"Scientist account: scientist / {password} (saved in {settings.DATA_DIR / 'demo-scientist.txt'})")
        if options["setup_only"]:
            return None
        self._start_children(options)
        self.stdout.write(self.style.SUCCESS(f"\nChorus is running. Open {url}/"))
        self.stdout.write(
            f"  classify:      {url}/projects/{workflow.project.slug}/workflows/{workflow.pk}/classify/\n"
            f"  dashboard:     {url}/projects/{workflow.project.slug}/workflows/{workflow.pk}/dashboard/ (as scientist)\n"
            f"  admin:         {url}/projects/{workflow.project.slug}/workflows/{workflow.pk}/admin/ (as scientist)\n"
            f"  next subjects: {url}/api/workflows/{workflow.pk}/next-subjects/\n"
            f"  API docs:      {url}/api/docs/\n  Django admin:  {url}/django-admin/\nCtrl+C stops everything."
        )
        if options["crowd"]:
            self._wait_for_web(options["host"], options["port"], self._children["web"])
            self._children["crowd"] = self._start_crowd(options, workflow.pk)
        return self._supervise()

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
        return subprocess.Popen(command, env=self._child_env(), cwd=PLATFORM_DIR, process_group=0, preexec_fn=_die_with_the_demo)

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

    def _start_children(self, options: dict[str, Any]) -> None:
        env = self._child_env()
        bin_dir = Path(sys.executable).parent
        commands = {
            "web": [
                str(bin_dir / "gunicorn"), "chorus.wsgi", "--chdir", str(PLATFORM_DIR),
                "--bind", f"{options['host']}:{options['port']}", "--workers", str(options["web_workers"]),
                "--access-logfile", "-", "--graceful-timeout", "5",
            ],
            # Two workers, as in docker-compose.yml: one worker process on both queues ran a training
            # (minutes) between two batches of votes, and the live dashboard stood still meanwhile
            # (measured: 600 to 1,250 votes waiting at each retraining, bench/demo_loop.py).
            "worker": [
                str(bin_dir / "celery"), "-A", "chorus", "worker", "-Q", "aggregation", "--concurrency", "1",
                "--loglevel", "INFO", "--hostname", "demo-worker@%h",
            ],
            "ml-worker": [
                str(bin_dir / "celery"), "-A", "chorus", "worker", "-Q", "ml", "--concurrency", "1",
                "--loglevel", "INFO", "--hostname", "demo-ml-worker@%h",
            ],
            "scheduler": [
                str(bin_dir / "celery"), "-A", "chorus", "beat", "--loglevel", "INFO",
                "--schedule", str(settings.DATA_DIR / "celerybeat-schedule"),
            ],
        }
        for name, command in commands.items():
            # Its own process group: Ctrl-C reaches the demo alone, which stops each child and whatever it
            # forked (gunicorn's and Celery's worker processes) in order.
            child_env = env
            if name == "ml-worker":
                # torch takes every core by default; one is left to the web server, PostgreSQL and the
                # live loop, which the volunteers (and the simulated crowd) wait on.
                threads = str(max(1, (os.cpu_count() or 2) - 1))
                child_env = env | {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", threads)}
            self._children[name] = subprocess.Popen(command, env=child_env, cwd=PLATFORM_DIR, process_group=0,
                                                    preexec_fn=_die_with_the_demo)

    def _supervise(self) -> str:
        """Watch the children until one (not the crowd) exits; which one, and how."""
        children = self._children
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
                return f"{name} exited with code {child.returncode}"
            time.sleep(1)

    def _stop_children(self) -> None:
        """The crowd first (it would only retry against a web server going away), then the rest; each
        process group gets SIGTERM, then SIGKILL once ``STOP_SECONDS`` have passed."""
        children = getattr(self, "_children", {})
        order = [["crowd"], [name for name in children if name != "crowd"]]
        for names in order:
            group = [children[name] for name in names if name in children]
            for child in group:
                _signal_group(child, signal.SIGTERM)
            deadline = time.monotonic() + STOP_SECONDS
            for child in group:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=max(0.1, deadline - time.monotonic()))
            for child in group:  # what is left of each group, the leader gone or not
                _signal_group(child, signal.SIGKILL)
                child.wait()
        if children:
            self.stdout.write(f"Stopped: {', '.join(children)}.")
        children.clear()

    def _stop_servers(self) -> None:
        """Stop the embedded PostgreSQL and Redis of the data folder, unless external (DATABASE_URL,
        REDIS_URL) or still used by another process (then say so and leave them)."""
        from django.db import connections

        from chorus import embedded

        data_dir = Path(settings.DATA_DIR)
        stopped = []
        if not os.environ.get("DATABASE_URL"):
            others = _wait_for_no_clients(_postgres_clients)
            connections.close_all()
            if others is None:
                self.stdout.write(f"Could not ask the embedded PostgreSQL in {data_dir} who uses it: left as it is.")
            elif others:
                self.stdout.write(f"The embedded PostgreSQL in {data_dir} is still used by {others} other connection(s): left running.")
            elif (data_dir / "postgres" / "postmaster.pid").exists():
                embedded.stop_postgres(data_dir)
                stopped.append("PostgreSQL")
        if not os.environ.get("REDIS_URL") and _redis_up(data_dir):
            others = _wait_for_no_clients(lambda: _redis_clients(data_dir))
            if others is None:
                self.stdout.write(f"Could not ask the embedded Redis in {data_dir} who uses it: left as it is.")
            elif others:
                self.stdout.write(f"The embedded Redis in {data_dir} is still used by {others} other connection(s): left running.")
            else:
                embedded.stop_redis(data_dir)
                stopped.append("Redis")
        if stopped:
            self.stdout.write(f"Stopped the embedded {' and '.join(stopped)} (the data stays in {data_dir}; "
                              "running the demo again resumes).")


def _raise_stopped(*_: Any) -> None:
    raise Stopped


def _die_with_the_demo() -> None:
    """In each child before it runs: SIGTERM when the demo dies without stopping it (``kill -9``), so
    that no web server, worker or crowd outlives it (Linux's PR_SET_PDEATHSIG; elsewhere nothing)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # 1: PR_SET_PDEATHSIG


def _signal_group(child: subprocess.Popen, how: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, how)


def _postgres_clients() -> int:
    """Client connections to the database server other than this process's own."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")
        return int(cursor.fetchone()[0])


def _redis_up(data_dir: Path) -> bool:
    import redis

    from chorus import embedded

    socket_path = embedded.redis_socket(data_dir)
    try:
        return socket_path.exists() and bool(redis.Redis(unix_socket_path=str(socket_path), socket_timeout=2).ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False


def _redis_clients(data_dir: Path) -> int:
    """Connections to the embedded Redis other than the one asking."""
    import redis

    from chorus import embedded

    client = redis.Redis(unix_socket_path=str(embedded.redis_socket(data_dir)), socket_timeout=2)
    mine = client.client_id()
    return sum(1 for c in client.client_list() if int(c["id"]) != mine)


def _wait_for_no_clients(count: Any, seconds: float = 3.0) -> int | None:
    """``count()`` until it is 0 or ``seconds`` pass (a killed child's connections take a moment to
    close); None if the server cannot be asked."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            n = count()
        except Exception:  # down, or refusing: not ours to stop
            return None
        if n == 0 or time.monotonic() > deadline:
            return n
        time.sleep(0.2)


def _local(host: str) -> str:
    """An address to reach a server listening on ``host`` from this machine."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
