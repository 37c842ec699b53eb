"""The builder's subject upload (projects/uploads.py): images and a manifest stored all or nothing;
every bad line and bad image reported at once; gold answers checked against the workflow's tree;
an image that is not one, or over the limits, refused with nothing stored (no row, no file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from projects.errors import InputRejected
from projects.uploads import UploadLimits, upload_subjects
from tests.builder.conftest import TWO_QUESTIONS_AND_DRAWING, image_bytes, images, manifest_file, uploaded

pytestmark = pytest.mark.django_db


def _stored_files(media: Path) -> list[Path]:
    return [p for p in media.rglob("*") if p.is_file()] if media.exists() else []


def _nothing_stored(workflow, media: Path) -> None:
    from projects.models import Subject, SubjectSet, SubjectWorkflowState

    assert not Subject.objects.exists() and not SubjectSet.objects.exists()
    assert not SubjectWorkflowState.objects.filter(workflow=workflow).exists()
    assert _stored_files(media) == []


def test_images_and_a_manifest_become_queued_subjects(draft, people, _media_root) -> None:
    from projects.models import AdminAction, Subject, SubjectWorkflowState

    workflow = draft(tasks=TWO_QUESTIONS_AND_DRAWING)
    manifest = manifest_file([
        "external_id,image,gold.T0,gold.T2,redshift,#secret",
        "a,g0.png,1,,0.01,x",
        'b,g1.png;g2.png,,"[{""tool"": 0, ""x"": 1, ""y"": 2, ""width"": 10, ""height"": 8}]",0.02,y',
        "c,g3.png,,,0.03,z",
    ])
    report = upload_subjects(workflow, "First batch", manifest, images(4), people["scientist"])
    assert (report.created, report.gold, report.queued, report.subject_set.name) == (3, 2, 3, "First batch")
    b = Subject.objects.get(external_id="b")
    assert [(i.position, i.width, i.height) for i in b.images.all()] == [(0, 60, 40), (1, 60, 40)]
    assert b.gold == {"T2": [{"tool": 0, "x": 1, "y": 2, "width": 10, "height": 8}]}
    assert b.public_metadata == {"redshift": "0.02"} and b.metadata["#secret"] == "y"
    assert len(_stored_files(_media_root)) == 4
    states = SubjectWorkflowState.objects.filter(workflow=workflow)
    assert states.count() == 3 and set(states.filter(is_gold=True).values_list("subject__external_id", flat=True)) == {"a", "b"}
    assert AdminAction.objects.get(workflow=workflow, action="subjects_uploaded").details["subjects"] == 3


def test_without_an_external_id_column_the_file_name_is_the_subjects_id(draft) -> None:
    from projects.models import Subject

    workflow = draft()
    upload_subjects(workflow, "set", manifest_file(["image,mag", "g0.png,17", "g1.png,18"]), images(2))
    assert sorted(Subject.objects.values_list("external_id", flat=True)) == ["g0.png", "g1.png"]


def test_every_bad_line_and_image_is_reported_at_once_and_nothing_is_stored(draft, _media_root) -> None:
    workflow = draft(tasks=TWO_QUESTIONS_AND_DRAWING)
    files = [*images(5), uploaded("notes.png", b"this is text, not a PNG"), uploaded("extra.png", image_bytes())]
    manifest = manifest_file([
        "external_id,image,gold.T0,gold.T9",
        "a,g0.png,1,",          # fine
        "b,g1.png,7,",          # T0 has answers 0 and 1
        "c,missing.png,,",      # not uploaded
        "a,g2.png,,",           # external_id twice
        "d,g3.png,,1",          # no task T9
        "e,g4.png,zero,",       # not a number
        "f,notes.png,,",        # not an image
        "g,g0.png,0,,surplus",  # more fields than columns
    ])
    with pytest.raises(InputRejected) as refused:
        upload_subjects(workflow, "bad", manifest, files)
    errors = refused.value.errors
    manifest_problems = "\n".join(errors["manifest"])
    for expected in [
        "line 3: gold.T0: 7 is not an answer of T0 (0: Smooth, 1: Featured)",
        "line 4: image 'missing.png' was not uploaded",
        "line 5: external_id 'a' appears twice (line 2 too)",
        "line 6: gold.T9: the workflow has no task 'T9'",
        "line 7: column gold.T0: 'zero' is not a number or JSON",
        "line 8: image 'notes.png' is refused (see images)",
        "line 9: more fields than the header has columns",
    ]:
        assert expected in manifest_problems, expected
    assert not any(problem.startswith("line 2:") for problem in errors["manifest"])
    assert any(p.startswith("notes.png is not an image Pillow can read") for p in errors["images"])
    assert "extra.png is not named in the manifest" in errors["images"]
    _nothing_stored(workflow, _media_root)


@pytest.mark.parametrize(
    ("files", "lines", "field", "message"),
    [
        ([uploaded("g0.tiff", image_bytes(fmt="TIFF"), "image/tiff")], ["image", "g0.tiff"], "images", "is a TIFF image; browsers show PNG, JPEG, GIF, WebP"),
        ([uploaded("g0.png", image_bytes()[:40])], ["image", "g0.png"], "images", "is not an image Pillow can read"),
        ([uploaded("g0.png", image_bytes())], ["file,mag", "g0.png,1"], "manifest", "line 1: the header lacks column(s) image"),
        ([uploaded("g0.png", image_bytes())], ["image,gold.T2", 'g0.png,"[{""tool"": 0, ""x"": 50, ""y"": 0, ""width"": 20, ""height"": 5}]"'],
         "manifest", "line 2: gold.T2: mark 0: the box lies outside the 60x40 image"),
        ([uploaded("g0.png", image_bytes())], ["image,gold.T0", "g0.png,true"], "manifest", "line 2: gold.T0: true is not one answer index"),
        ([], ["image", "g0.png"], "images", "choose at least one image"),
        ([uploaded("g0.png", image_bytes()), uploaded("g0.png", image_bytes())], ["image", "g0.png"], "images", "g0.png is there twice"),
    ],
)
def test_one_bad_file_or_line_refuses_the_whole_upload(draft, _media_root, files, lines, field, message) -> None:
    workflow = draft(tasks=TWO_QUESTIONS_AND_DRAWING)
    with pytest.raises(InputRejected) as refused:
        upload_subjects(workflow, "set", manifest_file(lines), files)
    assert any(message in problem for problem in refused.value.errors[field]), refused.value.errors
    _nothing_stored(workflow, _media_root)


def test_the_limits_per_file_per_upload_and_on_the_number_of_files(draft, _media_root) -> None:
    workflow = draft()
    big = uploaded("big.png", image_bytes(size=(400, 400), colour=(1, 2, 3)) + b"\0" * 3000)
    limits = UploadLimits(max_file_bytes=2000, max_total_bytes=10**9, max_files=5)
    with pytest.raises(InputRejected) as refused:
        upload_subjects(workflow, "set", manifest_file(["image", "big.png"]), [big], limits=limits)
    assert refused.value.errors["images"] == [f"big.png is {big.size / 1024:.1f} KB; at most 2.0 KB per file"]
    assert refused.value.errors["manifest"] == ["line 2: image 'big.png' is refused (see images)"]
    with pytest.raises(InputRejected) as refused:
        upload_subjects(workflow, "set", manifest_file(["image", *[f"g{i}.png" for i in range(6)]]), images(6), limits=limits)
    assert "6 files; at most 5 at once" in refused.value.errors["images"]
    with pytest.raises(InputRejected) as refused:
        upload_subjects(workflow, "set", manifest_file(["image", "g0.png"]), images(1), limits=UploadLimits(10**6, 100, 5))
    assert any("the files come to more than 100 bytes" in p for p in refused.value.errors["images"])
    _nothing_stored(workflow, _media_root)


def test_subjects_already_in_the_set_are_named_and_the_second_upload_stores_nothing(draft, _media_root) -> None:
    from projects.models import Subject

    workflow = draft()
    upload_subjects(workflow, "set", manifest_file(["external_id,image", "a,g0.png"]), images(1))
    with pytest.raises(InputRejected) as refused:
        upload_subjects(workflow, "set", manifest_file(["external_id,image", "b,g1.png", "a,g0.png"]), images(2))
    assert refused.value.errors["manifest"] == ["line 3: external_id 'a' is already in subject set 'set'"]
    assert list(Subject.objects.values_list("external_id", flat=True)) == ["a"] and len(_stored_files(_media_root)) == 1


def test_a_failure_while_writing_removes_the_files_already_written(draft, _media_root, monkeypatch) -> None:
    from projects import services

    workflow = draft()

    def fail(*args, **kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(services, "link_subject_set", fail)
    with pytest.raises(RuntimeError):
        upload_subjects(workflow, "set", manifest_file(["image", "g0.png", "g1.png"]), images(2))
    _nothing_stored(workflow, _media_root)


def test_a_manifest_that_is_not_utf8_or_names_nothing_is_refused(draft) -> None:
    workflow = draft()
    with pytest.raises(InputRejected) as refused:
        upload_subjects(workflow, "set", uploaded("m.csv", "image\ngé.png\n".encode("latin-1"), "text/csv"), images(1))
    assert refused.value.errors["manifest"] == ["the manifest is not UTF-8 text (save the CSV as UTF-8)"]
    with pytest.raises(InputRejected) as refused:
        upload_subjects(workflow, "", manifest_file(["image"]), images(1))
    assert refused.value.errors["manifest"] == ["the manifest names no subject"]
    assert refused.value.errors["subject_set"] == ["give the subject set a name"]
    with pytest.raises(InputRejected) as refused:
        upload_subjects(workflow, "set", None, images(1))
    assert refused.value.errors["manifest"] == ["choose the manifest (CSV) that names each image"]
