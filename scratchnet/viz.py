"""Pictures the seed tutorials draw, written to PNG with matplotlib (Agg backend:
no display needed).

- :func:`view_classify`: seed 004's ``helper.view_classify(img, ps)``, an image
  beside a horizontal bar chart of the class probabilities a network gave it.
- :func:`plot_activations`: seed 000's activation functions (binary step, sigmoid,
  tanh, ReLU), each with its derivative. The derivatives are not typed in again
  here: :func:`activation_curves` runs each scratchnet op forward on a leaf and
  asks the tape for d out / d x, so the dashed curves are exactly what the
  hand-written backwards in :mod:`scratchnet.nn.functional.activation` compute.

C = classes, H, W = image height and width, P = points on the x axis.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from scratchnet.autodiff import grad, leaf, plain
from scratchnet.errors import OptionError, ShapeError
from scratchnet.nn import functional as F

# --------------------------------------------------------------------------------------
# view_classify (seed 004)


def _image_pixels(image: torch.Tensor) -> torch.Tensor:
    """``image`` as an (H, W) CPU float tensor: (H, W), (1, H, W) and a flat
    square (H·W,) are accepted; ``image`` itself is not changed (Udacity's helper
    called ``img.resize_`` on it)."""
    pixels = plain(image).detach().cpu().float()
    if pixels.dim() == 3 and pixels.shape[0] == 1:
        pixels = pixels[0]  # (H, W)
    elif pixels.dim() == 1 and math.isqrt(pixels.numel()) ** 2 == pixels.numel() > 0:
        side = math.isqrt(pixels.numel())
        pixels = pixels.view(side, side)  # (H, W)
    if pixels.dim() != 2 or pixels.numel() == 0:
        raise ShapeError(f"view_classify: expected an image (H, W), (1, H, W) or a flat "
                         f"square (H*W,), got shape {tuple(image.shape)}")
    return pixels


def _class_probabilities(probabilities: torch.Tensor) -> torch.Tensor:
    """``probabilities`` as a (C,) CPU float tensor: (C,) or one row (1, C),
    each value in [0, 1]."""
    given = plain(probabilities).detach()
    values = given.cpu().double()
    if values.dim() == 2 and values.shape[0] == 1:
        values = values[0]  # (C,)
    if values.dim() != 1 or values.numel() == 0:
        raise ShapeError(f"view_classify: expected probabilities (C,) or (1, C) for one "
                         f"image, got shape {tuple(probabilities.shape)}")
    # a softmax output may pass 1 by a few roundings of its dtype, never by more
    slack = 8 * torch.finfo(given.dtype).eps if given.is_floating_point() else 0.0
    if not bool(((values >= -slack) & (values <= 1 + slack)).all()):
        raise OptionError(f"view_classify: probabilities must lie in [0, 1] (pass "
                          f"softmax(logits), not logits), got values from "
                          f"{values.min().item():.4g} to {values.max().item():.4g}")
    return values


def view_classify(image: torch.Tensor, probabilities: torch.Tensor,
                  path: str | os.PathLike = "view_classify.png",
                  class_names: Sequence[str] | None = None,
                  title: str = "Class Probability") -> Path:
    """Draw ``image`` beside a horizontal bar chart of ``probabilities`` and write
    it as a PNG (seed 004's ``helper.view_classify(img, ps)``).

    Args:
        image: one grayscale image, (H, W), (1, H, W) or flat (H·W,), e.g.
            ``img.view(1, 28, 28)``. May be on scratchnet's tape or need grad.
        probabilities: the network's output for it, (C,) or (1, C), in [0, 1].
        path: where the PNG goes (its folder is created).
        class_names: one label per class, top to bottom (default "0" … "C−1").
        title: the bar chart's title.

    Returns:
        ``path``.

    Raises:
        ShapeError: an image or probabilities of another shape, or class_names
            of another length than C.
        OptionError: a probability outside [0, 1].
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pixels = _image_pixels(image)  # (H, W)
    values = _class_probabilities(probabilities)  # (C,)
    num_classes = values.numel()
    if class_names is None:
        class_names = [str(label) for label in range(num_classes)]
    if len(class_names) != num_classes:
        raise ShapeError(f"view_classify: {len(class_names)} class names for "
                         f"{num_classes} probabilities")

    figure, (image_axes, bar_axes) = plt.subplots(figsize=(6, 9), ncols=2, dpi=100)
    image_axes.imshow(pixels.numpy(), cmap="gray")
    image_axes.axis("off")
    bar_axes.barh(range(num_classes), values.numpy())
    bar_axes.set_aspect(0.1)
    bar_axes.set_yticks(range(num_classes))
    bar_axes.set_yticklabels(class_names)
    bar_axes.set_title(title)
    bar_axes.set_xlim(0, 1.1)
    figure.tight_layout()
    return _save(figure, path)


def _save(figure: object, path: str | os.PathLike) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    plt.close(figure)
    return path


# --------------------------------------------------------------------------------------
# activation functions and their derivatives (seed 000)

# name, scratchnet op, formula as seed 000 writes it
ACTIVATIONS: tuple[tuple[str, Callable[[torch.Tensor], torch.Tensor], str], ...] = (
    ("binary step", F.step, r"$f(x) = 0$ if $x < 0$, $1$ if $x \geq 0$"),
    ("sigmoid", F.sigmoid, r"$f(x) = \frac{1}{1 + e^{-x}}$"),
    ("tanh", F.tanh, r"$f(x) = \frac{e^{x} - e^{-x}}{e^{x} + e^{-x}}$"),
    ("ReLU", F.relu, r"$f(x) = 0$ if $x < 0$, $x$ if $x \geq 0$"),
)


def activation_curves(x: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Each of seed 000's activations and its derivative at the points ``x``.

    The derivative comes from scratchnet's tape: ``out = f(x)`` on a leaf, then
    ``scratchnet.grad(out, [x], grad_output=ones)``. Every op here is
    element-wise, so d(Σ out)/dx_i = f'(x_i): the vector-Jacobian product with
    ones is the derivative itself.

    Args:
        x: (P,) points, floating point.

    Returns:
        ``{name: (out, dout_dx)}``, both (P,) plain tensors.
    """
    curves = {}
    for name, activation, _ in ACTIVATIONS:
        x_leaf = leaf(x.clone())  # (P,), on the tape
        out = activation(x_leaf)  # (P,)
        (derivative,) = grad(out, [x_leaf], grad_output=torch.ones_like(x))  # (P,)
        curves[name] = (plain(out).detach().clone(), derivative)
    return curves


def plot_activations(path: str | os.PathLike = "activations.png",
                     x_min: float = -5.0, x_max: float = 5.0,
                     points: int = 1001) -> Path:
    """Draw seed 000's four activations (solid) with their derivatives (dashed),
    one panel each, and write a PNG.

    Args:
        path: where the PNG goes (its folder is created).
        x_min, x_max: the x range drawn (x = 0 is included when it lies inside).
        points: P, the number of x values (at least 2).

    Returns:
        ``path``.
    """
    if not (math.isfinite(x_min) and math.isfinite(x_max) and x_min < x_max):
        raise OptionError(f"plot_activations: need finite x_min < x_max, got "
                          f"{x_min}, {x_max}")
    if points < 2:
        raise OptionError(f"plot_activations: need at least 2 points, got {points}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = torch.linspace(x_min, x_max, points, dtype=torch.float64)  # (P,)
    if x_min < 0 < x_max:  # draw the kink of ReLU and the jump of the step at 0
        x = torch.cat([x, torch.zeros(1, dtype=x.dtype)]).unique()  # sorted
    curves = activation_curves(x)
    figure, grid = plt.subplots(2, 2, figsize=(10, 8), dpi=100)
    for axes, (name, _, formula) in zip(grid.flat, ACTIVATIONS, strict=True):
        out, derivative = curves[name]
        axes.plot(x.numpy(), out.numpy(), "-", color="tab:blue", label="f(x)")
        axes.plot(x.numpy(), derivative.numpy(), "--", color="tab:orange",
                  label="f'(x) (scratchnet backward)")
        axes.axhline(0, color="black", linewidth=0.5)
        axes.axvline(0, color="black", linewidth=0.5)
        if name == "binary step":
            axes.text(0.98, 0.5, "f'(x) = 0 for x ≠ 0, undefined at 0;\nthe backward "
                      "returns 0 everywhere", transform=axes.transAxes, ha="right",
                      fontsize=8)
        axes.set(title=f"{name}: {formula}", xlabel="x")
        axes.grid(alpha=0.3)
        axes.legend(loc="upper left")
    figure.suptitle("Seed 000's activation functions and their derivatives")
    figure.tight_layout()
    return _save(figure, path)
