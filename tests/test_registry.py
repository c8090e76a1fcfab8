"""Options come from signatures and are checked in one place; a part is one class plus one registration."""
from __future__ import annotations

import inspect
import re

import numpy as np
import pytest
import torch
from torch import nn

from affcli.common.registry import OptionError, Registry, UnknownNameError
from affcli.heads.model.checkpoint import load_model
from affcli.heads.cli_help import fusion_help, loss_help, temporal_help
from affcli.heads.fusion import FUSION
from affcli.heads.losses import LOSSES, build_loss, label_mask, masked_mean
from affcli.heads.temporal import TEMPORAL, build_temporal
from affcli.heads.train.trainer import RunConfig, train_run
from affcli.synthetic import features as synth

torch.set_num_threads(1)


def test_unknown_option_error_names_the_part_the_option_and_the_valid_ones():
    with pytest.raises(OptionError) as e:
        build_temporal("tcn", 4, level=2)
    assert str(e.value) == ("temporal head 'tcn' takes no option 'level'; "
                            "valid options: levels, channels, kernel, dropout, causal")
    assert e.value.valid == ["levels", "channels", "kernel", "dropout", "causal"] and "\n" not in str(e.value)
    with pytest.raises(ValueError, match=r"fusion 'xattn' takes no option 'dim'; valid options: causal, heads, "):
        FUSION.check("xattn", {"dim": 3})
    with pytest.raises(ValueError, match=r"loss 'focal' takes no option 'gama'; valid options: gamma, alpha, target$"):
        build_loss("ccc+focal(gama=2)", None)
    with pytest.raises(UnknownNameError, match="valid temporal head names: gru, mlp, tcn, transformer"):
        TEMPORAL.check("lstm", {})


def test_options_and_defaults_come_from_the_signature():
    for reg in (TEMPORAL, FUSION, LOSSES):
        for name in reg:
            params = list(inspect.signature(reg.get(name)).parameters.values())[len(reg.supplied):]
            assert list(reg.options(name)) == [p.name for p in params], name
    assert TEMPORAL.defaults("tcn") == {"levels": 3, "channels": 128, "kernel": 3, "dropout": 0.1, "causal": False}
    assert LOSSES.defaults("soft-prompt")["sigma"] == 0.45 and FUSION.defaults("concat")["dim"] == 128
    tcn = build_temporal("tcn", 4)
    assert len(tcn.blocks) == TEMPORAL.defaults("tcn")["levels"] and tcn.out_dim == 128
    assert "tcn(levels=3, channels=128, kernel=3, dropout=0.1, causal=False)" in temporal_help()
    assert "xattn-gated(causal=False, heads=4, dropout=0.1, hidden=128, positions=True)" in fusion_help()
    assert "soft-prompt(prompts='va9', sigma=0.45, scale=10.0, templates=3, target=None)" in loss_help()


def test_train_head_help_lists_parts_with_their_options():
    from typer.testing import CliRunner

    from affcli.cli import app

    r = CliRunner().invoke(app, ["train-head", "--help"], env={"COLUMNS": "200"})
    flat = re.sub(r"[\s│]+", " ", r.output)
    assert r.exit_code == 0, r.output
    for part in ("tcn(levels=3, channels=128, kernel=3, dropout=0.1, causal=False): dilated",
                 "xattn-gated(causal=False, heads=4, dropout=0.1, hidden=128, positions=True): image queries",
                 "ce(weights=None, target=None, label_smoothing=0.0): cross-entropy"):
        assert part in flat, part


def test_backbone_options_use_the_same_check():
    from affcli.pipeline.backbones import BACKBONES, build_backbone

    assert BACKBONES.supplied == ("spec", "device", "seed") and list(BACKBONES.options("fer")) == ["weights"]
    with pytest.raises(OptionError, match="backbone 'clip' takes no option 'weights'; valid options: \\(none\\)"):
        build_backbone("clip:tiny", weights="w.h5")


