"""`affcli submit`: exactly the listed videos, every cached frame (faceless ones filled by the run's interpolation),
the edition's header and layout, checked before zipping; a complete package round-trips through `affcli score`'s
reader; a list with a video the cache lacks, a package with a missing frame and hostile lists are refused in one
line, and nothing but a regular file is ever written over."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from affcli.cache.store import FeatureStore
from affcli.cli import app
from affcli.heads.config import RunConfig
from affcli.heads.data.abaw_io import read_predictions
from affcli.heads.infer.predict import predict_run, write_run_predictions
from affcli.heads.infer.runs import open_run
from affcli.heads.infer.submit import SubmitError, check_package, layout
from affcli.heads.train.trainer import train_run
from affcli.synthetic.features import AUDIO, VISUAL, make_synthetic

FACELESS = slice(10, 20)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """A synthetic cache with two unlabelled test videos (one with frames 10-19 without a face) and an EXPR run that
    interpolates faceless frames linearly."""
    root = tmp_path_factory.mktemp("submit")
    cache, labels = make_synthetic(root, n_videos=4, n_frames=48, dims=(8, 6))
    store = FeatureStore(cache)
    rng = np.random.default_rng(1)
    for vid, n in (("test01", 40), ("test02", 33)):
        valid = np.ones(n, bool)
        if vid == "test01":
            valid[FACELESS] = False
        for spec, dim in ((VISUAL, 8), (AUDIO, 6)):
            store.write_video(spec, vid, rng.normal(size=(n, dim)).astype(np.float32),
                              valid if spec == VISUAL else np.ones(n, bool), np.arange(n) / 30.0, 30.0, f"{vid}.mp4")
    store.write_manifest()
    cfg = RunConfig.from_dict({"task": "expr", "features": [VISUAL, AUDIO], "cache": str(cache), "labels": str(labels),
                               "epochs": 1, "device": "cpu", "window": 16, "stride": 16, "d_model": 16,
                               "plots": False, "tensorboard": False, "interpolate": "linear", "out": str(root / "r")})
    train_run(cfg)
    return {"root": root, "cache": cache, "run": root / "r"}


def _submit(run, tmp_path, ids: str | bytes, *extra: str, out: Path | None = None):
    lst = tmp_path / "test_list.txt"
    lst.write_bytes(ids if isinstance(ids, bytes) else ids.encode())
    out = out or tmp_path / "sub.zip"
    return CliRunner().invoke(app, ["submit", "--run", str(run["run"]), "--test-list", str(lst), "--task", "expr",
                                    "--out", str(out), *extra]), out


@pytest.mark.parametrize("edition,entry", [("abaw10", "predictions_expr.txt"),
                                           ("abaw3", "EXPR_Classification_Challenge/test01.txt")])
def test_complete_package_round_trips_through_the_score_reader(run, tmp_path, edition, entry):
    res, out = _submit(run, tmp_path, "# test set\ntest01\ntest02\nvideo000_left\n", "--edition", edition)
    assert res.exit_code == 0, res.output
    assert "3 videos" in res.output and f"{40 + 33 + 48} frames" in res.output
    with zipfile.ZipFile(out) as z:
        names = z.namelist()
        assert entry in names and all(not n.startswith("/") and ".." not in n for n in names)
        z.extractall(tmp_path / "unzipped")
    where = tmp_path / "unzipped" / (entry.split("/")[0] if "/" in entry else "")
    got = read_predictions(where, "expr")
    assert sorted(got) == ["test01", "test02", "video000_left"]
    assert {v: len(a) for v, a in got.items()} == {"test01": 40, "test02": 33, "video000_left": 48}
    head = (where / (entry.split("/")[-1])).read_text().splitlines()[0]
    assert head.startswith("image_location,Neutral") if edition == "abaw10" else head.startswith("Neutral,Anger")
    # the same hard predictions as `predict` of those videos (faceless frames included, never dropped)
    predict_run(run["run"], None, tmp_path / "pred", videos=["test01", "test02"])
    want = read_predictions(tmp_path / "pred", "expr")
    for v in ("test01", "test02"):
        np.testing.assert_array_equal(got[v], want[v])


def test_faceless_frames_filled_by_the_runs_interpolation(run):
    view = open_run(run["run"])
    probs = view.video_outputs(["test01"])["test01"]["expr"]
    assert len(probs) == 40
    left, right = probs[FACELESS.start - 1], probs[FACELESS.stop]
    w = (np.arange(FACELESS.start, FACELESS.stop) - (FACELESS.start - 1)) / (FACELESS.stop - FACELESS.start + 1)
    np.testing.assert_allclose(probs[FACELESS], (1 - w)[:, None] * left + w[:, None] * right, atol=1e-5)


def test_list_with_a_video_the_cache_lacks_is_refused_in_one_line(run, tmp_path):
    res, out = _submit(run, tmp_path, "test01\nnot_cached\n")
    assert res.exit_code == 2 and "not_cached" in res.output and "not complete in the cache" in res.output
    assert len(res.output.strip().splitlines()) == 1 and not out.exists()


def test_package_with_a_missing_frame_is_refused_in_one_line(run, tmp_path):
    view = open_run(run["run"])
    lay = layout("expr", "abaw10")
    stage = tmp_path / "stage"
    write_run_predictions(view, {"test01": "test01", "test02": "test02"}, stage, lay.style)
    expected = {"test01": 40, "test02": 33}
    assert check_package(stage, "expr", lay, expected) == {"videos": 2, "frames": 73}
    f = stage / "predictions_expr.txt"
    lines = f.read_text().splitlines()
    f.write_text("\n".join(lines[:8] + lines[9:]) + "\n")
    with pytest.raises(SubmitError) as e:
        check_package(stage, "expr", lay, expected)
    assert "test01" in str(e.value) and "frame 00008 missing" in str(e.value) and "\n" not in str(e.value)
    f.write_text("\n".join(lines) + "\n" + lines[1] + "\n")
    with pytest.raises(SubmitError, match="lists a frame twice"):
        check_package(stage, "expr", lay, expected)
    f.write_text("\n".join(lines[:1] + [ln for ln in lines[1:] if not ln.startswith("test02/")]) + "\n")
    with pytest.raises(SubmitError, match="no predictions for 1 of 2"):
        check_package(stage, "expr", lay, expected)
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(SubmitError, match="not in the test list"):
        check_package(stage, "expr", lay, {"test01": 40})
    f.write_text(lines[0] + "\n" + lines[1].rsplit(",", 1)[0] + ",9\n")
    with pytest.raises(SubmitError, match="not an integer in 0..7"):
        check_package(stage, "expr", lay, {"test01": 1})


@pytest.mark.parametrize("ids,needle", [
    ("", "no video ids"),
    ("# only a comment\n\n", "no video ids"),
    (b"\x00\x01\xff\xfe", "binary bytes"),
    (b"\xff\xfe t\x00e\x00", "binary bytes"),
    (b"caf\xe9\n", "not UTF-8 text"),
    ("test01\n../etc/passwd\n", "path separator"),
    ("test01\n..\n", "relative path"),
    ("test01\ntest02\ntest01\n", "listed twice (first on line 1)"),
    ("test01,test02\n", "not one video id"),
])
def test_hostile_test_lists_refused_in_one_line(run, tmp_path, ids, needle):
    res, out = _submit(run, tmp_path, ids)
    assert res.exit_code == 2 and needle in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1 and not out.exists()


def test_never_writes_over_a_non_file(run, tmp_path):
    folder = tmp_path / "taken.zip"
    folder.mkdir()
    (folder / "keep").write_text("x")
    res, _ = _submit(run, tmp_path, "test02\n", out=folder)
    assert res.exit_code == 2 and "not a regular file" in res.output
    assert (folder / "keep").read_text() == "x"
    link = tmp_path / "link.zip"
    link.symlink_to(tmp_path / "elsewhere.zip")
    res, _ = _submit(run, tmp_path, "test02\n", out=link)
    assert res.exit_code == 2 and link.is_symlink() and not (tmp_path / "elsewhere.zip").exists()
    old = tmp_path / "old.zip"
    old.write_text("an old package")
    res, _ = _submit(run, tmp_path, "test02\n", out=old)
    assert res.exit_code == 0 and zipfile.is_zipfile(old)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_wrong_task_and_edition_refused(run, tmp_path):
    res, _ = _submit(run, tmp_path, "test02\n", "--edition", "abaw2")
    assert res.exit_code == 2 and "unknown edition 'abaw2'" in res.output
    lst = tmp_path / "l.txt"
    lst.write_text("test02\n")
    res = CliRunner().invoke(app, ["submit", "--run", str(run["run"]), "--test-list", str(lst), "--task", "va",
                                   "--out", str(tmp_path / "s.zip")])
    assert res.exit_code == 2 and "predicts expr, not va" in res.output
