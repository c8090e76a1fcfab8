"""Every option is checked once, against its declared type and range (common.checks, read by Registry.check and the
config dataclasses): train-head, pretrain and the ablation grid (`ablate --dry-run`) give one verdict, each a
one-line refusal (exit 2) before any data is read; a window or model that cannot fit is refused before allocation."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pytest
import torch
from typer.testing import CliRunner

from affcli.cli import app
from affcli.common.registry import Registry
from affcli.heads.ablate import GridError, build_runs, grid_from_dict
from affcli.heads.config import ModelSpec
from affcli.heads.model.head import HeadModel
from affcli.synthetic.features import AUDIO, VISUAL, make_synthetic

torch.set_num_threads(1)

# model options every command takes: (flags, what the one-line error names)
MODEL_CASES = [
    (["--temporal", "tcn(levels=-1)"], "levels=-1 must be >= 1"),
    (["--temporal", "tcn(levels=0)"], "levels=0 must be >= 1"),
    (["--temporal", "tcn(levels=abc)"], "levels='abc' must be an integer"),
    (["--temporal", "tcn(levels=100000)"], "levels=100000 must be <= 16"),
    (["--temporal", "tcn(channels=-5)"], "channels=-5 must be >= 1"),
    (["--temporal", "tcn(dropout=2)"], "dropout=2 must be < 1"),
    (["--temporal", "mlp(layers=0)"], "layers=0 must be >= 1"),
    (["--temporal", "transformer(dim=10, heads=3)"], "not divisible by heads=3"),
    (["--temporal", "transformer(positions=spiral)"], "positions='spiral' must be one of"),
    (["--temporal", "gru(causal=maybe)"], "causal='maybe' must be true or false"),
    (["--temporal", "gru(bidirectional=true)", "--causal"], "bidirectional=True cannot be causal"),
    (["--temporal-options", "levels=-2"], "levels=-2 must be >= 1"),
    (["--d-model", "0"], "d_model=0 must be >= 1"),
    (["--head-hidden", "0"], "head_hidden"),
    (["--dropout", "1.5"], "dropout=1.5 must be < 1"),
    (["--dilation", "0"], "dilation=0 must be >= 1"),
    (["--device", "cpu; x"], "is not a device"),
    (["--device", "cuda:x"], "is not a device"),
    (["-f", VISUAL, "-f", VISUAL], "given twice"),
]
ACCEPTED = [["--temporal", "tcn(levels=2, channels=8)"], ["--temporal", "gru(hidden=8)", "--causal"],
            ["--temporal", "transformer(dim=8, heads=2, positions=learned)"], ["--device", "cpu"]]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> tuple[Path, Path]:
    return make_synthetic(tmp_path_factory.mktemp("opts"), n_videos=4, n_frames=40, dims=(8, 8))


def _one_line_refusal(r) -> str:
    assert r.exit_code == 2, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    return lines[0]


def _train_head(synth, tmp_path, flags):
    return CliRunner().invoke(app, ["train-head", "--cache", str(synth[0]), "--labels", str(synth[1]), "--epochs", "1",
                                    "--d-model", "8", "--window", "8", "--no-plots", "--out", str(tmp_path / "t"),
                                    *(["--device", "cpu"] if "--device" not in flags else []), *flags])


def _pretrain(synth, tmp_path, flags):
    return CliRunner().invoke(app, ["pretrain", "--cache", str(synth[0]), "--epochs", "1", "--d-model", "8",
                                    "--window", "8", "--out", str(tmp_path / "p"),
                                    *(["--device", "cpu"] if "--device" not in flags else []), *flags])


def _grid_keys(flags: list[str]) -> dict:
    """The run-config keys the flags set, as a grid's base table."""
    keys: dict = {"features": []}
    it = iter(flags)
    for f in it:
        if f in ("--causal",):
            keys["causal"] = True
            continue
        v = next(it)
        k = {"-f": "features"}.get(f, f[2:].replace("-", "_"))
        if k == "features":
            keys["features"].append(v)
        elif k.endswith("_options"):
            kk, vv = v.split("=")
            keys[k] = {kk: int(vv)}
        else:
            keys[k] = [int(v)] if k == "head_hidden" else (int(v) if v.lstrip("-").isdigit() else
                                                             float(v) if v.replace(".", "").isdigit() else v)
    return {k: v for k, v in keys.items() if v != []}


def _grid(synth, flags):
    base = {"task": "expr", "epochs": 1, "d_model": 8, "window": 8, **_grid_keys(flags)}
    return build_runs(grid_from_dict({"base": base, "axes": {"seed": [0]}}), *synth)


