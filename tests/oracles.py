"""The two oracles every scratchnet op is checked against.

1. torch.nn + torch.autograd (the parity contract):
   - float64: relative 1e-12. Elements that come out near zero by cancellation
     have no meaningful relative error, so the absolute floor is 1e-12 times the
     largest magnitude in the expected tensor (its scale), never a fixed number.
   - float32: ``torch.testing.assert_close`` defaults (rtol 1.3e-6, atol 1e-5).
2. Central finite differences in float64 (not torch.autograd):
   d⟨dout, f(x)⟩/dx_i ≈ (⟨dout, f(x + h e_i)⟩ − ⟨dout, f(x − h e_i)⟩) / 2h.
   The truncation error is O(h²·f‴) and the rounding error O(ε·|f|/h); with
   h = 1e-6 both are ~1e-10 relative for the smooth ops tested, so the check uses
   rtol 1e-5, atol 1e-6 · scale: loose enough for h, tight enough that a wrong
   factor, sign or missing term fails.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch

import scratchnet

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = [torch.float32, torch.float64]


@contextlib.contextmanager
def num_threads(threads: int) -> Iterator[None]:
    """torch.set_num_threads(threads) for the block, then the count before (some
    of torch's CPU kernels sum in an order that depends on the thread count)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def device_params():
    """pytest params for every device, CUDA skipping cleanly without a GPU."""
    import pytest

    return [
        pytest.param("cpu", id="cpu"),
        pytest.param("cuda", id="cuda", marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"),
        ]),
    ]


def assert_parity(actual: torch.Tensor | None, expected: torch.Tensor | None,
                  what: str = "") -> None:
    """scratchnet's tensor equals torch's within the parity contract above."""
    assert (actual is None) == (expected is None), (
        f"{what}: one side is None (scratchnet {actual is None}, torch {expected is None})")
    if actual is None:
        return
    actual = scratchnet.autodiff.plain(actual).detach()
    expected = expected.detach()
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if expected.dtype == torch.float64:
        finite = expected[torch.isfinite(expected)]
        scale = finite.abs().max().item() if finite.numel() else 0.0
        torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12 * scale,
                                   equal_nan=True, msg=lambda m: f"{what} (float64): {m}")
    else:
        torch.testing.assert_close(actual, expected, equal_nan=True,
                                   msg=lambda m: f"{what} ({expected.dtype}): {m}")


def finite_difference_vjp(f: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor],
                          dout: torch.Tensor, h: float = 1e-6) -> list[torch.Tensor]:
    """d⟨dout, f(*inputs)⟩ / d input, for every input, by central differences in
    float64. ``f`` takes and returns plain float64 tensors."""
    inputs = [x.detach().to(torch.float64).clone() for x in inputs]
    dout = dout.to(torch.float64)

    def objective() -> float:
        with scratchnet.no_grad():
            out = f(*inputs)
        return float((scratchnet.autodiff.plain(out) * dout).sum())

    grads = []
    for x in inputs:
        g = torch.zeros_like(x)
        flat_x, flat_g = x.view(-1), g.view(-1)
        for i in range(flat_x.numel()):
            original = flat_x[i].item()
            flat_x[i] = original + h
            up = objective()
            flat_x[i] = original - h
            down = objective()
            flat_x[i] = original
            flat_g[i] = (up - down) / (2 * h)
        grads.append(g)
    return grads


def assert_close_to_finite_differences(actual: torch.Tensor, numeric: torch.Tensor,
                                       what: str = "") -> None:
    actual = scratchnet.autodiff.plain(actual).detach().to(torch.float64)
    scale = max(numeric.abs().max().item(), 1.0) if numeric.numel() else 1.0
    torch.testing.assert_close(actual, numeric, rtol=1e-5, atol=1e-6 * scale,
                               msg=lambda m: f"{what} vs central differences: {m}")


def scratchnet_grads(f: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor],
                     dout: torch.Tensor) -> list[torch.Tensor | None]:
    """Run f on tape leaves made from ``inputs`` and backpropagate ``dout``
    through scratchnet's tape; returns (output, [d input ...])."""
    leaves = [scratchnet.leaf(x.detach().clone()) for x in inputs]
    out = f(*leaves)
    grads = scratchnet.grad(out, leaves, dout)
    return out, grads


def torch_grads(f: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor],
                dout: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """The same through torch.autograd (the first oracle)."""
    leaves = [x.detach().clone().requires_grad_(True) for x in inputs]
    out = f(*leaves)
    grads = torch.autograd.grad(out, leaves, dout, allow_unused=True)
    return out, list(grads)
