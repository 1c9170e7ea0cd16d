"""scratchnet.nn: torch.nn's names and behaviour, with hand-written backward.

    from scratchnet import nn
    import scratchnet.nn.functional as F
"""

from scratchnet.nn import functional, init
from scratchnet.nn.modules.activation import ReLU
from scratchnet.nn.modules.container import ModuleList, Sequential
from scratchnet.nn.modules.flatten import Flatten
from scratchnet.nn.modules.linear import Identity, Linear
from scratchnet.nn.modules.module import Module
from scratchnet.nn.parameter import Parameter

__all__ = [
    "Flatten", "Identity", "Linear", "Module", "ModuleList", "Parameter", "ReLU",
    "Sequential", "functional", "init",
]
