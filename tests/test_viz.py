"""scratchnet/viz.py: view_classify's and plot_activations' PNGs open, have the
size they should and show what they say; the activation derivatives are the
ones scratchnet's backward computes (checked against torch.autograd, and by
swapping a backward out); bad input raises scratchnet's errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scratchnet import cli, nn
from scratchnet.errors import OptionError, ShapeError
from scratchnet.nn.functional.activation import Sigmoid
from scratchnet.viz import activation_curves, plot_activations, view_classify

BAR_BLUE = np.array([0.122, 0.467, 0.706])  # matplotlib's default bar colour, tab:blue


def read_png(path) -> np.ndarray:
    import matplotlib.image

    pixels = matplotlib.image.imread(path)  # (H, W, 4) floats in [0, 1]
    assert pixels.ndim == 3 and pixels.shape[2] == 4, f"not an RGBA PNG: {pixels.shape}"
    return pixels[:, :, :3]  # (H, W, 3)


def blue_pixels(pixels: np.ndarray) -> np.ndarray:
    """(row, column) of every pixel drawn in the bars' colour."""
    return np.argwhere(np.abs(pixels - BAR_BLUE).max(axis=2) < 0.02)


def white_square_image() -> torch.Tensor:
    image = torch.zeros(1, 28, 28)
    image[0, 8:20, 8:20] = 1.0
    return image


# --------------------------------------------------------------------------------------
# view_classify


def test_view_classify_writes_the_image_beside_the_bars(tmp_path):
    probabilities = torch.full((1, 10), 0.1)
    path = view_classify(white_square_image(), probabilities, path=tmp_path / "a.png")
    pixels = read_png(path)
    assert pixels.shape == (900, 600, 3), "figsize (6, 9) at 100 dpi, as seed 004's"
    left = pixels[:, :300]
    assert (left.max(axis=2) > 0.95).any() and (left.max(axis=2) < 0.05).any(), (
        "the image (white square on black) is not on the left")
    bars = blue_pixels(pixels)
    assert len(bars) > 500, "no bars drawn"
    assert bars[:, 1].min() >= 300, "bars belong on the right"


def test_view_classify_bar_follows_the_probable_class(tmp_path):
    """One-hot at class 0 draws a long bar at the bottom, at class 9 at the top
    (barh puts class 0 lowest, as the seed's helper)."""
    rows = {}
    for label in (0, 9):
        probabilities = torch.zeros(10)
        probabilities[label] = 1.0
        bars = blue_pixels(read_png(view_classify(
            white_square_image(), probabilities, path=tmp_path / f"{label}.png")))
        rows[label] = bars[:, 0].mean()
        width = bars[:, 1].max() - bars[:, 1].min()
        assert width > 150, f"class {label}: a probability of 1 drew a short bar"
    assert rows[0] > rows[9] + 100, f"bar rows (from the top): {rows}"


def test_view_classify_takes_what_the_seed_passes(tmp_path):
    """Seed 004 passes ``img.view(1, 28, 28)`` and a model's output (on
    scratchnet's tape, or requiring grad in torch); a flat image works too and
    is not resized in place (Udacity's helper did ``img.resize_``)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 10), nn.Softmax(dim=1))
    flat_image = torch.rand(784)
    probabilities = model.forward(flat_image.view(1, 784))  # (1, 10), on the tape
    torch_probabilities = torch.softmax(torch.randn(1, 10, requires_grad=True), dim=1)
    for name, image, ps in (("tape", flat_image, probabilities),
                            ("requires_grad", flat_image.view(1, 28, 28),
                             torch_probabilities)):
        path = view_classify(image, ps, path=tmp_path / f"{name}.png",
                             class_names=[f"class {i}" for i in range(10)])
        assert read_png(path).std() > 0.05, f"{name}: blank"
    assert flat_image.shape == (784,)


@pytest.mark.parametrize(("image", "probabilities", "class_names", "error"), [
    (torch.rand(3, 28, 28), torch.full((10,), 0.1), None, ShapeError),
    (torch.rand(783), torch.full((10,), 0.1), None, ShapeError),
    (torch.rand(28, 28), torch.full((2, 10), 0.1), None, ShapeError),
    (torch.rand(28, 28), torch.full((10,), 0.1), ["a", "b"], ShapeError),
    (torch.rand(28, 28), torch.randn(10) * 5, None, OptionError),  # logits
], ids=["three channels", "not square", "two rows", "names", "logits"])
def test_view_classify_refuses_bad_input(tmp_path, image, probabilities, class_names,
                                         error):
    with pytest.raises(error, match="view_classify"):
        view_classify(image, probabilities, path=tmp_path / "x.png",
                      class_names=class_names)
    assert not (tmp_path / "x.png").exists()


# --------------------------------------------------------------------------------------
# activations and their derivatives


def test_activation_derivatives_equal_torch_autograd():
    """float64: the scratchnet backward's derivative against torch.autograd's, at
    the parity tolerance (rtol 1e-12); the step's is 0 everywhere."""
    x = torch.linspace(-6, 6, 241, dtype=torch.float64)  # includes 0
    curves = activation_curves(x)
    references = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "ReLU": torch.relu}
    for name, reference in references.items():
        x_autograd = x.clone().requires_grad_()
        out = reference(x_autograd)
        (derivative,) = torch.autograd.grad(out.sum(), [x_autograd])
        torch.testing.assert_close(curves[name][0], out.detach(), rtol=1e-12, atol=0,
                                   msg=f"{name} forward")
        torch.testing.assert_close(curves[name][1], derivative, rtol=1e-12, atol=0,
                                   msg=f"{name} derivative")
    step_out, step_derivative = curves["binary step"]
    assert torch.equal(step_out, (x >= 0).double())
    assert torch.equal(step_derivative, torch.zeros_like(x))


def test_activation_derivatives_come_from_the_backward(monkeypatch):
    """Swap Sigmoid's backward for one that returns 7 · dout: the plotted
    derivative follows, so it is not a formula typed in again."""
    monkeypatch.setattr(Sigmoid, "backward", staticmethod(lambda ctx, dout: (7 * dout,)))
    x = torch.linspace(-1, 1, 5, dtype=torch.float64)
    assert torch.equal(activation_curves(x)["sigmoid"][1], torch.full_like(x, 7.0))


def test_plot_activations_draws_four_panels(tmp_path):
    pixels = read_png(plot_activations(tmp_path / "act.png"))
    assert pixels.shape == (800, 1000, 3), "figsize (10, 8) at 100 dpi"
    drawn = pixels.min(axis=2) < 0.9  # (H, W), not white
    for quarter in (drawn[:400, :500], drawn[:400, 500:], drawn[400:, :500],
                    drawn[400:, 500:]):
        assert 0.02 < quarter.mean() < 0.6, "a panel is blank or filled"


@pytest.mark.parametrize(("options", "match"), [
    ({"x_min": 1.0, "x_max": 1.0}, "x_min < x_max"),
    ({"x_min": float("nan")}, "x_min < x_max"),
    ({"points": 1}, "at least 2 points"),
])
def test_plot_activations_refuses_bad_options(tmp_path, options, match):
    with pytest.raises(OptionError, match=match):
        plot_activations(tmp_path / "act.png", **options)


def test_cli_plot_activations(tmp_path, capsys):
    out = tmp_path / "plots" / "activations.png"
    assert cli.main(["plot-activations", "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert read_png(out).std() > 0.05
