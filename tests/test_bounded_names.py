"""Names are bounded and line-safe: a grid whose run name would not fit a file name is refused as a grid (exit 2),
ids with line breaks or control characters never reach a cache (import-h5) or the single-file predictions that
`score` reads back."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from affcli.cache.store import FeatureStore
from affcli.cli import app
from affcli.heads.data.abaw_io import read_predictions, write_predictions
from affcli.synthetic.features import make_synthetic

LONG_WEIGHTS = "ce(weights=[" + ", ".join(["1.25"] * 60) + "])"


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> tuple[Path, Path]:
    return make_synthetic(tmp_path_factory.mktemp("names"), n_videos=4, n_frames=30, dims=(8, 8))


@pytest.mark.parametrize("axes", [
    {"loss": [LONG_WEIGHTS]},
    {"temporal": ["tcn(" + ", ".join(f"{k}={v}" for k, v in [("levels", 2), ("channels", 16), ("kernel", 3),
                                                              ("dropout", 0.123456789), ("causal", False)]) + ")"],
     "loss": ["ce(weights=[" + ", ".join(["0.987654321"] * 16) + "])"]},
    {"lr": [0.001, 0.0123456789012345678], "weight_decay": [0.0123456789012345678],
     "warmup": [1.2345678901234567], "grad_clip": [0.5432109876543210], "stride": [3], "smooth": [1],
     "patience": [2], "d_model": [8], "dropout": [0.0123456789012345678], "frame_mask_p": [0.0123456789012345],
     "seed": [0, 1]},
])
def test_a_run_name_over_the_file_name_limit_refuses_the_grid(axes, synth, tmp_path):
    grid = tmp_path / "g.toml"
    lines = ["[base]", 'task = "expr"', "epochs = 1", "[axes]"]
    for k, vals in axes.items():
        lines.append(f"{k} = [{', '.join(repr(v) if isinstance(v, str) else str(v) for v in vals)}]")
    grid.write_text("\n".join(lines).replace("'", '"') + "\n")
    r = CliRunner().invoke(app, ["ablate", str(grid), "--cache", str(synth[0]), "--labels", str(synth[1]),
                                 "--dry-run"])
    assert r.exit_code == 2, r.output
    text = " ".join(r.output.split())
    assert text.startswith("grid refused") and "shorten the axis values" in text and "Traceback" not in r.output


BAD_IDS = ["a\nb", "a\rb", "tab\there", "nul\x00", "bell\x07", "line\u2028sep", "para\u2029sep", "next\x85line",
           "esc\x1b[31m"]


@pytest.mark.parametrize("vid", [v for v in BAD_IDS if "\x00" not in v], ids=repr)  # HDF5 names end at a NUL
def test_import_h5_refuses_ids_with_control_characters(vid, synth, tmp_path):
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f.create_dataset("fine", data=np.ones((5, 4), np.float32))
        f.create_dataset(vid, data=np.ones((5, 4), np.float32))
    cache = tmp_path / "c.zarr"
    r = CliRunner().invoke(app, ["cache", "import-h5", str(tmp_path / "f.h5"), str(cache), "--spec", "theirs:v1",
                                 "--modality", "visual"])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert "control character" in r.output and not cache.exists()


@pytest.mark.parametrize("vid", [*BAD_IDS, "a,b", " lead", "trail "], ids=repr)
def test_the_single_file_writer_refuses_ids_score_could_not_read_back(vid, tmp_path):
    with pytest.raises(ValueError, match="video id"):
        write_predictions(tmp_path, "expr", {"ok": np.zeros(3, np.int64), vid: np.zeros(3, np.int64)},
                          style="single-file")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("vid", ["video10_left", "ünïcödé", "with space", "a.b-c_d", "1-1"])
def test_ids_that_round_trip_are_written(vid, tmp_path):
    from affcli.common.ids import id_problem

    assert id_problem(vid) is None
    write_predictions(tmp_path, "expr", {vid: np.array([1, 2, 3])}, style="single-file")
    got = read_predictions(tmp_path, "expr")
    assert list(got) == [vid] and got[vid].tolist() == [1, 2, 3]


def test_the_store_refuses_control_characters_and_long_ids(tmp_path):
    from affcli.cache.errors import CacheError
    from affcli.cache.fingerprint import make_fingerprint

    st = FeatureStore(tmp_path / "c.zarr")
    st.ensure_feature_set("x:v1", make_fingerprint("x:v1", "visual", 4, "test"))
    for vid, problem in (("a\nb", "control character"), ("z" * 300, "characters long"), ("", "non-empty")):
        with pytest.raises(CacheError, match=problem):
            st.write_video("x:v1", vid, np.ones((3, 4), np.float32), np.ones(3, bool), np.arange(3.0), 30.0)
    assert st.videos("x:v1", complete=False) == []
