"""One resolution of a run's parts (heads.parts): train-head, the model and ablate's grid check give the same verdict
on the same names, options and modalities; `--horizon` implies `--label-position last`."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from affcli.cli import app
from affcli.heads.ablate import GridError, build_runs, grid_from_dict
from affcli.heads.config import ModelSpec
from affcli.heads.model.head import HeadModel
from affcli.synthetic.features import AUDIO, VISUAL, make_synthetic

torch.set_num_threads(1)

# (run-config keys, features) -> refused? Every case is judged by the CLI, the model and the grid check alike.
CASES = [
    ({"temporal": "tcn(levels=2)"}, [VISUAL], False),
    ({"temporal": "tcn:x"}, [VISUAL], True),
    ({"temporal": "tcn(levls=2)"}, [VISUAL], True),
    ({"temporal": "lstm"}, [VISUAL], True),
    ({"fusion": "none:visual"}, [VISUAL, AUDIO], False),
    ({"fusion": "none:vision"}, [VISUAL], True),
    ({"fusion": "none:audio"}, [VISUAL], True),
    ({"fusion": "none"}, [VISUAL, AUDIO], True),
    ({"fusion": "concat"}, [VISUAL], True),
    ({"fusion": "xattn-gated(heads=2)"}, [VISUAL, AUDIO], False),
    ({"fusion": "xattn(hidden=3)"}, [VISUAL, AUDIO], True),
    ({"fusion": "xattn"}, [AUDIO], True),
    ({"fusion": "auto"}, [VISUAL], False),
]
LOSS_CASES = [("ce+0.1*text-contrastive", False), ("ce+0.1*nope", True), ("focal(gama=2)", True), ("auto", False)]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> tuple[Path, Path]:
    return make_synthetic(tmp_path_factory.mktemp("parts"), n_videos=4, n_frames=40, dims=(8, 8))


def _cli_refuses(tmp_path: Path, synth: tuple[Path, Path], keys: dict, features: list[str]) -> bool:
    args = ["train-head", "--cache", str(synth[0]), "--labels", str(synth[1]), "--epochs", "1", "--d-model", "8",
            "--window", "8", "--device", "cpu", "--no-plots", "--out", str(tmp_path / "run")]
    for f in features:
        args += ["-f", f]
    for k, v in keys.items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            args.append(flag if v else f"--no-{k.replace('_', '-')}")
        elif isinstance(v, dict):
            for kk, vv in v.items():
                args += [flag, f"{kk}={str(vv).lower()}"]
        else:
            args += [flag, str(v)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code in (0, 2), r.output
    if r.exit_code == 2:
        assert len(r.output.strip().splitlines()) == 1, r.output
    return r.exit_code == 2


def _model_refuses(keys: dict, features: list[str]) -> bool:
    dims = {"visual": 8} if VISUAL in features else {}
    dims |= {"audio": 8} if AUDIO in features else {}
    try:
        HeadModel(ModelSpec.from_dict({"d_model": 8, **keys}), "expr", dims)
    except (ValueError, KeyError):
        return True
    return False


def _grid_refuses(synth: tuple[Path, Path], base: dict, features: list[str]) -> bool:
    axes = {k: [v] for k, v in base.items() if k in ("temporal", "fusion", "loss")}
    rest = {k: v for k, v in base.items() if k not in axes}
    grid = grid_from_dict({"base": {"task": "expr", "features": features, "epochs": 1, **rest},
                           "axes": {**axes, "seed": [0]}})
    try:
        build_runs(grid, *synth)
    except GridError:
        return True
    return False


@pytest.mark.parametrize("keys,features,refused", CASES, ids=[str(c[0]) for c in CASES])
def test_train_head_model_and_grid_agree(keys, features, refused, synth, tmp_path):
    verdicts = {"train-head": _cli_refuses(tmp_path, synth, keys, features),
                "model": _model_refuses(keys, features), "grid": _grid_refuses(synth, keys, features)}
    assert verdicts == dict.fromkeys(verdicts, refused), verdicts


@pytest.mark.parametrize("loss,refused", LOSS_CASES)
def test_losses_get_one_verdict(loss, refused, synth, tmp_path):
    verdicts = {"train-head": _cli_refuses(tmp_path, synth, {"loss": loss}, [VISUAL]),
                "grid": _grid_refuses(synth, {"loss": loss}, [VISUAL])}
    assert verdicts == dict.fromkeys(verdicts, refused), verdicts


def test_grid_names_the_axis_value_that_failed(synth):
    with pytest.raises(GridError) as e:
        build_runs(grid_from_dict({"base": {"task": "expr", "features": [VISUAL]},
                                   "axes": {"temporal": ["mlp", "tcn:x"], "seed": [0]}}), *synth)
    assert e.value.key.startswith("axes.temporal[1]") and "takes no ':x' argument" in str(e.value)
    with pytest.raises(GridError) as e:
        build_runs(grid_from_dict({"base": {"task": "expr", "features": [VISUAL]},
                                   "axes": {"fusion": ["concat"], "seed": [0]}}), *synth)
    assert e.value.key.startswith("run ") and "missing audio" in str(e.value), str(e.value)


def test_horizon_implies_last_from_the_cli(synth, tmp_path):
    r = CliRunner().invoke(app, ["train-head", "--cache", str(synth[0]), "--labels", str(synth[1]), "-f", VISUAL,
                                 "--causal", "--horizon", "4", "--temporal", "gru(hidden=8)", "--epochs", "1",
                                 "--d-model", "8", "--window", "8", "--device", "cpu", "--no-plots",
                                 "--out", str(tmp_path / "h")])
    assert r.exit_code == 0, r.output
    import json

    saved = json.loads((tmp_path / "h" / "config.json").read_text())["model"]
    assert saved["label_position"] == "last" and saved["horizon"] == 4
    r = CliRunner().invoke(app, ["train-head", "--cache", str(synth[0]), "--labels", str(synth[1]), "-f", VISUAL,
                                 "--horizon", "4", "--label-position", "frame", "--out", str(tmp_path / "h2")])
    assert r.exit_code == 2 and "label_position" in r.output
