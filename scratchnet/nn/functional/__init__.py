"""scratchnet.nn.functional: the ops, each a forward and its hand-written
backward side by side (mirrors ``torch.nn.functional``).

The modules in :mod:`scratchnet.nn` are thin wrappers over these functions.
"""

from scratchnet.nn.functional.activation import (
    gelu,
    leaky_relu,
    relu,
    sigmoid,
    step,
    tanh,
)
from scratchnet.nn.functional.batchnorm import batch_norm
from scratchnet.nn.functional.dropout import dropout
from scratchnet.nn.functional.linear import linear
from scratchnet.nn.functional.loss import cross_entropy, mse_loss, nll_loss
from scratchnet.nn.functional.shape import flatten, reshape
from scratchnet.nn.functional.softmax import log_softmax, softmax

__all__ = ["batch_norm",
           "cross_entropy", "mse_loss", "nll_loss", "flatten", "linear", "relu", "reshape",
           "dropout", "gelu", "leaky_relu", "log_softmax", "sigmoid", "softmax", "step",
           "tanh"]
