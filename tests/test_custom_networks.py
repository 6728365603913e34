"""Custom MAN networks from the config: width/depth overrides and the paper's ablation switches (ModelSpec.ablations).

The MAN paper's parameter counts for its ablation variants are not in ../shared/docs/man-architecture.md (it gives
the three published variants only), so the counts are checked against formulas derived by hand from that document,
which also reproduce the nine published counts.
"""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch
import torch.nn.functional as F

import mlkasr
from mlkasr.cli import main
from mlkasr.config import AblationConfig, ConfigError, config_from_dict
from mlkasr.models import Ablations, CheckpointError, MAN, ModelSpec, SpecError, count_conv_macs, make_spec
from mlkasr.models.checkpoint import infer_spec
from mlkasr.models.man import MLKA, PointwiseMLP, ResGroup
from mlkasr.models.reference import ReferenceMAN, to_reference

from conftest import REPO_ROOT

SAMPLES = REPO_ROOT / "datasets" / "samples"
PUBLISHED = {  # (n_feats, n_resblocks) -> parameters at x2, x3, x4 (man-architecture.md)
    (48, 5): (134_436, 140_931, 150_024),
    (60, 24): (823_416, 831_531, 842_892),
    (180, 36): (8_654_256, 8_678_571, 8_712_612),
}
SWITCHES = {  # each non-default switch on its own
    "nogate": Ablations(mlka_gate=False),
    "single-scale": Ablations(mlka_multiscale=False),
    "mlp": Ablations(feed_forward="mlp"),
    "notail": Ablations(lkat_tail=False),
}
ALL_OFF = Ablations(mlka_gate=False, mlka_multiscale=False, feed_forward="mlp", lkat_tail=False)


# -- hand-derived parameter counts ------------------------------------------------------------------------------

def _dw(c: int, k: int) -> int:  # depthwise k x k conv with bias
    return c * k * k + c


def _pw(c_in: int, c_out: int) -> int:  # 1x1 conv with bias
    return c_in * c_out + c_out


def expected_parameters(n: int, blocks: int, scale: int, ab: Ablations = Ablations()) -> int:
    """Parameters of MAN from the architecture document, term by term (every conv has a bias)."""
    g = n // 3
    norm, layer_scale = 2 * n, n
    mlka = norm + layer_scale + _pw(n, 2 * n) + _pw(n, n)
    if ab.mlka_multiscale:  # LKA3 (3x3, 5x5 d2), LKA5 (5x5, 7x7 d3), LKA7 (7x7, 9x9 d4), each + 1x1 on g
        mlka += sum(_dw(g, k) + _dw(g, kd) + _pw(g, g) for k, kd in ((3, 5), (5, 7), (7, 9)))
        mlka += sum(_dw(g, k) for k in (3, 5, 7)) if ab.mlka_gate else 0  # X3, X5, X7
    else:  # one LKA on all n channels (7x7, 9x9 d4, 1x1) and its 7x7 gate
        mlka += _dw(n, 7) + _dw(n, 9) + _pw(n, n) + (_dw(n, 7) if ab.mlka_gate else 0)
    if ab.feed_forward == "gsau":  # Conv1 n->2n, DWConv1 7x7, Conv2 n->n
        unit = norm + layer_scale + _pw(n, 2 * n) + _dw(n, 7) + _pw(n, n)
    else:  # fc1 n->2n, GELU, fc2 2n->n
        unit = norm + layer_scale + _pw(n, 2 * n) + _pw(2 * n, n)
    lkat = _pw(n, n) + _dw(n, 7) + _dw(n, 9) + _pw(n, n) + _pw(n, n) if ab.lkat_tail else 0
    mean_shifts = 2 * _pw(3, 3)
    head, tail = 3 * 9 * n + n, n * 9 * 3 * scale**2 + 3 * scale**2
    return mean_shifts + head + blocks * (mlka + unit) + lkat + tail


def _meta_model(spec: ModelSpec) -> MAN:
    with torch.device("meta"):
        return MAN(spec)


def test_the_formula_reproduces_the_published_counts():
    for (n, blocks), counts in PUBLISHED.items():
        assert [expected_parameters(n, blocks, s) for s in (2, 3, 4)] == list(counts)


@pytest.mark.parametrize("ablations", [Ablations(), *SWITCHES.values(), ALL_OFF,
                                       Ablations(mlka_gate=False, mlka_multiscale=False)], ids=repr)
