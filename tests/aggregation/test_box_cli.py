"""Tests of ``replay-boxes``: CSV reading, error line numbers, and the figures on real data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aggregation.box_cli import main

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "boxes"
CROWD = DATA / "pedestrians_crowd.csv"
GOLD = DATA / "pedestrians_gold_dev.csv"


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


SMALL = """image,worker,x,y,width,height
i1,a,10,10,20,40
i1,b,11,10,20,40
i1,c,,,,
i1,c,300,300,0,0
i2,a,,,,
i2,b,,,,
"""


def test_small_replay_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    boxes = _write(tmp_path, "b.csv", SMALL)
    gold = _write(tmp_path, "g.csv", "image,x,y,width,height\ni1,10,10,20,40\ni2,,,,\n")
    assert main(["--boxes", boxes, "--gold", gold, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["f1"] == 1.0 and out["tp"] == 1 and out["fp"] == 0
    assert out["images"] == 2 and out["classifications_used"] == 5
    assert out["degenerate_boxes_skipped"] == 1
    assert main(["--boxes", boxes, "--online", "--policy", "max:1"]) == 0
    text = capsys.readouterr().out
    assert "classifications used: 2 of 5" in text


@pytest.mark.parametrize(("body", "line", "words"), [
    ("i1,a,1,2,3,4\ni1,b,1,2,x,4\n", 3, "width is not a number"),
    ("i1,a,1,2,3,4\ni1,b,1,2,3,4\ni2,c,1,,3,4\n", 4, "partly empty"),
    ("i1,a,1,2,3\n", 2, "expected 6 fields"),
    ("i1,a,1,2,-3,4\n", 2, "negative"),
    (",a,1,2,3,4\n", 2, "must not be empty"),
])
def test_malformed_rows_name_their_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                        body: str, line: int, words: str) -> None:
    path = _write(tmp_path, "bad.csv", "image,worker,x,y,width,height\n" + body)
    assert main(["--boxes", path]) == 2
    err = capsys.readouterr().err
    assert f"bad.csv:{line}:" in err and words in err


def test_missing_column_and_bad_gold(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _write(tmp_path, "b.csv", "image,worker,x,y,w,h\ni,a,1,2,3,4\n")
    assert main(["--boxes", path]) == 2
    assert "b.csv:1: missing column(s) width, height" in capsys.readouterr().err
    good = _write(tmp_path, "ok.csv", SMALL)
    gold = _write(tmp_path, "g.csv", "image,x,y,width,height\ni1,1,1,1,1\ni1,1,1,nan,1\n")
    assert main(["--boxes", good, "--gold", gold]) == 2
    assert "g.csv:3:" in capsys.readouterr().err
    assert main(["--boxes", str(tmp_path / "none.csv")]) == 2
    assert "cannot read" in capsys.readouterr().err


def _run(args: list[str], capsys: pytest.CaptureFixture) -> dict:
    assert main(["--boxes", str(CROWD), "--gold", str(GOLD), "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.skipif(not CROWD.exists(), reason="real data not available")
def test_real_pedestrians_offline_f1(capsys: pytest.CaptureFixture) -> None:
    out = _run([], capsys)
    assert out["workers_per_image"] == 7.0
    assert out["f1"] >= 0.90


@pytest.mark.skipif(not CROWD.exists(), reason="real data not available")
def test_real_pedestrians_online_f1_with_few_workers(capsys: pytest.CaptureFixture) -> None:
    out = _run(["--online"], capsys)
    assert out["workers_per_image"] <= 2.5
    assert out["f1"] >= 0.88


def test_gold_split_learns_from_one_half_and_scores_the_other(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rows = ["image,worker,x,y,width,height"]
    gold_rows = ["image,x,y,width,height"]
    for k in range(6):
        for w in "abc":
            rows.append(f"i{k},{w},{10 * k},5,10,20")
        gold_rows.append(f"i{k},{10 * k},5,10,20")
    boxes = _write(tmp_path, "b.csv", "\n".join(rows) + "\n")
    gold = _write(tmp_path, "g.csv", "\n".join(gold_rows) + "\n")
    assert main(["--boxes", boxes, "--gold", gold, "--gold-split", "--online", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["gold_images_scored"] == 6 and out["gold_images_learned_from_per_run"] == 3
    assert out["f1"] == 1.0
    assert main(["--boxes", boxes, "--gold-split"]) == 2
    assert "--gold-split needs --gold" in capsys.readouterr().err


# --- bad input: an error or a loud warning, never a silent figure ---------------------------

HEADER = "image,worker,x,y,width,height\n"
GOLD_HEADER = "image,x,y,width,height\n"


@pytest.mark.parametrize("text", [HEADER, "", "\n\n", "\n" + HEADER + "\n"])
def test_a_boxes_file_without_rows_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture,
                                               text: str) -> None:
    path = _write(tmp_path, "b.csv", text)
    assert main(["--boxes", path, "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and f"error: {path}: no answers" in err


def test_a_gold_file_without_rows_is_an_error(tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    boxes = _write(tmp_path, "b.csv", SMALL)
    for text in (GOLD_HEADER, ""):
        gold = _write(tmp_path, "g.csv", text)
        assert main(["--boxes", boxes, "--gold", gold]) == 2
        out, err = capsys.readouterr()
        assert out == "" and f"error: {gold}: no gold images" in err


def test_gold_images_absent_from_the_crowd_warn_and_are_not_scored(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    boxes = _write(tmp_path, "b.csv", SMALL)  # images i1 (one box) and i2 (none)
    # i1 found, i2 rightly empty; six images no worker saw, four of them with boxes.
    unknown = "".join(f"u{k},1,1,5,5\n" if k < 4 else f"u{k},,,,\n" for k in range(6))
    gold = _write(tmp_path, "gold.csv", GOLD_HEADER + "i1,10,10,20,40\n" + unknown + "i2,,,,\n")
    assert main(["--boxes", boxes, "--gold", gold, "--json"]) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)
    # Scored over i1 and i2 only: the unknown images' boxes are not counted as missed.
    assert report["f1"] == 1.0 and report["tp"] == 1 and report["fn"] == 0
    assert report["gold_images"] == 8 and report["gold_images_unknown"] == 6
    assert report["gold_images_scored"] == 2
    assert report["gold_images_unknown_examples"] == ["u0", "u1", "u2", "u3", "u4"]
    assert (f"warning: {gold}: 6 of 8 images are not in the crowd file "
            "(e.g. u0, u1, u2, u3, u4, ...); scores are over the other 2") in err
    assert main(["--boxes", boxes, "--gold", gold]) == 0
    assert "gold images scored: 2 (6 of 8 gold images not in the crowd file, left out)" \
        in capsys.readouterr().out


def test_gold_naming_no_image_of_the_crowd_is_an_error(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    boxes = _write(tmp_path, "b.csv", SMALL)
    gold = _write(tmp_path, "g.csv", GOLD_HEADER + "z1,1,1,5,5\nz2,,,,\n")
    assert main(["--boxes", boxes, "--gold", gold, "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and f"error: {gold}: none of its 2 image(s) are in the crowd file" in err


def test_gold_split_splits_only_the_gold_images_the_crowd_saw(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rows = [HEADER.strip()] + [f"i{k},{w},{10 * k},5,10,20" for k in range(6) for w in "abc"]
    gold_rows = [GOLD_HEADER.strip()] + [f"i{k},{10 * k},5,10,20" for k in range(6)]
    gold_rows += ["u1,1,1,5,5", "u2,1,1,5,5"]
    boxes = _write(tmp_path, "b.csv", "\n".join(rows) + "\n")
    gold = _write(tmp_path, "g.csv", "\n".join(gold_rows) + "\n")
    assert main(["--boxes", boxes, "--gold", gold, "--gold-split", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["gold_images_learned_from_per_run"] == 3 and out["gold_images_scored"] == 6
    assert out["gold_images_unknown"] == 2 and out["f1"] == 1.0


@pytest.mark.parametrize(("body", "line", "words"), [
    ("i1,10,10,20,40\ni1,,,,\n", 3, "image 'i1' has boxes (line 2) and an empty row"),
    ("i1,,,,\ni1,10,10,20,40\n", 3, "image 'i1' has an empty row saying it has no boxes"),
    ("i1,10,10,20,40\ni2,,,,\ni1,10,10,20,40\n", 4, "the same gold box as line 2"),
    ("i1,10,10,0,40\n", 2, "a gold box must have positive width and height"),
    ("i1,10,10,20\n", 2, "expected 5 fields, got 4"),
])
def test_contradictory_gold_names_the_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                           body: str, line: int, words: str) -> None:
    boxes = _write(tmp_path, "b.csv", SMALL)
    gold = _write(tmp_path, "g.csv", GOLD_HEADER + body)
    assert main(["--boxes", boxes, "--gold", gold]) == 2
    assert f"{gold}:{line}: {words}" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [["--iou", "0"], ["--iou", "1.5"], ["--iou", "nan"],
                                 ["--risk", "-1"], ["--risk", "nan"]])
def test_bad_numeric_options_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture,
                                         bad: list[str]) -> None:
    boxes = _write(tmp_path, "b.csv", SMALL)
    with pytest.raises(SystemExit) as exc:
        main(["--boxes", boxes, *bad])
    assert exc.value.code == 2 and bad[0] in capsys.readouterr().err


def test_undecodable_text_names_its_line_and_blank_lines_are_skipped(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "b.csv"
    path.write_bytes(HEADER.encode() + b"i1,a,,,,\ni\xff,b,,,,\n")
    assert main(["--boxes", str(path)]) == 2
    assert f"{path}:3: not UTF-8 text" in capsys.readouterr().err
    path.write_bytes(b"\xef\xbb\xbf\n" + SMALL.replace("i2,a", "\ni2,a").encode())
    assert main(["--boxes", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["classifications_read"] == 5
