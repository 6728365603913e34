"""Real-world training losses: the weighted train.losses list, the VGG19 perceptual loss, GAN training with the U-Net
discriminator (its update, checkpoint state, exact resume, the NaN guard over both networks, DDP), and their errors.

VGG19 weights are random tensors saved in torchvision's key layout (the real file is 548 MB and never downloaded);
everything trains man-tiny x2 on tiny generated images (LR patch 12 or 16, batch 2, 2-4 iterations).
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mlkasr.config import ConfigError, config_from_dict, load_config
from mlkasr.errors import MlkasrError
from mlkasr.models.discriminator import UNetDiscriminatorSN
from mlkasr.models.vgg import IMAGENET_MEAN, IMAGENET_STD, VGG19_CONVS, VggWeightsError, load_vgg19_features
from mlkasr.training import load_checkpoint, train
from mlkasr.training.losses import L1Loss, LossSet, build_loss_set, loss_terms

from conftest import REPO_ROOT

# torchvision's vgg19().features: (index, out channels, in channels) of each conv; pools at 4, 9, 18, 27, 36.
TORCHVISION_VGG19_CONVS = [(0, 64, 3), (2, 64, 64), (5, 128, 64), (7, 128, 128), (10, 256, 128), (12, 256, 256),
                           (14, 256, 256), (16, 256, 256), (19, 512, 256), (21, 512, 512), (23, 512, 512),
                           (25, 512, 512), (28, 512, 512), (30, 512, 512), (32, 512, 512), (34, 512, 512)]


def _vgg19_file(path: Path, convs=TORCHVISION_VGG19_CONVS, seed: int = 0) -> Path:
    """Random weights in torchvision's layout, with a classifier key that must be ignored."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for index, cout, cin in convs:
        state[f"features.{index}.weight"] = torch.randn(cout, cin, 3, 3, generator=gen) * (2 / (9 * cin)) ** 0.5
        state[f"features.{index}.bias"] = torch.randn(cout, generator=gen) * 0.01
    state["classifier.6.bias"] = torch.zeros(1000)
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory) -> Path:
    return _vgg19_file(tmp_path_factory.mktemp("vgg") / "vgg19-random.pth")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(3)
    (root / "train").mkdir()
    for i in range(4):
        small = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
        cv2.imwrite(str(root / "train" / f"img{i}.png"), cv2.resize(small, (48, 48), interpolation=cv2.INTER_CUBIC))
    return root


GAN = "{kind: gan, weight: 0.1}"


def _config(data_dir: Path, losses: str, *overrides: str):
    raw = {
        "name": "gan",
        "model": {"name": "man-tiny", "scale": 2},
        "data": {"train": {"hr": str(data_dir / "train"), "patch_size": 12, "num_workers": 0}},
        "train": {"iterations": 4, "batch_size": 2, "lr": 1e-3, "save_every": 2, "ema_decay": 0.9,
                  "schedule": {"milestones": [3]},
                  "discriminator": {"num_feat": 8, "lr": 2e-3, "schedule": {"milestones": [3]}}},
        "logging": {"log_every": 2, "progress_bar": False, "tensorboard": False},
    }
    return config_from_dict(raw, [f"train.losses={losses}", *overrides])


def _same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _same_optimizer(a: dict, b: dict) -> None:
    assert len(a["state"]) == len(b["state"]) > 0
    for sa, sb in zip(a["state"].values(), b["state"].values()):
        _same_tensors(sa, sb)
    assert [g["lr"] for g in a["param_groups"]] == [g["lr"] for g in b["param_groups"]]


# -- the losses list ------------------------------------------------------------------------------------------


def test_the_default_objective_is_the_plain_l1_tensor_itself():
    config = config_from_dict({})
    (term,) = loss_terms(config.train)
    assert (term.kind, term.weight) == ("l1", 1.0)
    losses = build_loss_set(config.train)
    sr, hr = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    out = losses(sr, hr)
    assert torch.equal(out.total, L1Loss()(sr, hr)) and out.parts == {"l1": out.total}
    # the shorthand's charbonnier keeps train.charbonnier_eps; a weighted sum adds the weighted parts
    legacy = config_from_dict({"train": {"loss": "charbonnier", "charbonnier_eps": 0.5}}).train
    assert [(t.kind, t.eps) for t in loss_terms(legacy)] == [("charbonnier", None)]
    assert build_loss_set(legacy)(sr * 0, sr * 0).total.item() == pytest.approx(0.5)
    both = config_from_dict({}, ["train.losses=[{kind: l1, weight: 2}, {kind: charbonnier, eps: 1}]"]).train
    both = build_loss_set(both)
    out = both(sr, hr)
    l1 = F.l1_loss(sr, hr)
    assert out.parts["l1"].item() == pytest.approx(2 * l1.item())
    assert out.parts["charbonnier"].item() == pytest.approx(torch.sqrt((sr - hr) ** 2 + 1).mean().item())
    assert out.total.item() == pytest.approx(out.parts["l1"].item() + out.parts["charbonnier"].item())