@pytest.mark.parametrize(("name", "n_feats", "blocks", "scale"), [("man-tiny", None, None, 4), ("man", 36, 3, 3),
                                                                  ("man-light", 12, 1, 2)])
def test_parameter_counts_match_the_hand_derived_formula(name, n_feats, blocks, scale, ablations):
    spec = make_spec(name, scale, n_feats, blocks, ablations)
    assert _meta_model(spec).num_parameters == expected_parameters(spec.n_feats, spec.n_resblocks, scale, ablations)


def _numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_each_switch_removes_or_replaces_exactly_its_layers():
    published = _meta_model(make_spec("man-tiny", 4))
    blocks = list(published.body[0].body)

    def delta(ab: Ablations) -> int:
        return published.num_parameters - _meta_model(make_spec("man-tiny", 4, ablations=ab)).num_parameters

    gates = sum(_numel(getattr(b.LKA, x)) for b in blocks for x in ("X3", "X5", "X7"))
    assert delta(SWITCHES["nogate"]) == gates == 5 * 16 * (9 + 25 + 49 + 3)
    single = _meta_model(make_spec("man-tiny", 4, ablations=SWITCHES["single-scale"]))
    replaced = sum(_numel(getattr(b.LKA, m)) for b in blocks for m in ("LKA3", "LKA5", "LKA7", "X3", "X5", "X7"))
    added = sum(_numel(b.LKA.LKA) + _numel(b.LKA.X) for b in single.body[0].body)
    assert published.num_parameters - single.num_parameters == replaced - added
    mlp = _meta_model(make_spec("man-tiny", 4, ablations=SWITCHES["mlp"]))
    assert delta(SWITCHES["mlp"]) == sum(_numel(b.LFE) for b in blocks) - sum(_numel(b.LFE) for b in mlp.body[0].body)
    assert all(isinstance(b.LFE, PointwiseMLP) for b in mlp.body[0].body)
    assert delta(SWITCHES["notail"]) == _numel(published.body[0].body_t) == 3 * 48 * 48 + 135 * 48


def test_each_switch_changes_its_keys_and_only_them():
    published = set(MAN(make_spec("man-tiny", 2)).state_dict())
    changed = {  # key fragment removed -> key fragment added, per switch
        "nogate": ({".LKA.X3.", ".LKA.X5.", ".LKA.X7."}, set()),
        "single-scale": ({".LKA.LKA3.", ".LKA.LKA5.", ".LKA.LKA7.", ".LKA.X3.", ".LKA.X5.", ".LKA.X7."},
                         {".LKA.LKA.", ".LKA.X."}),
        "mlp": ({".LFE.Conv1.", ".LFE.DWConv1.", ".LFE.Conv2."}, {".LFE.fc1.", ".LFE.fc2."}),
        "notail": ({"body_t."}, set()),
    }
    for tag, ab in SWITCHES.items():
        keys = set(MAN(make_spec("man-tiny", 2, ablations=ab)).state_dict())
        removed, added = changed[tag]
        assert {k for k in published - keys} == {k for k in published if any(f in k for f in removed)}, tag
        assert all(any(f in k for f in added) for k in keys - published) and (bool(keys - published) == bool(added))


# -- what each switch computes ----------------------------------------------------------------------------------

def _layer_norm(x, norm):  # the official channels-first formula
    u = x.mean(1, keepdim=True)
    s = (x - u).pow(2).mean(1, keepdim=True)
    return norm.weight[:, None, None] * (x - u) / torch.sqrt(s + norm.eps) + norm.bias[:, None, None]


def _mlka_oracle(m: MLKA, x):
    """MLKA as the official code writes it, with the switches applied: no gate multiplies by 1, single scale runs
    one large kernel on the whole attention half."""
    a, v = torch.chunk(m.proj_first(_layer_norm(x, m.norm)), 2, dim=1)
    if m.multiscale:
        pieces = zip(torch.chunk(a, 3, dim=1), ("3", "5", "7"))
        att = torch.cat([getattr(m, f"LKA{k}")(p) * (getattr(m, f"X{k}")(p) if m.gated else 1) for p, k in pieces], 1)
    else:
        att = m.LKA(a) * (m.X(a) if m.gated else 1)
    return m.proj_last(v * att) * m.scale + x


def _mlp_oracle(m: PointwiseMLP, x):
    return m.fc2(F.gelu(m.fc1(_layer_norm(x, m.norm)))) * m.scale + x