def test_registration_rules_and_required_options():
    reg = Registry("widget", supplied=("d_in",), required=("causal",))

    @reg.register("w")
    def widget(d_in: int, size: int, causal: bool = False, *, tag: str = "x"):
        return d_in, size, causal, tag

    assert reg.defaults("w") == {"causal": False, "tag": "x"} and reg.options("w")["size"].annotation == "int"
    assert reg.build("w", 3, size=2, tag="y") == (3, 2, False, "y")
    with pytest.raises(OptionError, match="widget 'w' needs option 'size'; valid options: size, causal, tag"):
        reg.build("w", 3)
    with pytest.raises(ValueError, match="options come from the signature"):
        reg.register("v", options=("size",))
    for bad, why in ((lambda causal=False: 0, r"must start with \(d_in\)"),
                     (lambda d_in, causal=False, **kw: 0, "named keyword parameters, not \\*kw"),
                     (lambda d_in, size=1: 0, "every widget takes option 'causal'")):
        with pytest.raises(ValueError, match=why):
            reg.register("bad")(bad)
    assert "bad" not in reg
    reg.unregister("w")
    assert reg.names() == []
    with pytest.raises(UnknownNameError):
        reg.unregister("w")


def test_a_new_temporal_head_fusion_and_loss_are_one_class_and_one_registration_each(tmp_path):
    @TEMPORAL.register("test-delta", help="frame and its change from the previous frame")
    class Delta(nn.Module):
        def __init__(self, d_in: int, hidden: int = 16, causal: bool = True):
            super().__init__()
            self.lin, self.out_dim, self.causal = nn.Linear(2 * d_in, hidden), hidden, True

        def forward(self, x, valid=None):
            return torch.relu(self.lin(torch.cat([x, x - torch.cat([x[:, :1], x[:, :-1]], 1)], -1)))

    @FUSION.register("test-sum", help="project each modality, then add")
    class SumFusion(nn.Module):
        def __init__(self, dims: dict[str, int], causal: bool = False, dim: int = 8):
            super().__init__()
            self.proj = nn.ModuleDict({m: nn.Linear(d, dim) for m, d in dims.items()})
            self.out_dim, self.causal = dim, True

        def forward(self, h, valid):
            return torch.stack([self.proj[m](h[m]) for m in self.proj]).sum(0)

    @LOSSES.register("test-l1", help="masked mean absolute error")
    class L1(nn.Module):
        def __init__(self, ctx, target: str = "va", scale: float = 1.0):
            super().__init__()
            self.key, self.scale = target, scale

        def forward(self, out, y):
            m = label_mask(y, self.key, y[self.key])
            return self.scale * masked_mean((out[self.key].float() - y[self.key].float()).abs(), m)

    try:
        table = synth.random_table(3, [30, 17, 25], {synth.VISUAL: 6, synth.AUDIO: 5}, seed=0)
        lab, splits = synth.random_labels(table.n_frames, seed=0), synth.splits_of(table, 1)
        base = dict(task="va", window=8, stride=4, batch_size=16, d_model=8, head_hidden=[8], epochs=2, plots=False,
                    save_predictions=False, causal=True, fusion="test-sum(dim=6)", loss="ccc+0.5*test-l1(scale=2.0)")
        with pytest.raises(OptionError, match=r"'test-delta' takes no option 'hiden'; valid options: hidden, causal$"):
            train_run(RunConfig.from_dict({**base, "temporal": "test-delta(hiden=3)", "out": str(tmp_path / "bad")}))  # before any data
        cfg = RunConfig.from_dict({**base, "temporal": "test-delta(hidden=7)", "out": str(tmp_path / "run")})
        m = train_run(cfg, table, lab, splits=splits)
        assert np.isfinite(m["main"]) and m["epochs"] == 2 and m["causal"] is True
        assert set(m["history"][0]["terms"]) == {"ccc", "test-l1"} and m["history"][0]["terms"]["test-l1"] > 0
        model = load_model(tmp_path / "run")
        assert isinstance(model.temporal["visual"], Delta) and model.temporal["audio"].out_dim == 7
        assert isinstance(model.fusion, SumFusion) and model.fusion.out_dim == 6
        assert "test-delta(hidden=16, causal=True): frame and its change" in temporal_help()
    finally:
        TEMPORAL.unregister("test-delta")
        FUSION.unregister("test-sum")
        LOSSES.unregister("test-l1")
    assert "test-delta" not in TEMPORAL and "test-sum" not in FUSION and "test-l1" not in LOSSES
