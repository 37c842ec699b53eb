"""The engine on crowds with truth, offline and online, against crowd-kit's MV, DawidSkene and GLAD.

Every crowd given (a folder holding ``answers.csv`` and ``truth.csv``) is run in the same run:

- ours, exactly as the project is measured on held-back crowds, through its command line:
  ``python -m aggregation replay --answers A --truth T --json`` (offline) and
  ``... --online --shuffle SEED --json`` for SEED in 0..--seeds-1, plus ``--online`` in the
  file's own order (the CLI's default policy, refit every 250 answers);
- crowd-kit's MajorityVote, DawidSkene (n_iter=100) and GLAD (defaults), offline, run by
  ``bench/crowds/crowdkit_baselines.py`` under the benchmark venv (``--bench-python``, default
  ``.venv-bench/bin/python``; see bench/requirements.txt).

It prints one table and checks the goals of "the engine on real crowds": offline at least the
best of MV/DS/GLAD; where items have more answers than the policy's minimum, online (mean over the
shuffled orders) no more than 1 point below offline with at most 60% of the answers used; where
no item has more than the minimum (nothing to save), online equal to offline within 0.5 points.

Default crowds: the real duck and dog (../shared/data/crowds) and the simulated ones of
``bench/crowds/make_crowds.py`` (written under bench/crowds/data when missing).

    .venv/bin/python bench/aggregation_crowds.py [CROWD_DIR ...] [--seeds 5] [--json out.json] [--md out.md]

``--settings`` reproduces this script's earlier figures instead (duck and dog, in process: the
CLI's policy, a stricter one, plain-EM refits, a uniform class prior).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench" / "crowds"))

from make_crowds import CROWDS as SIMULATED  # noqa: E402
from make_crowds import DATA as SIMULATED_DATA  # noqa: E402
from make_crowds import make_all  # noqa: E402

from aggregation.io import read_answers, read_truth  # noqa: E402
from aggregation.replay import DEFAULT_ONLINE_POLICY, replay  # noqa: E402

REAL = ROOT.parent / "shared" / "data" / "crowds"
DEFAULT_CROWDS = [REAL / "duck", REAL / "dog", *(SIMULATED_DATA / name for name in SIMULATED)]
BASELINES = ROOT / "bench" / "crowds" / "crowdkit_baselines.py"
BENCH_PYTHON = ROOT / ".venv-bench" / "bin" / "python"
METHODS = ("MV", "DS", "GLAD")

ONLINE_SLACK = 0.01  # online may be this far below offline where answers can be saved
MAX_FRACTION = 0.60  # ... using at most this share of the answers
EQUAL_SLACK = 0.005  # online equal to offline, where nothing can be saved


def run_ours(folder: Path, online: bool = False, seed: int | None = None) -> dict[str, Any]:
    """One ``python -m aggregation replay --json`` run as a subprocess; its JSON and wall time."""
    cmd = [sys.executable, "-m", "aggregation", "replay", "--answers", str(folder / "answers.csv"),
           "--truth", str(folder / "truth.csv"), "--json"]
    if online:
        cmd.append("--online")
        if seed is not None:
            cmd += ["--shuffle", str(seed)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} exited {proc.returncode}:\n{proc.stderr}")
    out = json.loads(proc.stdout)
    out["wall_seconds"] = wall
    out["stderr"] = proc.stderr.strip()
    return out


def run_baselines(folders: list[Path], python: Path) -> dict[str, Any]:
    """crowd-kit's figures for every folder, from the helper under the benchmark venv."""
    proc = subprocess.run([str(python), str(BASELINES), *map(str, folders)], cwd=ROOT,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{BASELINES.name} exited {proc.returncode}:\n{proc.stderr}")
    return json.loads(proc.stdout)


def shape(folder: Path) -> dict[str, Any]:
    """Items, answers per item, workers and classes of a crowd."""
    table = read_answers(folder / "answers.csv")
    truth = read_truth(folder / "truth.csv")
    _, per_item = np.unique(table.subjects, return_counts=True)
    return {"items": int(per_item.size), "answers": int(table.answers.size),
            "workers": int(np.unique(table.workers).size), "classes": int(table.answers.max()) + 1,
            "truth_items": len(truth), "answers_per_item_mean": float(per_item.mean()),
            "answers_per_item_min": int(per_item.min()), "answers_per_item_max": int(per_item.max())}


def policy_minimum(policy: str) -> int:
    """The ``min:N`` guard of a policy string (0 without one)."""
    found = re.search(r"\bmin:(\d+)", policy)
    return int(found.group(1)) if found else 0


def goals(row: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each goal of the issue that applies to this crowd: pass, and the margin in points."""
    offline, online = row["ours_offline"], row["online"]["shuffled_mean_accuracy"]
    out: dict[str, dict[str, Any]] = {}
    best = row["best_batch"]["accuracy"]
    out["offline >= best batch"] = {"pass": offline >= best - 1e-12, "margin_points": 100 * (offline - best)}
    if row["shape"]["answers_per_item_max"] > row["online"]["policy_minimum"]:
        out["online >= offline - 1 pt"] = {"pass": online >= offline - ONLINE_SLACK - 1e-12,
                                           "margin_points": 100 * (online - offline + ONLINE_SLACK)}
        fraction = row["online"]["shuffled_mean_fraction"]
        out["answers used <= 60%"] = {"pass": fraction <= MAX_FRACTION + 1e-12,
                                      "margin_points": 100 * (MAX_FRACTION - fraction)}
    else:
        out["online = offline (+-0.5 pt)"] = {"pass": abs(online - offline) <= EQUAL_SLACK + 1e-12,
                                              "margin_points": 100 * (EQUAL_SLACK - abs(online - offline))}
    return out


def measure(folder: Path, seeds: int, baseline: dict[str, Any]) -> dict[str, Any]:
    offline = run_ours(folder)
    file_order = run_ours(folder, online=True)
    shuffled = [run_ours(folder, online=True, seed=s) for s in range(seeds)]
    keep = ("accuracy", "accuracy_after_refit", "fraction_consumed", "subjects_retired",
            "retirement_reasons", "seconds", "wall_seconds")
    accs = np.array([r["accuracy"] for r in shuffled])
    fracs = np.array([r["fraction_consumed"] for r in shuffled])
    online = {"policy": file_order["policy"], "policy_minimum": policy_minimum(file_order["policy"]),
              "refit_every": file_order["settings"]["refit_every"],
              "file_order": {k: file_order[k] for k in keep},
              "shuffled": [{"seed": s, **{k: r[k] for k in keep}} for s, r in enumerate(shuffled)],
              "shuffled_mean_accuracy": float(accs.mean()),
              "shuffled_sd_accuracy": float(accs.std(ddof=1)) if accs.size > 1 else 0.0,
              "shuffled_min_accuracy": float(accs.min()), "shuffled_max_accuracy": float(accs.max()),
              "shuffled_mean_accuracy_after_refit": float(np.mean([r["accuracy_after_refit"] for r in shuffled])),
              "shuffled_mean_fraction": float(fracs.mean())}
    best = max(METHODS, key=lambda m: baseline[m]["accuracy"])
    row = {"folder": str(folder), "shape": shape(folder), "ours_offline": offline["accuracy"],
           "ours_offline_seconds": offline["seconds"], "crowdkit": baseline,
           "best_batch": {"method": best, "accuracy": baseline[best]["accuracy"]}, "online": online,
           "warnings": sorted({r["stderr"] for r in [offline, file_order, *shuffled] if r["stderr"]})}
    row["goals"] = goals(row)
    return row


def per_item(s: dict[str, Any]) -> str:
    lo, hi, mean = s["answers_per_item_min"], s["answers_per_item_max"], s["answers_per_item_mean"]
    return f"{lo}" if lo == hi else f"{lo}–{hi} ({mean:.1f})"


def table(rows: dict[str, dict[str, Any]]) -> str:
    """The results as one Markdown table (accuracies in %, differences in points)."""
    head = ["crowd", "items", "answers/item", "ours offline", "MV", "DS", "GLAD", "best batch",
            "ours − best", "ours online (± sd)", "online − offline", "answers used",
            "online, file order", "goals"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in rows.items():
        ck, on, off = r["crowdkit"], r["online"], r["ours_offline"]
        fo = on["file_order"]
        failed = [g for g, v in r["goals"].items() if not v["pass"]]
        cells = [name, f"{r['shape']['items']:,}", per_item(r["shape"]), f"{100 * off:.2f}",
                 *(f"{100 * ck[m]['accuracy']:.2f}" for m in METHODS),
                 f"{r['best_batch']['method']} {100 * r['best_batch']['accuracy']:.2f}",
                 f"{100 * (off - r['best_batch']['accuracy']):+.2f}",
                 f"{100 * on['shuffled_mean_accuracy']:.2f} ± {100 * on['shuffled_sd_accuracy']:.2f}",
                 f"{100 * (on['shuffled_mean_accuracy'] - off):+.2f}",
                 f"{100 * on['shuffled_mean_fraction']:.1f}%",
                 f"{100 * fo['accuracy']:.2f} ({100 * fo['fraction_consumed']:.1f}%)",
                 "all pass" if not failed else "FAIL: " + "; ".join(failed)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def goal_lines(rows: dict[str, dict[str, Any]]) -> list[str]:
    out = []
    for name, r in rows.items():
        parts = [f"{g} {'pass' if v['pass'] else 'FAIL'} ({v['margin_points']:+.2f})" for g, v in r["goals"].items()]
        out.append(f"- {name}: " + "; ".join(parts))
    return out


def markdown(result: dict[str, Any]) -> str:
    rows = result["crowds"]
    n = result["seeds"]
    return "\n".join([
        "# The engine on crowds with truth: offline, online, and crowd-kit",
        "",
        "Written by `bench/aggregation_crowds.py`"
        + (f" (every figure: `{result['json']}`)." if result["json"] else "."),
        "",
        "```", result["command"], "```", "",
        f"Ours: `python -m aggregation replay --json` (offline) and `--online` with its default policy "
        f"`{result['policy']}`, refit every 250 answers, mean over {n} shuffled arrival orders "
        f"(`--shuffle 0..{n - 1}`; ± is their sd) and, apart, the file's own order. crowd-kit "
        f"{result['crowdkit_version']} (pandas {result['pandas_version']}): MajorityVote, "
        "DawidSkene(n_iter=100), GLAD() offline. Accuracies in %, differences in points; "
        "\"answers used\" is the mean share of the answers the online runs consumed.",
        "",
        table(rows),
        "",
        "Goals (margin in points; positive means room to spare): offline ≥ the best of MV/DS/GLAD; "
        "where items have more answers than the policy's minimum, online (shuffled mean) ≥ offline − 1 "
        "and answers used ≤ 60%; where none has more (nothing to save), |online − offline| ≤ 0.5.",
        "",
        *goal_lines(rows),
        "",
        "MajorityVote's tied items (crowd-kit breaks them by its label order, the order labels first "
        "appear in the file): " + ", ".join(f"{name} {r['crowdkit']['MV'].get('ties', '?')}"
                                            for name, r in rows.items()) + ".",
        "",
        f"Engine at `{result['git']['head']}`"
        + (f" with uncommitted changes to {', '.join(result['git']['dirty_aggregation'])}"
           if result["git"]["dirty_aggregation"] else "") + f"; {result['seconds']:.0f} s in all.",
        "",
    ])


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    dirty = [line[3:] for line in git("status", "--porcelain", "--", "aggregation").splitlines()]
    return {"head": git("rev-parse", "--short", "HEAD"), "dirty_aggregation": dirty}


def crowd_name(folder: Path, taken: set[str]) -> str:
    name = folder.name
    return name if name not in taken else str(folder)


def main_crowds(args: argparse.Namespace, argv: list[str]) -> int:
    folders = [Path(f).resolve() for f in args.crowds] if args.crowds else DEFAULT_CROWDS
    if not args.crowds and not all((f / "answers.csv").exists() for f in DEFAULT_CROWDS[2:]):
        make_all()
    for folder in folders:
        for file in ("answers.csv", "truth.csv"):
            if not (folder / file).exists():
                print(f"error: {folder / file} does not exist", file=sys.stderr)
                return 2
    if not Path(args.bench_python).exists():
        print(f"error: {args.bench_python} not found; install crowd-kit into .venv-bench "
              "(see bench/requirements.txt)", file=sys.stderr)
        return 2
    start = time.perf_counter()
    state = git_state()
    print(f"crowd-kit on {len(folders)} crowd(s) ...", flush=True)
    baselines = run_baselines(folders, Path(args.bench_python))
    rows: dict[str, dict[str, Any]] = {}
    for folder in folders:
        name = crowd_name(folder, set(rows))
        print(f"ours on {name} (offline, file order, {args.seeds} shuffled orders) ...", flush=True)
        rows[name] = measure(folder, args.seeds, baselines["crowds"][str(folder)])
    result = {"command": shlex.join([".venv/bin/python", "bench/aggregation_crowds.py", *argv]),
              "json": args.json, "seeds": args.seeds, "policy": next(iter(rows.values()))["online"]["policy"],
              "crowdkit_version": baselines["crowdkit_version"],
              "pandas_version": baselines["pandas_version"], "git": state,
              "seconds": time.perf_counter() - start, "crowds": rows}
    print()
    print(table(rows))
    print()
    print("\n".join(goal_lines(rows)))
    for name, r in rows.items():
        for warning in r["warnings"]:
            print(f"{name}: {warning}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.md:
        Path(args.md).write_text(markdown(result))
    failed = sum(not v["pass"] for r in rows.values() for v in r["goals"].values())
    print(f"\n{failed} goal(s) failed; {result['seconds']:.0f} s")
    return 0


# --settings: the figures this script printed before it compared against crowd-kit.
# (label, policy, estimator options): the same for both crowds.
SETTINGS = [(DEFAULT_ONLINE_POLICY, DEFAULT_ONLINE_POLICY, {}),
            ("min:3,risk:0.001", "min:3,risk:0.001", {}),
            (f"{DEFAULT_ONLINE_POLICY}, plain-EM refits", DEFAULT_ONLINE_POLICY,
             {"leave_one_out": False}),
            (f"{DEFAULT_ONLINE_POLICY}, uniform class prior (the default before issue 24)", DEFAULT_ONLINE_POLICY,
             {"learn_class_prior": False})]


def main_settings(args: argparse.Namespace) -> int:
    out: dict[str, Any] = {}
    for name in ("duck", "dog"):
        table_ = read_answers(REAL / name / "answers.csv")
        truth = read_truth(REAL / name / "truth.csv")
        offline, _ = replay(table_, truth)
        out[name] = {"offline": offline.accuracy, "online": {}}
        print(f"{name}: offline accuracy {offline.accuracy:.4f} "
              f"({offline.n_answers} answers, {offline.seconds:.3f} s)")
        for label, policy, options in SETTINGS:
            rows = []
            for seed in [None, *range(args.seeds)]:
                res, _ = replay(table_, truth, online=True, policy=policy, order_seed=seed,
                                estimator_options=options)
                rows.append({"order": "file" if seed is None else f"shuffle {seed}",
                             "accuracy": res.accuracy,
                             "accuracy_after_refit": res.accuracy_after_refit,
                             "fraction": res.fraction_consumed,
                             "retired": res.subjects_retired, "seconds": res.seconds})
            shuffled = rows[1:]
            summary = {"rows": rows,
                       "shuffled_mean_accuracy": float(np.mean([r["accuracy"] for r in shuffled])),
                       "shuffled_mean_accuracy_after_refit": float(np.mean(
                           [r["accuracy_after_refit"] for r in shuffled])),
                       "shuffled_mean_fraction": float(np.mean([r["fraction"] for r in shuffled]))}
            out[name]["online"][label] = summary
            print(f"  online, policy {label}:")
            for r in rows:
                print(f"    {r['order']:<10} accuracy {r['accuracy']:.4f} "
                      f"(after the last refit {r['accuracy_after_refit']:.4f})  answers used "
                      f"{100 * r['fraction']:5.1f}%  retired {r['retired']}  {r['seconds']:.2f} s")
            print(f"    shuffled mean: accuracy {summary['shuffled_mean_accuracy']:.4f} "
                  f"({100 * (summary['shuffled_mean_accuracy'] - offline.accuracy):+.2f} points; "
                  f"after the last refit "
                  f"{summary['shuffled_mean_accuracy_after_refit']:.4f}), "
                  f"answers used {100 * summary['shuffled_mean_fraction']:.1f}%")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("crowds", nargs="*", help="folders of answers.csv and truth.csv "
                                                  "(default: duck, dog and the simulated crowds)")
    parser.add_argument("--seeds", type=int, default=5, help="shuffled arrival orders online (0..N-1)")
    parser.add_argument("--json", help="write every figure here")
    parser.add_argument("--md", help="write the table and the goals here (Markdown)")
    parser.add_argument("--bench-python", default=str(BENCH_PYTHON),
                        help="the interpreter with crowd-kit (default .venv-bench/bin/python)")
    parser.add_argument("--settings", action="store_true",
                        help="the earlier figures instead: duck and dog under four engine settings")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    return main_settings(args) if args.settings else main_crowds(args, argv)


if __name__ == "__main__":
    raise SystemExit(main())