@pytest.mark.parametrize("flags,problem", MODEL_CASES, ids=[" ".join(c[0]) for c in MODEL_CASES])
def test_train_head_pretrain_and_grid_refuse_alike(flags, problem, synth, tmp_path):
    for r in (_train_head(synth, tmp_path, flags), _pretrain(synth, tmp_path, flags)):
        assert problem in _one_line_refusal(r)
    with pytest.raises(GridError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        _grid(synth, flags)
    assert not (tmp_path / "t").exists() and not (tmp_path / "p").exists()


@pytest.mark.parametrize("flags", ACCEPTED, ids=[" ".join(c) for c in ACCEPTED])
def test_good_options_pass_every_check(flags, synth, tmp_path):
    assert len(_grid(synth, flags)) == 1
    spec = ModelSpec.from_dict({"d_model": 8, **{k: v for k, v in _grid_keys(flags).items()
                                                 if k in ModelSpec.__dataclass_fields__}})
    HeadModel(spec, "expr", {"visual": 8})


@pytest.mark.parametrize("flags,problem", [
    (["--window", "0"], "window=0 must be >= 1"), (["--stride", "0"], "stride=0 must be >= 1"),
    (["--clusters", "0"], "clusters=0 must be >= 1"), (["--aug-mask", "1.5"], "aug_mask=1.5 must be <= 1"),
    (["--method", "simclr(temperature=0)"], "temperature=0 must be > 0"),
    (["--clusters", "100000", "--positives", "kmeans"], "exceeds the"),
])
def test_pretrain_values_are_not_replaced_or_clamped(flags, problem, synth, tmp_path):
    assert problem in _one_line_refusal(_pretrain(synth, tmp_path, flags))


@pytest.mark.parametrize("flags,problem", [
    (["--window", "0"], "window=0 must be >= 1"), (["--lr", "0"], "lr=0.0 must be > 0"),
    (["--eval-stride", "0"], "eval_stride=0 must be >= 1"), (["--patience", "0"], "patience=0 must be >= 1"),
    (["--smooth", "-1"], "smooth=-1 must be >= 0"), (["--loss", "ce(label_smoothing=1)"], "label_smoothing=1"),
    (["--loss", "distill(reg=l1)"], "reg='l1' must be one of"), (["--loss", "focal(gamma=-1)"], "gamma=-1"),
])
def test_run_config_values_are_checked(flags, problem, synth, tmp_path):
    assert problem in _one_line_refusal(_train_head(synth, tmp_path, flags))


@pytest.mark.parametrize("flags", [["--window", "1000000000"], ["--temporal", "tcn(channels=40000)"],
                                   ["--temporal", "transformer(dim=65536, heads=1)"]])
def test_windows_batches_and_models_that_cannot_fit_are_refused_before_allocation(flags, synth, tmp_path):
    line = _one_line_refusal(_train_head(synth, tmp_path, flags))
    assert "needs at least" in line and "available" in line
    assert not (tmp_path / "t").exists()  # refused before the run folder
    line = _one_line_refusal(_pretrain(synth, tmp_path, flags))
    assert "needs at least" in line


def test_a_registered_part_declares_its_ranges_and_rules():
    from affcli.common.checks import Range
    from affcli.common.registry import OptionValueError

    reg: Registry = Registry("widget", supplied=("d_in",))

    def widget(d_in: int, a: int = 1, b: float = 5.0, tag: str | None = None):
        return d_in

    widget.__annotations__.update(a=Annotated[int, Range(0, 10)])  # Range is imported here, not in the module
    reg.register("w", check=lambda o: "a must not exceed b" if o["a"] > o["b"] else None)(widget)

    reg.check("w", {"a": 3, "b": 4, "tag": None})
    for opts, msg in [({"a": 11}, "a=11 must be <= 10"), ({"a": -1}, "a=-1 must be >= 0"), ({"a": "x"}, "integer"),
                      ({"b": "x"}, "b='x' must be a number"), ({"b": float("nan")}, "finite"),
                      ({"tag": 3}, "must be a string"), ({"a": 6}, "a must not exceed b"), ({"a": True}, "integer")]:
        with pytest.raises(OptionValueError, match=msg):
            reg.build("w", 1, **opts)


@pytest.mark.parametrize("text,ok", [("cpu", True), ("cuda", True), ("cuda:1", True), ("auto", True), ("mps", True),
                                     ("cpu; rm", False), ("", False), ("cuda:", False), (" cpu", False),
                                     ("gpu", False), ("CPU", False)])
def test_one_device_check(text, ok):
    from affcli.common.checks import Device, check_device, value_problem

    assert (value_problem(text, Annotated[str, Device()]) is None) == ok
    if ok:
        assert check_device(text) == text
    else:
        with pytest.raises(ValueError, match="is not a device"):
            check_device(text)
