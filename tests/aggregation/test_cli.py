"""The replay command line: figures on the real crowds, and malformed input by line number."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
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
    # --half-trust 0: every worker trusted from its first answer, so three agreeing answers label a
    # subject (with the default the label at retirement stays the prior's until a refit: 0.5 here).
    out = subprocess.run([sys.executable, "-m", "aggregation", "replay", "--answers", answers,
                          "--truth", truth, "--online", "--policy", "agree:3,max:5", "--half-trust", "0"],
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


# --- bad input: an error or a loud warning, never a silent figure ---------------------------

# q1 is answered 0 by all, q2 and q3 1 by all: the engine labels them 0, 1, 1.
TINY = "question,worker,answer\n" + "".join(
    f"{q},{w},{a}\n" for q, a in (("q1", 0), ("q2", 1), ("q3", 1)) for w in "abc")


@pytest.mark.parametrize("text", ["question,worker,answer\n", "", "\n\n  \n",
                                  "\nquestion,worker,answer\n\n"])
def test_an_answers_file_without_answers_is_an_error(tmp_path: Path, capsys, text: str) -> None:
    answers = write(tmp_path, "a.csv", text)
    assert main(["replay", "--answers", answers, "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and f"error: {answers}: no answers" in err


def test_a_truth_file_without_rows_is_an_error(tmp_path: Path, capsys) -> None:
    answers = write(tmp_path, "a.csv", TINY)
    for text in ("question,truth\n", ""):
        truth = write(tmp_path, "t.csv", text)
        assert main(["replay", "--answers", answers, "--truth", truth]) == 2
        out, err = capsys.readouterr()
        assert out == "" and f"error: {truth}: no truth rows" in err


def test_truth_for_unknown_questions_warns_and_scores_only_the_known(tmp_path: Path,
                                                                      capsys) -> None:
    answers = write(tmp_path, "a.csv", TINY)
    # Truth for the three known questions (q3 wrong: 2 of 3 right) and seven unknown ones.
    rows = "q1,0\nx1,0\nq2,1\nx2,1\nx3,0\nq3,0\nx4,0\nx5,1\nx6,0\nx7,1\n"
    truth = write(tmp_path, "truth.csv", "question,truth\n" + rows)
    for extra in ([], ["--online", "--policy", "agree:3"]):
        result = run_json(capsys, "--answers", answers, "--truth", truth, *extra)
        assert result["accuracy"] == pytest.approx(2 / 3)  # not 2/10: unknowns are not wrong
        assert result["n_truth"] == 10 and result["n_truth_unknown"] == 7
        assert result["n_truth_scored"] == 3
        assert result["truth_unknown_examples"] == ["x1", "x2", "x3", "x4", "x5"]
    assert main(["replay", "--answers", answers, "--truth", truth]) == 0
    out, err = capsys.readouterr()
    assert (f"warning: {truth}: 7 of 10 questions are not in the answers "
            "(e.g. x1, x2, x3, x4, x5, ...); accuracy is over the other 3") in err
    assert "accuracy: 0.6667 on 3 subjects with truth (7 of 10" in out
    # Every truth question known: no warning, the counts say so.
    known = write(tmp_path, "k.csv", "question,truth\nq1,0\nq2,1\nq3,1\n")
    result = run_json(capsys, "--answers", answers, "--truth", known)
    assert result["accuracy"] == 1.0 and result["n_truth_unknown"] == 0
    assert capsys.readouterr().err == ""


def test_truth_naming_no_question_of_the_answers_is_an_error(tmp_path: Path, capsys) -> None:
    answers = write(tmp_path, "a.csv", TINY)
    truth = write(tmp_path, "t.csv", "question,truth\nz1,0\nz2,1\n")
    assert main(["replay", "--answers", answers, "--truth", truth, "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert f"error: {truth}: none of its 2 question(s) are in the answers" in err
    assert "z1, z2" in err


def test_truth_outside_the_answers_classes_names_the_line(tmp_path: Path, capsys) -> None:
    answers = write(tmp_path, "a.csv", TINY)  # answers 0..1
    truth = write(tmp_path, "t.csv", "question,truth\nq1,0\nq2,5\nq3,1\n")
    assert main(["replay", "--answers", answers, "--truth", truth]) == 2
    err = capsys.readouterr().err
    assert f"{truth}:3: truth 5 for question 'q2' is outside the answers' classes 0..1" in err
    assert "--classes" in err
    assert main(["replay", "--answers", answers, "--truth", truth, "--classes", "4"]) == 2
    assert f"{truth}:3: truth 5 for question 'q2' is outside the classes 0..3 of --classes 4" \
        in capsys.readouterr().err
    # Declared classes that nobody answered are allowed: q2 is then simply wrong.
    result = run_json(capsys, "--answers", answers, "--truth", truth, "--classes", "6")
    assert result["accuracy"] == pytest.approx(2 / 3) and result["settings"]["n_classes"] == 6


def test_classes_below_an_answer_names_the_first_line(tmp_path: Path, capsys) -> None:
    answers = write(tmp_path, "a.csv", "question,worker,answer\nq1,a,0\nq1,b,3\nq2,a,2\n")
    assert main(["replay", "--answers", answers, "--classes", "3"]) == 2
    err = capsys.readouterr().err
    assert f"error: {answers}:3: answer 3 is not below --classes 3" in err
    assert main(["replay", "--answers", answers, "--classes", "2"]) == 2
    assert f"{answers}:3: answer 3 is not below --classes 2 (2 answer(s) are" \
        in capsys.readouterr().err


@pytest.mark.parametrize(("text", "where", "words"), [
    ("question\nq1\n", 1, "header needs one of the columns truth"),
    ("question,truth\nq1,0\nq2\n", 3, "expected 2 fields, got 1"),
    ("question,truth\nq1,0\nq2,1\nq1,1\n", 4, "question 'q1' has truth 1 here but 0 at line 2"),
    ("question,truth\nq1,0\n,1\n", 3, "empty question id"),
    ("question,truth\nq1,0\nq2,\n", 3, "truth '' is not a non-negative integer"),
])
def test_malformed_truth_names_the_line(tmp_path: Path, capsys, text: str, where: int,
                                        words: str) -> None:
    answers = write(tmp_path, "a.csv", TINY)
    truth = write(tmp_path, "t.csv", text)
    assert main(["replay", "--answers", answers, "--truth", truth]) == 2
    out, err = capsys.readouterr()
    assert out == "" and f"{truth}:{where}: {words}" in err


def test_a_truth_row_repeated_with_the_same_label_is_accepted(tmp_path: Path, capsys) -> None:
    answers = write(tmp_path, "a.csv", TINY)
    truth = write(tmp_path, "t.csv", "question,truth\nq1,0\nq2,1\nq1,0\n")
    result = run_json(capsys, "--answers", answers, "--truth", truth)
    assert result["n_truth"] == 2 and result["accuracy"] == 1.0


@pytest.mark.parametrize("bad", [["--classes", "1"], ["--classes", "0"], ["--chunk-size", "0"],
                                 ["--refit-every", "-1"], ["--shuffle", "-1"]])
def test_bad_numeric_options_are_refused(tmp_path: Path, capsys, bad: list[str]) -> None:
    answers = write(tmp_path, "a.csv", TINY)
    with pytest.raises(SystemExit) as exc:
        main(["replay", "--answers", answers, "--online", *bad])
    assert exc.value.code == 2 and bad[0] in capsys.readouterr().err


def test_a_policy_naming_an_answer_beyond_the_classes_is_an_error(tmp_path: Path,
                                                                   capsys) -> None:
    answers = write(tmp_path, "a.csv", TINY)
    assert main(["replay", "--answers", answers, "--online", "--policy",
                 "posterior[2]:0.9"]) == 2
    assert "--policy: posterior[2] names answer 2" in capsys.readouterr().err
    run_json(capsys, "--answers", answers, "--online", "--policy", "posterior[1]:0.9")


def test_undecodable_text_names_its_line_and_a_bom_is_accepted(tmp_path: Path,
                                                               capsys) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes(b"question,worker,answer\nq1,a,0\nq2,\xff,1\n")
    assert main(["replay", "--answers", str(path)]) == 2
    assert f"{path}:3: not UTF-8 text" in capsys.readouterr().err
    path.write_bytes(b"\xef\xbb\xbf" + TINY.encode())
    assert run_json(capsys, "--answers", str(path))["n_answers"] == 9


def test_library_replay_refuses_bad_input_and_scores_known_truth_only() -> None:
    from aggregation.io import AnswerTable
    from aggregation.replay import replay

    empty = AnswerTable(np.array([], dtype=str), np.array([], dtype=str),
                        np.array([], dtype=np.int64))
    with pytest.raises(ValueError, match="no answers"):
        replay(empty)
    table = AnswerTable(np.array(["q1", "q1", "q2", "q2"]), np.array(["a", "b", "a", "b"]),
                        np.array([0, 0, 1, 1]))
    result, _ = replay(table, {"q1": 0, "q2": 0, "gone": 1})
    assert result.accuracy == 0.5 and result.n_truth_unknown == 1
    assert result.truth_unknown_examples == ["gone"]
    with pytest.raises(ValueError, match="outside the classes 0..1"):
        replay(table, {"q1": 2})
    with pytest.raises(ValueError, match="n_classes"):
        replay(table, n_classes=1)
    result, _ = replay(table, {"gone": 0})
    assert result.accuracy is None and result.n_truth_scored == 0
