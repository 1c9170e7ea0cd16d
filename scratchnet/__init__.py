"""scratchnet: torch.nn rebuilt from raw tensor ops, every derivative written by
hand, proven equal to torch.nn.

    from scratchnet import nn
    import scratchnet.nn.functional as F
    import scratchnet.optim as optim
"""

# tensor_ops registers torch ops on tape tensors (x + y, x @ w, x[0], ...)
from scratchnet import debug, errors, optim, tensor_ops
from scratchnet.autodiff import Tensor, enable_grad, grad, is_recording, leaf, no_grad

__version__ = "0.1.0"

__all__ = ["Tensor", "debug", "enable_grad", "errors", "grad", "is_recording", "leaf", "no_grad",
           "optim", "tensor_ops"]
