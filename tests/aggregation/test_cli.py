"""The replay command line: figures on the real crowds, and malformed input by line number."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aggregation.cli import main
from aggregation.replay import DEFAULT_ONLINE_POLICY

ROOT = Path(__file__).resolve().parents[2]
CROWDS = ROOT.parent / "shared" / "data" / "crowds"
needs_crowds = pytest.mark.skipif(not (CROWDS / "duck" / "answers.csv").exists(),
                                  reason="real crowds not present")

# crowd-kit 1.4.2 on the same data (see ../shared/data/README.md).
DAWID_SKENE = {"duck": 0.889, "dog": 0.843}


def run_json(capsys, *args: str) -> dict:
    assert main(["replay", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def crowd_args(name: str) -> list[str]:
    return ["--answers", str(CROWDS / name / "answers.csv"),
            "--truth", str(CROWDS / name / "truth.csv")]


@needs_crowds
@pytest.mark.parametrize("name", ["duck", "dog"])
def test_offline_accuracy_at_least_crowd_kit_dawid_skene(capsys, name: str) -> None:
    result = run_json(capsys, *crowd_args(name))
    assert result["mode"] == "offline"
    # Within one item: with the class prior learned (aggregation.defaults.LEARN_CLASS_PRIOR, as
    # crowd-kit's DawidSkene does) dog is 0.8414 against crowd-kit's 0.8426, one item of its 807.
    assert result["accuracy"] >= DAWID_SKENE[name] - 1.5 / result["n_truth"]
    assert result["answers_consumed"] == result["n_answers"]


# One policy for both crowds: the CLI's default (aggregation.replay.DEFAULT_ONLINE_POLICY);
# the figures for the file's own order and other policies are in aggregation/README.md.
@needs_crowds
@pytest.mark.parametrize("name", ["duck", "dog"])
def test_online_near_offline_accuracy_on_at_most_60_percent_of_answers(capsys, name) -> None:
    offline = run_json(capsys, *crowd_args(name))["accuracy"]
    runs = [run_json(capsys, *crowd_args(name), "--online", "--shuffle", str(seed))
            for seed in range(5)]
    for online in runs:
        assert online["mode"] == "online" and online["policy"] == DEFAULT_ONLINE_POLICY
        assert online["fraction_consumed"] <= 0.61
        assert online["answers_saved"] == online["n_answers"] - online["answers_consumed"] > 0
        assert online["subjects_retired"] > 0.8 * online["n_subjects"]
    assert sum(r["fraction_consumed"] for r in runs) / len(runs) <= 0.60
    mean_accuracy = sum(r["accuracy"] for r in runs) / len(runs)
    # With the class prior learned (the one default of library, CLI and platform) duck online is
    # 0.874 at 32.5% of its answers (0.889 at 35.3% with a uniform prior), dog 0.835 at 56.2%
    # (0.838 at 58.9%): a point and a half lost on duck, left to the issue on real crowds (26).
    assert mean_accuracy >= offline - 0.03


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_malformed_rows_are_reported_by_line_number(tmp_path: Path, capsys) -> None:
    answers = write(tmp_path, "a.csv", "question,worker,answer\n1,a,0\n1,b\n2,c,yes\n\n"
                                       "3,,1\n4,d,-1\n5,e,1\n")
    assert main(["replay", "--answers", answers]) == 2
    err = capsys.readouterr().err
    for line, msg in [(3, "expected 3 fields"), (4, "'yes'"), (6, "empty"), (7, "'-1'")]:
        assert f"a.csv:{line}: " in err and msg in err
    assert "a.csv:2:" not in err and "a.csv:8:" not in err


def test_bad_header_truth_and_policy(tmp_path: Path, capsys) -> None:
    bad_header = write(tmp_path, "h.csv", "q,w,a\n1,2,3\n")
    assert main(["replay", "--answers", bad_header]) == 2
    assert "h.csv:1:" in capsys.readouterr().err
    good = write(tmp_path, "g.csv", "question,worker,answer\n1,a,0\n1,b,1\n")
    truth = write(tmp_path, "t.csv", "question,truth\n1,zero\n")
    assert main(["replay", "--answers", good, "--truth", truth]) == 2
    assert "t.csv:2:" in capsys.readouterr().err
    assert main(["replay", "--answers", good, "--online", "--policy", "risk:lots"]) == 2
    assert "--policy" in capsys.readouterr().err
    assert main(["replay", "--answers", str(tmp_path / "missing.csv")]) == 2
    assert main(["nope"]) == 2


def test_text_output_and_module_entry_point(tmp_path: Path) -> None:
    rows = "".join(f"{s},{w},{(s + (w == 3)) % 2}\n" for s in range(30) for w in range(5))
    answers = write(tmp_path, "a.csv", "question,worker,answer\n" + rows)
    truth = write(tmp_path, "t.csv", "question,truth\n" + "".join(
        f"{s},{s % 2}\n" for s in range(30)))
    out = subprocess.run([sys.executable, "-m", "aggregation", "replay", "--answers", answers,
                          "--truth", truth, "--online", "--policy", "agree:3,max:5"],
                         capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert "accuracy: 1.0000 on 30 subjects" in out
    assert "answers consumed: 90 of 150 (60.0%), saved 60" in out
    assert "subjects retired: 30 of 30 (agreement 30)" in out
    assert "answers/s" in out


@needs_crowds
def test_vectorised_online_replay_matches_the_exact_one_closely(capsys) -> None:
    exact = run_json(capsys, *crowd_args("dog"), "--online", "--shuffle", "0")
    chunked = run_json(capsys, *crowd_args("dog"), "--online", "--shuffle", "0",
                       "--chunk-size", "50")
    assert chunked["settings"]["chunk_size"] == 50
    assert abs(chunked["accuracy"] - exact["accuracy"]) < 0.01
    assert abs(chunked["fraction_consumed"] - exact["fraction_consumed"]) < 0.02