@pytest.mark.parametrize(("gated", "multiscale"), [(False, True), (True, False), (False, False), (True, True)])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "cl"])
@pytest.mark.parametrize("batch", [1, 2])
def test_mlka_switches_compute_what_they_say(gated, multiscale, memory_format, batch, randomize):
    m = randomize(MLKA(12, gated=gated, multiscale=multiscale), std=0.3)
    x = torch.rand(batch, 12, 9, 7).contiguous(memory_format=memory_format)
    with torch.no_grad():
        expected = _mlka_oracle(m, x)
        torch.testing.assert_close(m(x), expected, rtol=1e-5, atol=1e-5)  # the inference path
    torch.testing.assert_close(m(x), expected, rtol=1e-5, atol=1e-5)  # the autograd path


def test_mlp_and_tailless_group_compute_what_they_say(randomize):
    mlp = randomize(PointwiseMLP(12), std=0.3)
    x = torch.rand(2, 12, 6, 5)
    torch.testing.assert_close(mlp(x), _mlp_oracle(mlp, x), rtol=1e-5, atol=1e-5)
    group = randomize(ResGroup(2, 12, Ablations(lkat_tail=False)), std=0.3)
    assert group.body_t is None
    with torch.no_grad():
        torch.testing.assert_close(group(x), group.body[1](group.body[0](x)) + x)


@pytest.mark.parametrize("tag", sorted(SWITCHES))
def test_each_switch_changes_the_output_and_trains(tag, randomize):
    """Same weights wherever the two networks share a key: the switch alone changes the output, and gradients
    reach every parameter of the ablated network."""
    published = randomize(MAN(make_spec("man-tiny", 2, n_feats=12, n_resblocks=2)), std=0.2)
    ablated = MAN(make_spec("man-tiny", 2, n_feats=12, n_resblocks=2, ablations=SWITCHES[tag]))
    randomize(ablated, std=0.2, seed=1)
    shared = {k: v for k, v in published.state_dict().items() if k in ablated.state_dict()}
    ablated.load_state_dict(shared, strict=False)
    x = torch.rand(1, 3, 10, 8)
    with torch.no_grad():
        assert (ablated(x) - published(x)).abs().max() > 1e-3
    ablated(x).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ablated.parameters() if p.requires_grad)


def test_the_official_formulation_is_refused_for_an_ablated_network():
    with pytest.raises(ValueError, match="ablations .*MLKA without gates.*published network only"):
        to_reference(MAN(make_spec("man-tiny", 2, n_feats=12, n_resblocks=1, ablations=SWITCHES["nogate"])))


# -- specs, names, files ----------------------------------------------------------------------------------------

def test_named_variants_keep_their_names_and_defaults():
    assert make_spec("man-tiny", 4, n_feats=48, n_resblocks=5) == make_spec("man-tiny", 4) == \
        ModelSpec("man-tiny", 4, 48, 5, Ablations())
    assert make_spec("man", 3, n_feats=36, n_resblocks=3).name == "man-custom-3x36"
    assert make_spec("man-tiny", 2, ablations=ALL_OFF).name == "man-tiny-nogate-single-scale-mlp-notail"
    for bad, message in (({"n_feats": 40}, "n_feats must be a positive multiple of 3"),
                         ({"n_feats": 0}, "n_feats must be"), ({"n_resblocks": 0}, "n_resblocks must be a positive")):
        with pytest.raises(SpecError, match=message):
            make_spec("man", 2, **bad)
    with pytest.raises(ValueError, match="feed_forward must be one of gsau, mlp"):
        Ablations(feed_forward="ffn")


def test_checkpoint_specs_round_trip_and_old_ones_still_read():
    from mlkasr.models.zoo import spec_from_dict, spec_to_dict

    for spec in (make_spec("man-tiny", 2), make_spec("man", 3, 36, 3, ALL_OFF), make_spec("man-light", 4, 60, 2)):
        assert spec_from_dict(spec_to_dict(spec)) == spec
    assert spec_from_dict({"name": "man-light", "scale": 4}) == make_spec("man-light", 4)  # before this change
    with pytest.raises(SpecError, match="ckpt.pth: n_feats must be a positive multiple of 3"):
        spec_from_dict({**spec_to_dict(make_spec("man-tiny", 2)), "n_feats": 10}, source="ckpt.pth")


def test_the_config_mirrors_the_model_switches():
    config_fields = {f.name: f.default for f in dataclasses.fields(AblationConfig)}
    assert config_fields == {f.name: f.default for f in dataclasses.fields(Ablations)}
    assert all(f.metadata.get("help") for f in dataclasses.fields(AblationConfig))


