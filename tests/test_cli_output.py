"""What the commands print and default to: readable headers, one --quiet, honest help texts, the device default,
and a warm-up that a short run clamps instead of refusing."""

from __future__ import annotations

import argparse
import re
from types import SimpleNamespace

import pytest

from conftest import REPO_ROOT
from mlkasr import threads
from mlkasr.cli import build_parser, default_device, main

SET5 = REPO_ROOT / "datasets" / "samples" / "Set5"


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action | None:
    return next((a for a in parser._actions if flag in a.option_strings), None)


# -- output bugs -----------------------------------------------------------------------------------------------


def test_info_degraded_rows_keep_label_and_value_apart(capsys):
    assert main(["info", "man-tiny_x4_real"]) == 0
    lines = capsys.readouterr().out.splitlines()
    degraded = [line for line in lines if "--degrade" in line]
    assert degraded, lines
    for line in degraded:
        assert re.fullmatch(r"\S+ --degrade \S+\s{2,}\d+\.\d\d dB / 0\.\d{4}", line), line
    # every value starts in one column
    starts = {len(re.match(r"(.+?\S)\s{2,}", line).group(0)) for line in lines}
    assert len(starts) == 1, lines


def test_export_header_says_threads_in_words(monkeypatch, capsys, tmp_path):
    import mlkasr.deployment as deployment

    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")

    def fake_export(model, path, **kwargs):  # the header is printed before the slow export
        kwargs["log"]("exporting")
        return SimpleNamespace(path=path, bytes=2**20, seconds=1.0, parity=[SimpleNamespace(max_abs_diff=1e-7)])

    monkeypatch.setattr(deployment, "export_onnx", fake_export)
    assert main(["export", "man-tiny_x4", str(tmp_path / "m.onnx"), "--threads", "1"]) == 0
    err = capsys.readouterr().err
    header = err.splitlines()[0]
    assert "ThreadChoice" not in err and "automatic=" not in err
    assert header.endswith("traced and checked on the cpu in fp32, 1 intra-op thread (--threads))"), header
    assert "exporting" in err
    assert main(["export", "man-tiny_x4", str(tmp_path / "q.onnx"), "--threads", "1", "--quiet"]) == 0
    assert "exporting" not in capsys.readouterr().err


def test_thread_note_says_when_the_minimum_applies(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: [0, 1])
    monkeypatch.setattr(threads, "busy_cores", lambda cores: 2)
    choice = threads.choose_threads()
    assert choice.threads == 1
    assert "none left: the minimum of 1" in choice.describe()
    monkeypatch.setattr(threads, "busy_cores", lambda cores: 1)
    choice = threads.choose_threads()
    assert choice.threads == 1 and "minimum" not in choice.describe()  # 2 - 1 = 1: the arithmetic holds


# -- one device default ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["eval", "upscale", "lam", "bench", "train"])
def test_inference_commands_default_to_cuda_when_available(command):
    device = _option(_subparsers()[command], "--device")
    assert device is not None and device.default is None
    assert "default: cuda when available" in device.help


def test_default_device(monkeypatch):
    import torch

    assert default_device("cpu") == "cpu" and default_device("cuda:1") == "cuda:1"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_device(None) == "cuda"
    assert default_device(None, "torch") == "cuda"
    assert default_device(None, "openvino") == "cpu"  # the ONNX runtimes run on the CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_device(None) == "cpu"


def test_eval_and_upscale_name_their_device(capsys, tmp_path):
    assert main(["eval", "--model", "man-tiny_x4", "--data", str(SET5), "--threads", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("man-tiny from man-tiny_x4 (fp32, cpu)")
    image = SET5 / "LR_bicubic" / "X4" / "babyx4.png"
    assert main(["upscale", str(image), str(tmp_path / "b.png"), "--threads", "1", "--device", "cpu"]) == 0
    assert capsys.readouterr().err.startswith("man-tiny x4 on cpu (fp32)")


# -- --quiet and help texts ------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["eval", "upscale", "train", "export", "prepare"])
def test_quiet_is_offered_where_progress_is_printed(command):
    sub = _subparsers()[command]
    if command == "prepare":  # on each step
        sub = next(a for a in sub._actions if isinstance(a, argparse._SubParsersAction)).choices["div2k"]
    assert _option(sub, "--quiet") is not None


def test_upscale_quiet_lists_no_files(capsys, tmp_path):
    lr = SET5 / "LR_bicubic" / "X4"
    assert main(["upscale", str(lr), str(tmp_path / "loud"), "--threads", "1"]) == 0
    loud = capsys.readouterr().out
    assert "written: " in loud
    assert main(["upscale", str(lr), str(tmp_path / "quiet"), "--threads", "1", "--quiet"]) == 0
    quiet = capsys.readouterr().out
    assert quiet.startswith("written 5, already there 0, skipped 0, failed 0")
    assert "written: " not in quiet and len(quiet.splitlines()) == 1
    assert len(list((tmp_path / "quiet").iterdir())) == 5


def test_threads_help_names_loader_workers_only_where_there_are_some():
    for name, sub in _subparsers().items():
        option = _option(sub, "--threads")
        if option is None:
            continue
        assert ("loader" in option.help) == (name == "train"), (name, option.help)


def test_no_help_text_names_the_development_folder():
    for name, sub in _subparsers().items():
        for action in sub._actions:
            text = action.help or ""
            assert "../shared" not in text and "shared/data" not in text, (name, action.option_strings, text)


# -- warm-up longer than a short run ---------------------------------------------------------------------------


def test_warmup_longer_than_the_run_is_clamped():
    from mlkasr.config import ScheduleConfig, load_config
    from mlkasr.config.loader import ConfigError
    from mlkasr.training.schedule import effective_warmup, learning_rate

    config = load_config(REPO_ROOT / "configs" / "quickstart.yaml", ["train.iterations=20"])
    assert config.train.schedule.warmup_iterations == 50  # the config keeps what was written
    s = config.train.schedule
    assert effective_warmup(s, 20) == 19
    lr = [learning_rate(s, 1e-3, 20, i) for i in range(1, 21)]
    assert lr[0] == pytest.approx(1e-3 / 19) and lr[18] == pytest.approx(1e-3)  # the peak is reached
    assert lr[19] == pytest.approx(s.min_lr)
    # a warm-up shorter than the run is untouched
    short = ScheduleConfig(kind="cosine", warmup_iterations=10)
    assert effective_warmup(short, 110) == 10 and learning_rate(short, 1e-3, 110, 5) == pytest.approx(5e-4)
    with pytest.raises(ConfigError, match="warmup_iterations: must be 0 or more"):
        load_config(REPO_ROOT / "configs" / "quickstart.yaml", ["train.schedule.warmup_iterations=-1"])


def test_short_quickstart_run_notes_the_clamp(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)  # the config's relative paths
    run_dir = tmp_path / "run"
    code = main(["train", "configs/quickstart.yaml", "--run-dir", str(run_dir), "--device", "cpu", "--threads", "1",
                 "--quiet", "--set", "train.iterations=2", "--set", "train.batch_size=2",
                 "--set", "data.train.patch_size=16", "--set", "data.train.num_workers=0",
                 "--set", "data.val_max_images=1", "--set", "logging.tensorboard=false"])
    assert code == 0
    out = capsys.readouterr().out
    assert "note: train.schedule.warmup_iterations 50 is not shorter than train.iterations 2: warming up over 1 " \
           "iterations instead" in out
    assert (run_dir / "model.safetensors").is_file()
