"""Start-up and threads: every --help answers without the heavy libraries (parts still listed, read from source),
and every command runs within one thread budget (--threads, OMP_NUM_THREADS, affinity/cgroup)."""
from __future__ import annotations

import importlib
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from affcli.common import registry_help
from affcli.heads import cli_help
from affcli.pipeline import cli_help as pipeline_help

HEAVY = {"torch", "torchvision", "transformers", "open_clip", "zarr", "polars", "sklearn", "scipy", "dask", "av",
         "cv2", "h5py"}


def _python(code: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "AFFCLI_THREADS")}
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout,
                       env={**full, "COLUMNS": "200", **(env or {})})
    assert r.returncode == 0, r.stderr
    return r


def test_every_help_leaves_the_heavy_libraries_unimported():
    r = _python(f"""
        import sys
        import typer.main
        from typer.testing import CliRunner
        from affcli.cli import app

        def walk(cmd, path):
            yield path
            for name, sub in getattr(cmd, "commands", {{}}).items():
                yield from walk(sub, path + [name])

        paths = list(walk(typer.main.get_command(app), []))
        runner = CliRunner()
        for p in paths:
            res = runner.invoke(app, [*p, "--help"])
            assert res.exit_code == 0, (p, res.output)
            assert "Usage:" in res.output, p
        print(len(paths))
        print(sorted({{m.split(".")[0] for m in sys.modules}} & set({sorted(HEAVY)!r})))
    """)
    n, loaded = r.stdout.strip().splitlines()[-2:]
    assert int(n) >= 25, "every command and group was asked for --help"
    assert loaded == "[]", f"--help imported {loaded}"


def test_train_head_help_lists_parts_and_options_without_torch():
    r = _python("""
        import re, sys
        from typer.testing import CliRunner
        from affcli.cli import app

        out = CliRunner().invoke(app, ["train-head", "--help"], terminal_width=200).output
        print(re.sub(r"[\\s│]+", " ", out))
        print("torch" in sys.modules)
    """)
    *_, flat, torch_loaded = r.stdout.strip().splitlines()
    assert torch_loaded == "False"
    for part in ("tcn(levels=3, channels=128, kernel=3, dropout=0.1, causal=False): dilated",
                 "xattn-gated(causal=False, heads=4, dropout=0.1, hidden=128, positions=True): image queries",
                 "ce(weights=None, target=None, label_smoothing=0.0): cross-entropy",
                 "soft-prompt(prompts='va9', sigma=0.45, scale=10.0, templates=3, target=None)",
                 "expr: 8 expression logits"):
        assert part in flat, part


@pytest.mark.parametrize("source", [cli_help.TEMPORAL_SOURCE, cli_help.FUSION_SOURCE, cli_help.LOSS_SOURCE,
                                    cli_help.TASK_SOURCE])
def test_source_listing_equals_the_live_registry(source):
    module, registry = source
    with_options = source != cli_help.TASK_SOURCE
    live = registry_help.names_help(getattr(importlib.import_module(module), registry), with_options)
    assert registry_help.source_listing(module, registry, with_options) == live
    assert live.count(";") >= 3


@pytest.mark.parametrize("source, fields", [(pipeline_help.BACKBONE_SOURCE, pipeline_help.BACKBONE_FIELDS),
                                            (pipeline_help.DETECTOR_SOURCE, pipeline_help.DETECTOR_FIELDS)])
@pytest.mark.parametrize("with_options", [True, False])
def test_package_source_listing_equals_the_live_registry(source, fields, with_options):
    """Registrations spread over a package's modules (the registry in one, a part per module) and their declared
    metadata read from source equal the live listing."""
    module, registry = source
    live = registry_help.names_help(getattr(importlib.import_module(module), registry), with_options, fields)
    assert registry_help.source_listing(module, registry, with_options, fields) == live
    assert live.count(";") >= 2 and " (" in live


def test_declared_backbone_modality_is_the_kinds_own():
    from affcli.pipeline.backbones import BACKBONES

    for kind in BACKBONES.names():
        assert BACKBONES.meta(kind)["modality"] == BACKBONES.get(kind).modality, kind
        assert BACKBONES.meta(kind)["example"].startswith(kind + ":"), kind


