"""scratchnet.nn.functional: the ops, each a forward and its hand-written
backward side by side (mirrors ``torch.nn.functional``).

The modules in :mod:`scratchnet.nn` are thin wrappers over these functions.
"""

from scratchnet.nn.functional.activation import relu
from scratchnet.nn.functional.linear import linear
from scratchnet.nn.functional.shape import flatten, reshape

__all__ = ["flatten", "linear", "relu", "reshape"]
