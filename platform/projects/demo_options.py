"""The demo's command-line values, checked with the standard library alone.

``manage.py demo`` and the simulated crowd (``projects.demo_crowd``) parse with these types, and
``scripts/demo.sh`` runs this file with the system's Python before it installs or starts anything,
so that a bad ``--crowd``, ``--crowd-rate`` or ``--galaxies`` is a clear error at once, not after
minutes of installation and with servers already up:

    python3 platform/projects/demo_options.py --crowd 0     # exit 2: "--crowd: '0': give at least 1 ..."

Only those options are looked at here; the others are left to ``manage.py demo``.
"""

from __future__ import annotations

import argparse
import math
import sys


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1 (``--crowd``, ``--galaxies``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give at least 1")
    return value


def positive_rate(text: str) -> float:
    """argparse type: a finite number above 0 (``--crowd-rate``, classifications per second)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r}: the rate must be a number of classifications per second above 0")
    return value


def crowd_problem(crowd: int | None, rate: float | None) -> str | None:
    """What is wrong with this pair of values, if anything (a rate needs a crowd)."""
    if rate is not None and crowd is None:
        return "--crowd-rate needs --crowd N (how many simulated volunteers)"
    return None


def check(argv: list[str]) -> str | None:
    """The first problem with the demo's crowd and sample options in ``argv``, or None."""
    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    parser.add_argument("--crowd", type=positive_int, default=None)
    parser.add_argument("--crowd-rate", type=positive_rate, default=None)
    parser.add_argument("--galaxies", type=positive_int, default=None)
    try:
        options, _ = parser.parse_known_args(argv)
    except argparse.ArgumentError as error:
        return str(error)
    return crowd_problem(options.crowd, options.crowd_rate)


if __name__ == "__main__":
    problem = check(sys.argv[1:])
    if problem:
        print(f"demo: {problem}", file=sys.stderr)
        sys.exit(2)