@pytest.mark.parametrize("losses, overrides, message", [
    ("[{kind: l1}, {kind: l1, weight: 2}]", (), r"train\.losses\[1\]\.kind: l1 is already train\.losses\[0\]"),
    ("[{kind: perceptal}]", (), r"train\.losses\[0\]\.kind: expected one of .*did you mean 'perceptual'"),
    ("[{kind: perceptual}]", (), r"train\.losses\[0\]\.vgg_weights: is required.*vgg19-dcbb9e9d\.pth"),
    ("[{kind: l1, vgg_weights: v.pth}]", (),
     r"train\.losses\[0\]\.vgg_weights: is an option of kind perceptual, not of l1"),
    ("[{kind: l1, weight: -1}]", (), r"train\.losses\[0\]\.weight: must be a positive number, got -1"),
    ("[{kind: l1}]", ("train.loss=charbonnier",), r"train\.loss: charbonnier is set together with train\.losses"),
    ("[{kind: perceptual, vgg_weights: v.pth, layer_weights: {conv6_1: 1}}]", (),
     r"unknown key 'train\.losses\[0\]\.layer_weights\.conv6_1'; did you mean"),
    ("[{kind: perceptual, vgg_weights: v.pth, layer_weights: {conv5_4: 0}}]", (),
     r"train\.losses\[0\]\.layer_weights: gives no layer a positive weight"),
    ("[{kind: l1}, {kind: gan}]", ("data.train.patch_size=13",),
     r"data\.train\.patch_size: .* \(patch_size x scale = 26\) must be a multiple of 8"),
    ("[{kind: gan}]", ("train.discriminator.lr=0",), r"train\.discriminator\.lr: must be positive"),
    ("[{kind: gan}]", ("train.discriminator.schedule.milestones=[5, 2]",),
     r"train\.discriminator\.schedule\.milestones: must be strictly increasing"),
])
def test_bad_losses_lists_are_refused_naming_the_key(losses, overrides, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"model": {"scale": 2}}, [f"train.losses={losses}", *overrides])


# -- VGG19 and the perceptual loss -------------------------------------------------------------------------------


def test_vgg19_stack_has_torchvision_indices_and_loads_its_keys(vgg_file):
    assert [VGG19_CONVS[k] for k in ("conv1_2", "conv2_2", "conv3_4", "conv4_4", "conv5_4")] == [2, 7, 16, 25, 34]
    features = load_vgg19_features(vgg_file, ["conv5_4"])
    state = torch.load(vgg_file, weights_only=True)
    convs = {int(k.split(".")[0]) for k in features.features.state_dict() if k.endswith(".weight")}
    assert convs == {index for index, _, _ in TORCHVISION_VGG19_CONVS}
    _same_tensors({f"features.{k}": v for k, v in features.features.state_dict().items()},
                  {k: v for k, v in state.items() if k.startswith("features.")})
    assert not any(p.requires_grad for p in features.parameters()) and not features.train().training


def test_perceptual_loss_is_l1_of_imagenet_normalised_conv_outputs_before_relu(vgg_file, tmp_path):
    config = config_from_dict({}, [f"train.losses=[{{kind: perceptual, vgg_weights: {vgg_file}, "
                                   "layer_weights: {conv1_1: 0.5, conv1_2: 2.0}}]"])
    losses = build_loss_set(config.train)
    state = torch.load(vgg_file, weights_only=True)
    gen = torch.Generator().manual_seed(1)
    sr = torch.rand(2, 3, 16, 16, generator=gen, requires_grad=True)
    hr = torch.rand(2, 3, 16, 16, generator=gen)

    def convs(x):  # the oracle: normalise, conv1_1, ReLU, conv1_2 (no ReLU after it)
        x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        c11 = F.conv2d(x, state["features.0.weight"], state["features.0.bias"], padding=1)
        return c11, F.conv2d(F.relu(c11), state["features.2.weight"], state["features.2.bias"], padding=1)

    (a11, a12), (b11, b12) = convs(sr), convs(hr)
    expected = 0.5 * (a11 - b11).abs().mean() + 2.0 * (a12 - b12).abs().mean()
    out = losses(sr, hr)
    torch.testing.assert_close(out.total, expected, rtol=1e-5, atol=1e-6)
    out.total.backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0  # the gradient reaches SR, not the frozen VGG
    assert losses(hr, hr).total.item() == 0.0


