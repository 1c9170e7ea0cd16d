"""Hypothesis strategies shared by the tests (minitorch's tests/strategies.py).

Tensors are drawn as (shape, seed, scale) and filled from a seeded torch
generator: far faster than drawing every element, still shrinkable.
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st

dtypes = st.sampled_from([torch.float32, torch.float64])


@st.composite
def shapes(draw, min_dims: int = 1, max_dims: int = 4, min_side: int = 1,
           max_side: int = 6) -> tuple[int, ...]:
    """Shapes with size-1 dimensions well represented."""
    rank = draw(st.integers(min_dims, max_dims))
    return tuple(draw(st.one_of(st.just(1), st.integers(min_side, max_side)))
                 if min_side <= 1 else draw(st.integers(min_side, max_side))
                 for _ in range(rank))


scales = st.sampled_from([1e-3, 1.0, 10.0, 1e2, 1e4])


@st.composite
def tensors(draw, shape: tuple[int, ...] | None = None, dtype: torch.dtype | None = None,
            scale: float | None = None, device: str = "cpu") -> torch.Tensor:
    """A tensor of normal values times ``scale`` (drawn up to 1e4 if not given)."""
    if shape is None:
        shape = draw(shapes())
    if dtype is None:
        dtype = draw(dtypes)
    if scale is None:
        scale = draw(scales)
    seed = draw(st.integers(0, 2**31 - 1))
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(shape, generator=generator, dtype=torch.float64) * scale
    return values.to(dtype=dtype, device=device)


def seeded(shape: tuple[int, ...], seed: int, dtype: torch.dtype = torch.float64,
           scale: float = 1.0, device: str = "cpu") -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=generator, dtype=torch.float64) * scale).to(
        dtype=dtype, device=device)
