"""fastloss.torch's focal losses against torchvision (or, where it is not installed, its
formula written in PyTorch) and against the multi-class focal loss written in PyTorch:
losses and autograd gradients; the fallback off the fast path; the modules."""

from __future__ import annotations

import numpy as np
import pytest

import fastloss

torch = pytest.importorskip("torch")

# --- PyTorch and torchvision -------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("options", [{}, {"alpha": -1.0, "gamma": 1.5}], ids=str)
def test_torch_sigmoid_focal_like_torchvision(rng, dtype, reduction, options):
    import fastloss.torch as flt
    x = torch.from_numpy(rng.standard_normal((6, 20)).astype(dtype) * 3).requires_grad_()
    t = torch.from_numpy((rng.random((6, 20)) < 0.3).astype(dtype))
    loss = flt.sigmoid_focal_loss(x, t, reduction=reduction, **options)
    (loss.sum()).backward()
    x2 = x.detach().clone().requires_grad_()
    try:
        from torchvision.ops import sigmoid_focal_loss as peer
    except ImportError:                 # the same formula, written in PyTorch
        from fastloss.torch import _sigmoid_focal_loss_torch

        def peer(a, b, alpha=0.25, gamma=2, reduction="none"):
            return _sigmoid_focal_loss_torch(a, b, alpha, gamma, reduction)
    want = peer(x2, t, reduction=reduction, **options)
    want.sum().backward()
    rtol, atol = (2e-5, 1e-6) if dtype == np.float32 else (1e-12, 1e-15)
    torch.testing.assert_close(loss, want, rtol=rtol, atol=atol)
    torch.testing.assert_close(x.grad, x2.grad, rtol=rtol, atol=atol)


def test_torch_sigmoid_focal_falls_back_to_pytorch_off_the_fast_path(rng):
    import fastloss.torch as flt
    x = torch.randn(4, 3, dtype=torch.float64)
    t = torch.rand(4, 3, dtype=torch.float64, requires_grad=True)   # target needs grad
    loss = flt.sigmoid_focal_loss(x, t, reduction="sum")
    loss.backward()
    assert t.grad is not None
    torch.testing.assert_close(loss, torch.tensor(float(fastloss.sigmoid_focal_loss(
        x.numpy(), t.detach().numpy(), reduction="sum")), dtype=torch.float64))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_torch_focal_loss_with_autograd(rng, dtype, reduction):
    import fastloss.torch as flt
    x = torch.from_numpy(rng.standard_normal((8, 5, 3)).astype(dtype)).requires_grad_()
    y = torch.from_numpy(rng.integers(0, 5, (8, 3)))
    y[0, 0] = -100
    w = torch.from_numpy(rng.random(5).astype(dtype) + 0.5)
    loss = flt.focal_loss(x, y, weight=w, gamma=1.5, reduction=reduction)
    loss.sum().backward()
    x2 = x.detach().clone().requires_grad_()
    want = flt._focal_loss_torch(x2, y, w, 1.5, -100, reduction)
    want.sum().backward()
    rtol, atol = (2e-5, 1e-6) if dtype == np.float32 else (1e-12, 1e-15)
    torch.testing.assert_close(loss, want, rtol=rtol, atol=atol)
    torch.testing.assert_close(x.grad, x2.grad, rtol=rtol, atol=atol)


def test_torch_modules():
    import fastloss.torch as flt
    x = torch.tensor([[2.3, -1.2]])
    assert flt.FocalLoss(gamma=0.0)(x, torch.tensor([1])).item() == pytest.approx(
        flt.CrossEntropyLoss()(x, torch.tensor([1])).item(), rel=1e-7)
    module = flt.FocalLoss(weight=torch.tensor([1.0, 3.0]))
    assert "weight" in dict(module.named_buffers())
    assert "gamma=2.0" in repr(module)
    sig = flt.SigmoidFocalLoss(alpha=-1, gamma=0, reduction="mean")
    torch.testing.assert_close(sig(x, torch.tensor([[1.0, 0.0]])),
                               torch.nn.functional.binary_cross_entropy_with_logits(
                                   x, torch.tensor([[1.0, 0.0]])))