def test_bad_vgg_weights_files_name_the_file_and_the_first_missing_key(vgg_file, tmp_path, data_dir):
    def error(path: Path) -> str:
        with pytest.raises(VggWeightsError) as info:
            load_vgg19_features(path, ["conv1_2", "conv2_2", "conv3_4", "conv4_4", "conv5_4"])
        return str(info.value)

    assert error(tmp_path / "nowhere.pth") == (f"{tmp_path / 'nowhere.pth'}: no such file; expected torchvision's "
                                              "vgg19 weights (vgg19-dcbb9e9d.pth)")
    vgg16 = [(0, 64, 3), (2, 64, 64), (5, 128, 64), (7, 128, 128), (10, 256, 128), (12, 256, 256), (14, 256, 256),
             (17, 512, 256), (19, 512, 512), (21, 512, 512), (24, 512, 512), (26, 512, 512), (28, 512, 512)]
    message = error(_vgg19_file(tmp_path / "vgg16.pth", vgg16))
    assert message.startswith(f"{tmp_path / 'vgg16.pth'}: missing key 'features.16.weight'; expected torchvision's")
    wrong = torch.load(vgg_file, weights_only=True)
    wrong["features.7.weight"] = torch.zeros(128, 64, 3, 3)
    torch.save(wrong, tmp_path / "wrong.pth")
    assert "features.7.weight has shape (128, 64, 3, 3), VGG19 needs (128, 128, 3, 3)" in error(tmp_path / "wrong.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    assert error(tmp_path / "junk.pth").startswith(f"{tmp_path / 'junk.pth'}: not a readable weights file")
    # through train(): refused before any run folder exists, naming the config key
    with pytest.raises(MlkasrError, match=r"train\.losses\[1\]\.vgg_weights: .*vgg16\.pth: missing key 'features\.16"):
        train(_config(data_dir, f"[{{kind: l1}}, {{kind: perceptual, vgg_weights: {tmp_path / 'vgg16.pth'}}}]"),
              tmp_path / "run", device="cpu")
    assert not (tmp_path / "run").exists()


def test_a_training_step_with_the_perceptual_loss(data_dir, vgg_file, tmp_path):
    config = _config(data_dir, f"[{{kind: l1}}, {{kind: perceptual, vgg_weights: {vgg_file}, weight: 0.01}}]",
                     "data.train.patch_size=16", "train.iterations=2", "logging.log_every=1")
    result = train(config, tmp_path / "run", device="cpu")
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "iter_00000002.pth")
    assert state["model"].keys() == state["ema"].keys() == result.model.state_dict().keys()
    assert not any(k.startswith("features") for k in state["model"]) and "discriminator" not in state
    log = (tmp_path / "run" / "train.log").read_text()
    assert "loss: 1 * l1 + 0.01 * perceptual" in log
    line = next(line for line in log.splitlines() if "iter        2/2" in line)
    found = re.search(r"loss ([\d.]+) \(l1 ([\d.]+), perceptual ([\d.]+)\)", line)
    total, l1, perceptual = (float(v) for v in found.groups())
    assert perceptual > 0 and total == pytest.approx(l1 + perceptual, abs=2e-5)


# -- GAN ---------------------------------------------------------------------------------------------------------


def test_unet_discriminator_is_real_esrgans():
    d = UNetDiscriminatorSN()
    # conv0 3->64 (3x3, bias), conv1-3 4x4 down 64->128->256->512, conv4-6 3x3 512->256->128->64, conv7-8 64->64,
    # conv9 64->1 (3x3, bias); only conv0/conv9 have biases
    expected = (3 * 64 * 9 + 64) + 16 * (64 * 128 + 128 * 256 + 256 * 512) + 9 * (512 * 256 + 256 * 128 + 128 * 64) \
        + 2 * 9 * 64 * 64 + (64 * 9 + 1)
    assert sum(p.numel() for p in d.parameters()) == expected == 4_376_897
    normalised = {k.split(".")[0] for k in d.state_dict() if k.endswith("._u")}
    assert normalised == {f"conv{i}" for i in range(1, 9)}
    x = torch.rand(1, 3, 24, 40)
    assert UNetDiscriminatorSN(num_feat=8)(x).shape == (1, 1, 24, 40)


