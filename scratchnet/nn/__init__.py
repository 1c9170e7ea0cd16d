"""scratchnet.nn: torch.nn's names and behaviour, with hand-written backward.

    from scratchnet import nn
    import scratchnet.nn.functional as F
"""

from scratchnet.nn import functional, init
from scratchnet.nn.modules.activation import (
    GELU,
    LeakyReLU,
    LogSoftmax,
    ReLU,
    Sigmoid,
    Softmax,
    Step,
    Tanh,
)
from scratchnet.nn.modules.batchnorm import BatchNorm1d
from scratchnet.nn.modules.container import ModuleList, Sequential
from scratchnet.nn.modules.dropout import Dropout
from scratchnet.nn.modules.flatten import Flatten
from scratchnet.nn.modules.linear import Identity, Linear
from scratchnet.nn.modules.loss import CrossEntropyLoss, MSELoss, NLLLoss
from scratchnet.nn.modules.module import Module
from scratchnet.nn.parameter import Parameter

__all__ = [
    "BatchNorm1d",
    "CrossEntropyLoss", "MSELoss", "NLLLoss",
    "Flatten", "Identity", "Linear", "Module", "ModuleList", "Parameter", "ReLU",
    "Sequential", "functional", "init",
    "Dropout", "GELU", "LeakyReLU", "LogSoftmax", "Sigmoid", "Softmax", "Step", "Tanh",
]