@pytest.mark.parametrize("ablations", [Ablations(), ALL_OFF, *SWITCHES.values()], ids=repr)
def test_save_and_load_keep_the_whole_spec(ablations, randomize, tmp_path):
    model = randomize(MAN(make_spec("man", 3, n_feats=18, n_resblocks=2, ablations=ablations)))
    path = mlkasr.save_model(model, tmp_path / "m.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert json.loads(f.metadata()["ablations"]) == dataclasses.asdict(ablations)
    loaded = mlkasr.load_model(path)
    assert loaded.spec == model.spec and mlkasr.models.inspect_checkpoint(path) == model.spec
    x = torch.rand(1, 3, 7, 6)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))


def test_ablations_are_never_guessed_from_the_keys(tmp_path):
    """A bare state dict of an ablated network says nothing about its switches: it is refused, naming the keys,
    as a damaged published network would be; width and depth are still read off the shapes."""
    ablated = MAN(make_spec("man-tiny", 2, n_feats=12, n_resblocks=2, ablations=SWITCHES["nogate"]))
    spec = infer_spec(ablated.state_dict())
    assert (spec.n_feats, spec.n_resblocks, spec.ablations) == (12, 2, Ablations())
    torch.save(ablated.state_dict(), tmp_path / "bare.pth")
    with pytest.raises(CheckpointError, match=r"missing keys \(12\): body\.0\.body\.0\.LKA\.X3\.bias"):
        mlkasr.load_model(tmp_path / "bare.pth")
    notail = MAN(make_spec("man-tiny", 2, n_feats=12, n_resblocks=1, ablations=SWITCHES["notail"]))
    assert infer_spec(notail.state_dict(), ablations=SWITCHES["notail"]).name == "man-custom-1x12-notail"


def test_metadata_that_is_wrong_is_refused_naming_the_file(tmp_path):
    from safetensors.torch import load_file, save_file

    model = MAN(make_spec("man-tiny", 2, n_feats=12, n_resblocks=1, ablations=SWITCHES["mlp"]))
    path = mlkasr.save_model(model, tmp_path / "m.safetensors")
    tensors = load_file(str(path))
    base = {"format": "mlkasr", "scale": "2", "n_feats": "12", "n_resblocks": "1"}
    for ablations, message in (("{not json", "metadata 'ablations' is not JSON"),
                               ('{"mlka_gates": false}', "unknown ablation switch.*mlka_gates"),
                               ('{"feed_forward": "ffn"}', "feed_forward must be one of"),
                               ('{"mlka_gate": "false"}', "mlka_gate must be true or false"),
                               ('{"feed_forward": "gsau"}', r"missing keys .*LFE\.Conv1")):
        save_file(tensors, str(tmp_path / "bad.safetensors"), metadata={**base, "ablations": ablations})
        with pytest.raises(CheckpointError, match=f"bad.safetensors.*{message}"):
            mlkasr.load_model(tmp_path / "bad.safetensors")