def _gan_step(vgg_file: Path | None = None):
    import mlkasr
    from mlkasr.training.adversarial import build_adversary
    from mlkasr.training.distributed import DistContext
    from mlkasr.training.ema import ModelEMA
    from mlkasr.training.optim import build_optimizer
    from mlkasr.training.step import Precision, TrainStep

    config = config_from_dict({"model": {"scale": 2}, "train": {"discriminator": {"num_feat": 8}}},
                              [f"train.losses=[{{kind: l1}}, {GAN}]"]).train
    torch.manual_seed(0)
    model = mlkasr.build_model("man-tiny", 2)
    losses = build_loss_set(config)
    adversary = build_adversary(losses, config, DistContext(), torch.device("cpu"))
    step = TrainStep(model, model, losses, build_optimizer(model, config), ModelEMA(model, 0.9), Precision(None, False),
                     torch.device("cpu"), None, DistContext(), torch.contiguous_format, adversary)
    return step, model, adversary


def _snapshot(step, model, adversary) -> dict:
    import copy

    return copy.deepcopy({"g": model.state_dict(), "ema": step.ema.state_dict(), "d": adversary.network.state_dict(),
                          "g_opt": step.optimizer.state_dict()["state"],
                          "d_opt": adversary.optimizer.state_dict()["state"]})


def _unchanged(before: dict, after: dict) -> bool:
    same = [torch.equal(a, b) for k in ("g", "ema", "d") for a, b in zip(before[k].values(), after[k].values())]
    return all(same) and len(before["g_opt"]) == len(after["g_opt"]) and len(before["d_opt"]) == len(after["d_opt"])


def test_nan_guard_with_a_gan_skips_both_networks():
    step, model, adversary = _gan_step()
    gen = torch.Generator().manual_seed(2)
    batch = torch.rand(2, 3, 12, 12, generator=gen), torch.rand(2, 3, 24, 24, generator=gen)
    assert step(*batch).applied  # a first healthy step: the optimisers have state from here on
    calls = {"n": 0}

    def nan_on_real_pass(module, inputs, output):  # D is called for G's term, then on HR ("real"), then on SR
        calls["n"] += 1
        return output * float("nan") if calls["n"] == 2 else output

    hook = adversary.network.register_forward_hook(nan_on_real_pass)
    before = _snapshot(step, model, adversary)
    result = step(*batch)
    assert not result.applied and np.isfinite(result.parts["l1"]) and np.isnan(result.parts["d_real"])
    assert _unchanged(before, _snapshot(step, model, adversary))  # G, its EMA, D and its u/v vectors: untouched
    result = step(*batch)  # the hook only spoils its 2nd call
    hook.remove()
    assert result.applied and set(result.parts) == {"l1", "gan", "d_real", "d_fake"}
    after = _snapshot(step, model, adversary)
    assert not any(torch.equal(before["d"][k], after["d"][k]) for k in before["d"] if k.endswith("original"))
    assert not torch.equal(before["g"]["head.weight"], after["g"]["head.weight"])
    # the generator's gan term never left gradients in the discriminator
    assert all(not p.requires_grad for p in adversary.network.parameters())


def test_nan_guard_counts_a_discriminator_failure_in_a_run(data_dir, tmp_path, monkeypatch):
    from mlkasr.training import adversarial

    calls = {"n": 0}
    real_loss = adversarial.real_loss

    def nan_on_second_step(logits):
        calls["n"] += 1
        return real_loss(logits) * (float("nan") if calls["n"] == 2 else 1.0)

    monkeypatch.setattr(adversarial, "real_loss", nan_on_second_step)
    result = train(_config(data_dir, f"[{{kind: l1}}, {GAN}]", "train.save_every=4"), tmp_path / "run", device="cpu")
    assert result.iteration == 4 and result.skipped_steps == 1
    assert "iteration 2: non-finite loss or gradient, step skipped" in (tmp_path / "run" / "train.log").read_text()


