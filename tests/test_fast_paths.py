"""The fast forwards in mlkasr.models.man compute the official function: outputs and gradients match the plain
reference formulation (mlkasr.models.reference) within 1e-5 in fp32, in NCHW and channels_last, eager and compiled."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from mlkasr.models import MAN, ModelSpec, build_model
from mlkasr.models.reference import ReferenceLayerNorm2d, ReferenceMAN, ReferenceMLKA, to_reference

TOL = dict(rtol=1e-5, atol=1e-5)
FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


def _random_model(scale: int = 2, n_feats: int = 24, blocks: int = 2) -> MAN:
    """A small MAN with every parameter random: the zero-initialised residual scales would hide the blocks."""
    model = MAN(ModelSpec(name="test", scale=scale, n_feats=n_feats, n_resblocks=blocks))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "mean" in name:
                continue
            fan_in = p[0].numel() if p.dim() > 1 else 1
            p.normal_(0.0, 1.0 / fan_in**0.5 if p.dim() > 1 else 0.3)
            if name.endswith("norm.weight"):
                p.add_(1.0)
    return model


def _run(model: MAN, x: torch.Tensor, target: torch.Tensor, memory_format: torch.memory_format):
    """Output, input gradient and parameter gradients of an L1 training loss (tensors compared in NCHW)."""
    model = model.to(memory_format=memory_format)
    model.zero_grad(set_to_none=True)
    x = x.detach().clone().contiguous(memory_format=memory_format).requires_grad_(True)
    out = model(x)
    F.l1_loss(out, target).backward()
    grads = {n: p.grad.contiguous() for n, p in model.named_parameters() if p.requires_grad}
    return out.detach().contiguous(), x.grad.contiguous(), grads


@pytest.fixture(scope="module")
def inputs():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 13, 11, generator=gen)
    target = torch.rand(2, 3, 26, 22, generator=gen)
    return x, target


def test_to_reference_shares_keys_and_leaves_the_original_alone():
    model = build_model("man-tiny", 4)
    ref = to_reference(model)
    assert isinstance(ref, ReferenceMAN) and isinstance(ref, MAN)
    assert type(model) is MAN and type(model.body[0].body[0].LKA) is not ReferenceMLKA
    assert isinstance(ref.body[0].body[0].LKA, ReferenceMLKA)
    assert isinstance(ref.body[0].body[0].LKA.norm, ReferenceLayerNorm2d)
    assert list(ref.state_dict()) == list(model.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), model.state_dict().values()))
    assert ref.body[0].body[0].LKA.scale is not model.body[0].body[0].LKA.scale


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("batch", [1, 2])
def test_training_outputs_and_gradients_match_reference(inputs, fmt, batch):
    x, target = (t[:batch] for t in inputs)
    model = _random_model()
    ref_out, ref_dx, ref_grads = _run(to_reference(model), x, target, torch.contiguous_format)
    out, dx, grads = _run(model, x, target, FORMATS[fmt])
    torch.testing.assert_close(out, ref_out, **TOL)
    torch.testing.assert_close(dx, ref_dx, **TOL)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], **TOL, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("mode, batch", [("no_grad", 1), ("inference_mode", 2)])
def test_inference_outputs_match_reference(inputs, fmt, mode, batch):
    """The no-grad forwards take their own branch (gate products written into one buffer, in-place gates), and
    one NCHW image takes the single-conv split."""
    x = inputs[0][:batch]
    model = _random_model(scale=3).eval()
    ref = to_reference(model)
    context = torch.no_grad if mode == "no_grad" else torch.inference_mode
    with context():
        expected = ref(x)
        got = model.to(memory_format=FORMATS[fmt])(x.contiguous(memory_format=FORMATS[fmt]))
    torch.testing.assert_close(got.contiguous(), expected, **TOL)


def test_equivalence_check_detects_a_wrong_weight(inputs):
    """Guard against a comparison that cannot fail: a 1e-3 change in one gate weight is caught."""
    x, target = inputs
    model = _random_model()
    ref_out, _, _ = _run(to_reference(model), x, target, torch.contiguous_format)
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.body[0].body[1].LKA.X5.weight[3, 0, 2, 2] += 1e-3
    out, _, _ = _run(broken, x, target, torch.channels_last)
    assert not torch.allclose(out, ref_out, **TOL)


def test_layernorm_matches_reference_on_both_layouts():
    from mlkasr.models.man import LayerNorm2d

    norm = LayerNorm2d(12)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    ref = copy.deepcopy(norm)
    ref.__class__ = ReferenceLayerNorm2d
    x = torch.randn(3, 12, 7, 5) * 4 + 2
    for fmt in FORMATS.values():
        torch.testing.assert_close(norm(x.contiguous(memory_format=fmt)).contiguous(), ref(x), **TOL)


@pytest.mark.slow
def test_compiled_matches_eager(inputs, tmp_path, monkeypatch):
    """torch.compile of the fast forwards (channels_last, training and inference) agrees with eager."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    torch._dynamo.reset()
    x, target = inputs
    model = _random_model(blocks=1)
    eager_out, eager_dx, eager_grads = _run(copy.deepcopy(model), x, target, torch.channels_last)
    compiled = torch.compile(model.to(memory_format=torch.channels_last), fullgraph=True)  # no graph breaks
    out, dx, grads = _run(compiled, x, target, torch.channels_last)
    torch.testing.assert_close(out, eager_out, **TOL)
    torch.testing.assert_close(dx, eager_dx, **TOL)
    for name in eager_grads:
        torch.testing.assert_close(grads[f"_orig_mod.{name}"], eager_grads[name], **TOL)
    with torch.no_grad():
        torch.testing.assert_close(compiled.eval()(x.contiguous(memory_format=torch.channels_last)).contiguous(), eager_out, **TOL)
    torch._dynamo.reset()


@pytest.mark.parametrize("fmt", FORMATS)
def test_autocast_runs_both_branches_in_low_precision(inputs, fmt):
    """The buffered/in-place no-grad branch and the autograd branch accept autocast's mixed dtypes (bf16 on CPU
    stands in for the CUDA autocast paths of the benchmark)."""
    x, target = inputs
    model = _random_model().to(memory_format=FORMATS[fmt])
    x = x.contiguous(memory_format=FORMATS[fmt])
    with torch.no_grad():
        expected = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), expected, rtol=0.05, atol=0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.l1_loss(model(x).float(), target)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
