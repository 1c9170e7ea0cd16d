"""scratchnet.debug.detect_anomaly: the first layer whose output, or op whose
gradient, holds NaN or Inf is named with its batch index; clean runs are left
exactly as they are; the hooks are gone after the block.

Model: flatten → linear_relu_stack (Linear 784→32, ReLU, Linear 32→10), the seed
NeuralNetwork's layout at a small size. B = 4.
"""

from collections import OrderedDict

import pytest
import torch

import scratchnet
import scratchnet.nn.functional as F
from scratchnet import autodiff, nn
from scratchnet.debug import detect_anomaly, first_bad_row
from scratchnet.errors import AnomalyError, ScratchnetError


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(
        flatten=nn.Flatten(),
        linear_relu_stack=nn.Sequential(nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10)),
    ))


def batch(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(1),
                       dtype=dtype)  # (B, 1, 28, 28)


class SqrtLayer(nn.Module):
    """√x: its gradient 1 / (2√x) is inf where x = 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(x)


class ModelWithOpsInForward(nn.Module):
    """A layer, then torch ops in the model's own forward (no module of their own)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(self.fc(x))  # log of a negative number is nan


# --------------------------------------------------------------------------------------
# forward


def test_nan_in_the_data_is_blamed_on_the_input_with_its_batch_index():
    x = batch()
    x[3, 0, 5, 5] = float("nan")
    with pytest.raises(AnomalyError) as caught, detect_anomaly():
        mlp()(x)
    message = str(caught.value)
    assert message.startswith("detect_anomaly: forward: the input 0 of flatten (Flatten)")
    assert "shape (4, 1, 28, 28)" in message and "batch index 3" in message, message
    assert "from the data" in message, message


@pytest.mark.parametrize("bad_row", [0, 2])
def test_overflow_is_blamed_on_the_first_layer_that_makes_it(bad_row):
    """A finite but huge input row overflows in the first Linear: that layer, not a
    later one, and that row are named."""
    x = batch()
    x[bad_row] = 3e38  # finite in float32; 784 · 3e38 · |w| is not
    with pytest.raises(AnomalyError) as caught, detect_anomaly():
        mlp()(x)
    message = str(caught.value)
    assert "linear_relu_stack.0 (Linear) returned an output of shape (4, 32)" in message
    assert f"first at batch index {bad_row}," in message, message
    assert "from finite inputs" in message and "parameter" not in message, message


def test_an_inf_weight_is_named_with_its_layer():
    model = mlp()
    with scratchnet.no_grad():
        model.linear_relu_stack[2].weight[3, 5] = float("inf")
    with pytest.raises(AnomalyError, match=r"linear_relu_stack\.2 \(Linear\).*"
                                           r"parameter\(s\) weight hold non-finite"):
        with detect_anomaly():
            model(batch())


def test_ops_in_a_models_own_forward_are_blamed_on_that_model():
    model = ModelWithOpsInForward()
    x = torch.ones(2, 3)
    with scratchnet.no_grad():
        model.fc.weight.fill_(0.0)
        model.fc.bias.copy_(torch.tensor([1.0, -1.0, 1.0]))  # log(-1) = nan
    with pytest.raises(AnomalyError) as caught, detect_anomaly():
        model(x)
    message = str(caught.value)
    assert "forward: ModelWithOpsInForward returned an output of shape (2, 3) " \
           "holding nan, first at batch index 0, from finite inputs" in message, message


def test_the_message_is_not_prefixed_again_by_outer_modules():
    model = nn.Sequential(nn.Sequential(nn.Linear(2, 2)))
    with scratchnet.no_grad():
        model[0][0].bias.fill_(float("-inf"))
    with pytest.raises(AnomalyError) as caught, detect_anomaly():
        model(torch.ones(3, 2))
    assert str(caught.value).startswith("detect_anomaly: forward: 0.0 (Linear)"), \
        str(caught.value)
    assert caught.value.layer_path == "0.0"


# --------------------------------------------------------------------------------------
# backward