def test_a_training_step_with_the_gan_loss_keeps_the_discriminator_in_the_checkpoint(data_dir, tmp_path):
    result = train(_config(data_dir, f"[{{kind: l1}}, {GAN}]", "train.iterations=2", "logging.log_every=1"),
                   tmp_path / "run", device="cpu")
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "iter_00000002.pth")
    d = state["discriminator"]
    assert set(d) == {"model", "optimizer", "schedule"} and d["schedule"]["last_iteration"] == 2
    assert any(k.endswith("._u") for k in d["model"]) and len(d["optimizer"]["state"]) == 12  # 10 convs, 2 with a bias
    assert d["optimizer"]["param_groups"][0]["lr"] == 2e-3
    assert state["model"].keys() == state["ema"].keys() == result.model.state_dict().keys()  # EMA: generator only
    log = (tmp_path / "run" / "train.log").read_text()
    assert "loss: 1 * l1 + 0.1 * gan | discriminator: UNetDiscriminatorSN (" in log
    assert "gan" in log and "d_real" in log and "d_fake" in log


def test_gan_resume_is_bit_exact(data_dir, tmp_path, vgg_file):
    losses = f"[{{kind: l1}}, {{kind: perceptual, vgg_weights: {vgg_file}, layer_weights: {{conv2_2: 1}}}}, {GAN}]"
    train(_config(data_dir, losses), tmp_path / "straight", device="cpu")
    train(_config(data_dir, losses, "train.iterations=2"), tmp_path / "split", device="cpu")
    resumed = train(_config(data_dir, losses), tmp_path / "split", resume="auto", device="cpu")
    assert resumed.iteration == 4
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "iter_00000004.pth")
    b = load_checkpoint(tmp_path / "split" / "checkpoints" / "iter_00000004.pth")
    _same_tensors(a["model"], b["model"])
    _same_tensors(a["ema"], b["ema"])
    _same_optimizer(a["optimizer"], b["optimizer"])
    _same_tensors(a["discriminator"]["model"], b["discriminator"]["model"])  # weights and spectral-norm u/v
    _same_optimizer(a["discriminator"]["optimizer"], b["discriminator"]["optimizer"])
    # the discriminator's own milestone (3) applied in both: its schedule resumes too
    assert b["discriminator"]["optimizer"]["param_groups"][0]["lr"] == pytest.approx(2e-3 * 0.5)
    first = load_checkpoint(tmp_path / "straight" / "checkpoints" / "iter_00000002.pth")
    assert not torch.equal(first["discriminator"]["model"]["conv1.parametrizations.weight.original"],
                           a["discriminator"]["model"]["conv1.parametrizations.weight.original"])


def test_adding_a_gan_on_resume_starts_a_fresh_discriminator_with_a_warning(data_dir, tmp_path):
    train(_config(data_dir, "[{kind: l1}]", "train.iterations=2"), tmp_path / "run", device="cpu")
    result = train(_config(data_dir, f"[{{kind: l1}}, {GAN}]"), tmp_path / "run", resume="auto", device="cpu",
                   allow_config_change=True)
    assert result.iteration == 4
    log = (tmp_path / "run" / "train.log").read_text()
    assert "WARNING: the checkpoint holds no discriminator" in log and "train.losses:" in log


def _ddp_gan_worker(rank: int, port: int, data_dir: str, out: str) -> None:
    import os

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    config = _config(Path(data_dir), f"[{{kind: l1}}, {GAN}]", "train.batch_size=4", "train.iterations=2")
    result = train(config, Path(out) / "run", device="cpu")
    from mlkasr.training import load_checkpoint as load

    torch.save({"model": result.model.state_dict(),
                "discriminator": load(Path(out) / "run" / "checkpoints" / "iter_00000002.pth")["discriminator"]["model"]
                if rank == 0 else None}, Path(out) / f"rank{rank}.pt")


def test_ddp_two_processes_train_the_gan_in_step(data_dir, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.start_processes(_ddp_gan_worker, args=(port, str(data_dir), str(tmp_path)), nprocs=2,
                                          join=True, start_method="fork")
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    _same_tensors(r0["model"], r1["model"])
    assert any(k.endswith("._u") for k in r0["discriminator"])


# -- the shipped GAN config ---------------------------------------------------------------------------------------


def test_the_gan_config_fine_tunes_man_tiny_x4_with_l1_perceptual_and_gan():
    c = load_config(REPO_ROOT / "configs" / "man-tiny_x4_gan.yaml")
    assert (c.model.name, c.model.scale, c.model.init_weights) == ("man-tiny", 4, "man-tiny_x4")
    assert [(t.kind, t.weight) for t in c.train.losses] == [("l1", 1.0), ("perceptual", 1.0), ("gan", 0.1)]
    assert c.train.losses[1].vgg_weights.endswith("vgg19-dcbb9e9d.pth") and c.train.losses[1].layer_weights is None
    d = c.train.discriminator
    assert (d.num_feat, d.skip_connection, d.lr, d.betas) == (64, True, 1e-4, [0.9, 0.99])
