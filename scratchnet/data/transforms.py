"""torchvision's ToTensor and Normalize for stacks of uint8 images, bit for bit.

N = images, H, W = height and width (28, 28), C = channels (1).

    ToTensor:   x = pixel / 255                       uint8 (N, H, W) -> float (N, 1, H, W)
    Normalize:  x = (x - mean) / std                  per channel

torchvision computes these on the CPU, one PIL image at a time
(torchvision/transforms/functional.py ``to_tensor``: ``img.to(float).div(255)``;
_functional_tensor.py ``normalize``: ``tensor.sub_(mean).div_(std)``).

A uint8 pixel has only 256 values, so ToTensor (+ Normalize) is a table of 256
floats, computed once on the CPU with torchvision's own formula, and converting a
batch on CUDA is one gather from that table (on the CPU the formula itself runs on
the batch: the same values, element for element, and faster). The values are
therefore identical on every device: on CUDA, ``x.div(255)`` is computed as
``x * (1/255)``, which differs from the CPU's true division in the last bit for
126 of the 256 pixel values (guarded by
tests/test_data.py::test_to_tensor_matches_torchvision).
"""

from collections.abc import Sequence

import torch

from scratchnet.errors import DTypeError, OptionError, ShapeError

PIXEL_LEVELS = 256  # a uint8 pixel is one of 0..255


def normalize(x: torch.Tensor, mean: float | Sequence[float],
              std: float | Sequence[float]) -> torch.Tensor:
    """torchvision's Normalize: x = (x - mean) / std, one mean and std per channel.

    Args:
        x: float images (..., C, H, W).
        mean, std: one number, or one per channel.

    Returns:
        a new tensor, same shape and dtype as ``x``.

    Raises:
        DTypeError: x is not floating point.  ShapeError: x has fewer than 3 dims.
        OptionError: a std is zero in x's dtype.
    """
    if not x.is_floating_point():
        raise DTypeError(f"normalize: expected float images, got {x.dtype}")
    if x.dim() < 3:
        raise ShapeError(f"normalize: expected images (..., C, H, W), got shape "
                         f"{tuple(x.shape)}")
    mean = torch.as_tensor(mean, dtype=x.dtype, device=x.device)
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device)
    if (std == 0).any():
        raise OptionError(f"normalize: std {std.tolist()} is zero in {x.dtype}; "
                          "it would divide by zero")
    if mean.dim() == 1:
        mean = mean.view(-1, 1, 1)  # (C, 1, 1)
    if std.dim() == 1:
        std = std.view(-1, 1, 1)  # (C, 1, 1)
    return x.sub(mean).div(std)  # (..., C, H, W)


def pixel_table(dtype: torch.dtype | None = None, mean: float | Sequence[float] | None = None,
                std: float | Sequence[float] | None = None) -> torch.Tensor:
    """What ToTensor (then Normalize, when mean and std are given) makes of each
    pixel value 0..255, computed on the CPU exactly as torchvision does.

    Returns:
        (256,) tensor of ``dtype`` (default: torch's default dtype, as ToTensor).
    """
    if (mean is None) != (std is None):
        raise OptionError(f"give both mean and std or neither, got mean={mean}, std={std}")
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if not dtype.is_floating_point:
        raise DTypeError(f"pixel values need a floating dtype, got {dtype}")
    pixels = torch.arange(PIXEL_LEVELS, dtype=torch.uint8).view(1, 1, PIXEL_LEVELS)
    return torchvision_formula(pixels, dtype, mean, std).view(PIXEL_LEVELS)  # (256,)


def torchvision_formula(images: torch.Tensor, dtype: torch.dtype,
                        mean: float | Sequence[float] | None = None,
                        std: float | Sequence[float] | None = None) -> torch.Tensor:
    """ToTensor, then Normalize when mean and std are given, as torchvision
    computes them: x = pixel / 255, then (x − mean) / std. uint8 (..., C, H, W)
    -> ``dtype``, same shape.

    On the CPU every element is one IEEE conversion, division (and subtraction
    and division), whatever SIMD lane it falls in, so this equals the gather from
    :func:`pixel_table` element for element — and is 4× faster on a batch than
    the gather (TensorLoader uses it there). On CUDA the division rounds
    differently (module docstring): there the table is the reference."""
    values = images.to(dtype).div_(255)  # ToTensor
    if mean is not None:
        values = normalize(values, mean, std)  # Normalize, per channel
    return values


def lookup_pixels(table: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Replace every uint8 pixel by ``table[pixel]``: images (*) -> (*) float.

    Plain formula: ``table[images.long()]``; index_select with int32 indices does
    the same gather without an int64 copy of the batch.
    """
    flat = table.index_select(0, images.reshape(-1).int())  # (numel,)
    return flat.view(images.shape)


def to_tensor(images: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """torchvision's ToTensor on a stack of grayscale images: x = pixel / 255.

    Args:
        images: uint8 (N, H, W), or one image (H, W).
        dtype: float dtype of the result (default: torch's default dtype, as ToTensor).

    Returns:
        (N, 1, H, W), or (1, H, W) for one image, values in [0, 1], on images' device,
        bit-identical to ToTensor()(PIL image) for every image.
    """
    if images.dtype != torch.uint8:
        raise DTypeError(f"to_tensor: expected uint8 images, got {images.dtype}")
    if images.dim() not in (2, 3):
        raise ShapeError(f"to_tensor: expected images (N, H, W) or one image (H, W), "
                         f"got shape {tuple(images.shape)}")
    if images.device.type == "cpu":
        dtype = torch.get_default_dtype() if dtype is None else dtype
        return torchvision_formula(images.unsqueeze(-3), dtype)  # (N, 1, H, W) or (1, H, W)
    table = pixel_table(dtype).to(images.device)  # (256,)
    return lookup_pixels(table, images).unsqueeze(-3)  # (N, 1, H, W) or (1, H, W)