def test_extract_help_lists_backbones_and_detectors_without_torch():
    r = _python("""
        import re, sys
        from typer.testing import CliRunner
        from affcli.cli import app

        out = CliRunner().invoke(app, ["extract", "--help"], terminal_width=200).output
        print(re.sub(r"[\\s│]+", " ", out))
        print(sorted(m for m in ("torch", "cv2", "affcli.pipeline.backbones", "affcli.pipeline.detectors")
                     if m in sys.modules))
    """)
    *_, flat, loaded = r.stdout.strip().splitlines()
    assert loaded == "[]"
    for part in ("clip (visual, e.g. clip:ViT-B-16/openai)",
                 "wav2vec2(layer='last') (audio, e.g. wav2vec2:facebook/wav2vec2-base)",
                 "wavlm(layer='last') (audio, e.g. wavlm:microsoft/wavlm-large)",
                 "hubert(layer='last') (audio, e.g. hubert:facebook/hubert-large-ll60k)",
                 "whisper(layer='last') (audio, e.g. whisper:openai/whisper-small)",
                 "dinov2(pool='cls') (visual, e.g. dinov2:facebook/dinov2-large)",
                 "timm(logits=False) (visual", "opensmile(summary='meanstd', window=1.0, hop=0.1) (audio, "
                 "e.g. opensmile:eGeMAPSv02)", "vad (audio, e.g. vad:silero)", "fer(weights=None) (visual",
                 "mtcnn(min_face_size=20.0, thresholds=(0.6, 0.7, 0.7), factor=0.709, detect_width=640) "
                 "(landmarks): MTCNN",
                 "haar(detect_width=320, min_face=0.08, scale_factor=1.1, min_neighbors=5) (no landmarks)",
                 "none (no landmarks): no detection", "--face-option"):
        assert part in flat, part
    assert "--no-face" not in flat


def test_unreadable_source_falls_back_to_the_live_registry(tmp_path, monkeypatch):
    pkg = tmp_path / "h2_parts_probe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "parts.py").write_text(textwrap.dedent("""
        from affcli.common.registry import Registry
        REG = Registry("part", supplied=("d_in",))

        class Base:
            def __init__(self, d_in, width=4):
                self.width = width

        @REG.register("inherited", help="no __init__ of its own")
        class Inherited(Base):
            pass

        @REG.register("plain", help="a function")
        def plain(d_in, depth=2, *, name="x"):
            return depth
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(registry_help.SourceUnreadable, match="Inherited has no __init__"):
        registry_help.source_listing("h2_parts_probe.parts", "REG")
    assert "h2_parts_probe.parts" not in sys.modules
    listed = registry_help.listing("h2_parts_probe.parts", "REG")
    assert listed == "inherited(width=4): no __init__ of its own; plain(depth=2, name='x'): a function"
    assert "h2_parts_probe.parts" in sys.modules


def test_help_costs_under_a_second_of_cpu():
    exe = Path(sys.executable).with_name("affcli")
    for args in (["--help"], ["train-head", "--help"], ["cache", "faces", "--help"]):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        r = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=60)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        assert r.returncode == 0 and "Usage:" in r.stdout
        assert cpu < 1.0, f"affcli {' '.join(args)} took {cpu:.2f} s of CPU"


# ---- threads ------------------------------------------------------------------------------------------------------

PROBE = """
    import os, sys
    from affcli.cli import app

    @app.command("probe-threads")
    def probe() -> None:
        assert "torch" not in sys.modules
        import torch
        from affcli.common.threads import configure_threads, thread_budget
        print(torch.get_num_threads(), os.environ["OMP_NUM_THREADS"], thread_budget(), configure_threads())

    app(sys.argv[1:], prog_name="affcli")
"""


def _probe(*args: str, env: dict[str, str] | None = None) -> list[int]:
    full = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "AFFCLI_THREADS")}
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(PROBE), *args, "probe-threads"], capture_output=True,
                       text=True, timeout=300, env={**full, **(env or {})})
    assert r.returncode == 0, r.stderr
    return [int(x) for x in r.stdout.split()]


def test_threads_follow_omp_num_threads():
    assert _probe(env={"OMP_NUM_THREADS": "1"}) == [1, 1, 1, 1]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs (torch caps its threads at the CPUs)")
def test_threads_option_overrides_the_environment():
    assert _probe("--threads", "2", env={"OMP_NUM_THREADS": "1"}) == [2, 2, 2, 2]


def test_default_threads_are_the_usable_cpus():
    torch_n, omp, budget, configured = _probe()
    assert torch_n == omp == budget == configured
    assert 1 <= torch_n <= len(os.sched_getaffinity(0))


def test_thread_scope_restores_the_environment_in_process(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from affcli.cli import app

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("AFFCLI_THREADS", raising=False)
    r = CliRunner().invoke(app, ["--threads", "2", "cache", "ls", str(tmp_path / "none.zarr")])
    assert r.exit_code == 2 and "no feature cache here" in r.output
    assert os.environ["OMP_NUM_THREADS"] == "1" and "AFFCLI_THREADS" not in os.environ


def test_ablate_workers_share_the_budget(monkeypatch):
    from affcli.heads.ablate import run

    monkeypatch.setenv("AFFCLI_THREADS", "6")
    assert run.cpu_count() == 6 and run.threads_per_worker(2) == 3 and run.threads_per_worker(12) == 1