def test_info_builds_any_spec_from_options(capsys):
    assert main(["info", "--arch", "man", "--n-feats", "36", "--n-resblocks", "3", "--scale", "3"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"model\s+man-custom-3x36 x3", out) and re.search(r"parameters\s+61,863\n", out)
    args = ["info", "man-tiny", "--scale", "4", "--no-mlka-gate", "--feed-forward", "mlp", "--output-size", "64x64"]
    assert main(args) == 0
    out = capsys.readouterr().out
    ab = Ablations(mlka_gate=False, feed_forward="mlp")
    macs = count_conv_macs(_meta_model(make_spec("man-tiny", 4, ablations=ab)), 16, 16)
    assert re.search(r"ablations\s+MLKA without gates, MLP instead of GSAU\n", out)
    assert f"{expected_parameters(48, 5, 4, ab):,}" in out and f"{macs / 1e9:.2f} G for a 64x64 output" in out
    for argv, message in ((["info", "man-tiny_x4", "--n-feats", "36"], "man-tiny_x4 is a weights file"),
                          (["info", "--no-lkat-tail"], "no variant is given"),
                          (["info", "--arch", "man", "--n-feats", "40", "--scale", "2"], "--n-feats must be a positive multiple of 3"),
                          (["info", "man", "--arch", "man", "--scale", "2"], "not both")):
        assert main(argv) == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize(("override", "message"), [
    ("model.n_feats=40", "model.n_feats: must be a positive multiple of 3"),
    ("model.n_resblocks=0", "model.n_resblocks: must be a positive number of blocks"),
    ("model.ablations.feed_forward=ffn", "model.ablations.feed_forward: expected one of gsau, mlp"),
    ("model.ablations.mlka_gate=maybe", "model.ablations.mlka_gate: expected a boolean"),
    ("model.ablations.gate=false", "unknown key 'model.ablations.gate'; did you mean 'model.ablations.mlka_gate'"),
])
def test_bad_model_keys_are_named(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_dict({}, [override])


# -- end to end: train, export, info, resume ----------------------------------------------------------------------

FAST = ["--set", "train.iterations=2", "--set", "train.batch_size=2", "--set", "data.train.patch_size=12",
        "--set", "train.schedule.warmup_iterations=1", "--set", "train.save_every=2", "--set", "data.val=[]",
        "--set", "data.train.num_workers=0", "--set", "logging.progress_bar=false",
        "--set", "logging.tensorboard=false", "--threads", "1"]


def test_a_custom_network_trains_and_info_on_its_export_prints_the_official_count(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO_ROOT)  # configs/quickstart.yaml names the embedded T91 relative to the repository root
    run = tmp_path / "custom"
    assert main(["train", "configs/quickstart.yaml", "--run-dir", str(run), "--set", "model.name=man",
                 "--set", "model.n_feats=36", "--set", "model.n_resblocks=3", "--set", "model.scale=3", *FAST]) == 0
    capsys.readouterr()
    assert main(["info", str(run / "model.safetensors")]) == 0
    out = capsys.readouterr().out
    with torch.device("meta"):  # the official formulation's own count for MAN(n_resblocks=3, n_feats=36, scale=3)
        official = ReferenceMAN(ModelSpec("man", 3, 36, 3)).num_parameters
    assert official == expected_parameters(36, 3, 3) == 61_863
    assert re.search(rf"parameters\s+{official:,}\n", out) and re.search(r"model\s+man-custom-3x36 x3", out)
    assert "man-custom-3x36 x3 (61,863 parameters)" in (run / "train.log").read_text()


def test_an_ablated_run_checkpoints_its_switches_and_refuses_another_network_on_resume(tmp_path, monkeypatch, capsys):
    from mlkasr.training import load_checkpoint

    monkeypatch.chdir(REPO_ROOT)
    run = tmp_path / "ablated"
    base = ["train", "configs/quickstart.yaml", "--run-dir", str(run), "--set", "model.scale=2",
            "--set", "model.n_feats=12", "--set", "model.n_resblocks=1", *FAST]
    assert main([*base, "--set", "model.ablations.mlka_gate=false", "--set", "model.ablations.feed_forward=mlp"]) == 0
    wanted = make_spec("man-tiny", 2, 12, 1, Ablations(mlka_gate=False, feed_forward="mlp"))
    state = load_checkpoint(run / "checkpoints" / "iter_00000002.pth")
    assert state["spec"]["ablations"] == dataclasses.asdict(wanted.ablations)
    assert mlkasr.load_model(run / "checkpoints" / "iter_00000002.pth").spec == wanted  # the .pth declares them too
    assert mlkasr.load_model(run / "model.safetensors").spec == wanted
    capsys.readouterr()
    # another switch on resume: refused as a config change, and even with the flag the network must match
    resume = [*base, "--resume", "auto", "--set", "model.ablations.mlka_gate=true", "--set",
              "model.ablations.feed_forward=mlp"]
    assert main(resume) == 2
    assert "model.ablations.mlka_gate: False -> True" in capsys.readouterr().err
    assert main([*resume, "--allow-config-change"]) == 2
    err = capsys.readouterr().err
    assert "checkpoint is man-custom-1x12-nogate-mlp x2" in err and "asks for man-custom-1x12-mlp x2" in err


def test_an_ablated_network_exports_to_onnx_with_its_switches(randomize):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import onnxruntime

    from mlkasr.deployment.onnx_export import export_model_proto

    model = randomize(MAN(make_spec("man-tiny", 2, n_feats=12, n_resblocks=1, ablations=ALL_OFF)), std=0.1).eval()
    proto = export_model_proto(model)  # ~4 s: every switch at once, so one export covers them all
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["ablations"]) == dataclasses.asdict(ALL_OFF)
    assert meta["variant"] == "man-custom-1x12-nogate-single-scale-mlp-notail"
    session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = torch.rand(1, 3, 9, 13)
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), model(x), rtol=1e-4, atol=1e-4)