def test_inf_gradient_names_the_op_its_layer_and_the_row():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), SqrtLayer(), nn.Linear(3, 1))
    x = torch.ones(4, 3)
    x[1] = -1.0
    with scratchnet.no_grad():
        model[0].weight.copy_(torch.eye(3))
        model[0].bias.fill_(0.0)  # row 1: relu(−1) = 0, √0 = 0, d√/dx = inf
    with detect_anomaly():
        loss = model(x).sum()  # forward values are all finite
        with pytest.raises(AnomalyError) as caught:
            loss.backward()
    message = str(caught.value)
    assert message.startswith("detect_anomaly: backward: the backward of op Sqrt (in "
                              "layer 2) returned a gradient for its input 0 of shape "
                              "(4, 3) holding inf, first at batch index (row) 1"), message


def test_gradient_of_an_op_in_a_models_own_forward_names_that_model():
    model = ModelWithOpsInForward()
    with scratchnet.no_grad():
        model.fc.weight.fill_(0.0)
        model.fc.bias.fill_(0.0)  # log(0) = −inf: caught in the forward already
    with pytest.raises(AnomalyError, match="forward: ModelWithOpsInForward"):
        with detect_anomaly():
            model(torch.ones(2, 3))
    with scratchnet.no_grad():
        model.fc.bias.fill_(1e-45)  # log(1e-45) finite, d log / dx = 1/x overflows
    with detect_anomaly():
        out = model(torch.ones(2, 3)).sum()
        with pytest.raises(AnomalyError, match=r"op Log \(in layer "
                                               r"ModelWithOpsInForward\).*row\) 0"):
            out.backward()


def test_nan_gradient_from_the_caller_is_caught_at_the_first_op():
    model = mlp()
    with detect_anomaly():
        out = model(batch())  # (4, 10)
        gradient = torch.zeros(4, 10)
        gradient[2, 7] = float("nan")
        with pytest.raises(AnomalyError, match=r"op Linear \(in layer linear_relu_stack"
                                               r"\.2\).*\(4, 32\) holding nan, first at "
                                               r"batch index \(row\) 2"):
            out.backward(gradient)


# --------------------------------------------------------------------------------------
# clean runs and the switch


def test_a_clean_step_is_unchanged_inside_the_block():
    x, y = batch(torch.float64), torch.tensor([1, 2, 3, 4])
    grads = []
    for anomaly_mode in (False, True):
        model = mlp().double()
        with detect_anomaly() if anomaly_mode else scratchnet.enable_grad():
            loss = F.cross_entropy(model(x), y)
            loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for plain_grad, checked_grad in zip(*grads, strict=True):
        assert torch.equal(plain_grad, checked_grad)


def test_outside_the_block_nothing_is_checked_and_the_hooks_are_restored():
    model = mlp()
    x = batch()
    x[0, 0, 0, 0] = float("nan")
    assert torch.isnan(model(x)).any()  # no check outside the block
    with pytest.raises(AnomalyError), detect_anomaly(), detect_anomaly():
        model(x)  # nested, and left by an exception
    assert autodiff.Anomaly.forward_check is None
    assert autodiff.Anomaly.backward_check is None


def test_works_as_a_decorator_and_is_a_scratchnet_runtime_error():
    @detect_anomaly()
    def forward(x: torch.Tensor) -> torch.Tensor:
        return mlp()(x)

    x = batch()
    x[1] = float("inf")
    with pytest.raises(RuntimeError) as caught:
        forward(x)
    assert isinstance(caught.value, ScratchnetError)
    assert isinstance(caught.value, AnomalyError)
    assert "batch index 1" in str(caught.value)


@pytest.mark.parametrize("values, row", [
    (torch.tensor(float("nan")), 0),
    (torch.tensor(1.0), None),
    (torch.zeros(0, 3), None),
    (torch.arange(6).reshape(3, 2), None),  # integers are always finite
    (torch.tensor([[1.0, 2.0], [3.0, float("-inf")], [float("nan"), 0.0]]), 1),
])
def test_first_bad_row(values, row):
    assert first_bad_row(values) == row
