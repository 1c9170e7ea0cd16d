"""The one exception family scratchnet raises for bad input, and the two
argument checks (``check_tensor``, ``check_real``) that every layer, loss and
optimizer shares.

Every message names where the problem is (a layer's dotted path such as
``linear_relu_stack.0``, an optimizer, a file), what was expected and what came.
Each class also derives from the built-in exception a torch user would catch
(``ValueError``, ``TypeError``, ``RuntimeError``), so ``except ValueError`` keeps
working.
"""


class ScratchnetError(Exception):
    """Base of every error scratchnet raises on purpose."""


class ShapeError(ScratchnetError, ValueError):
    """A tensor's shape does not fit the layer, loss or op it was given to."""


class DTypeError(ScratchnetError, TypeError):
    """A tensor's dtype does not match the parameters or the op."""


class DeviceError(ScratchnetError, RuntimeError):
    """A tensor lives on another device than the parameters it meets."""


class TargetError(ScratchnetError, ValueError):
    """Class targets out of range, or of the wrong kind for the loss."""


class BackwardError(ScratchnetError, RuntimeError):
    """``backward`` called with nothing recorded, twice on a freed tape, or on a
    tensor that does not depend on anything scratchnet tracks."""


class NotDifferentiableError(ScratchnetError, RuntimeError):
    """A torch operation without a scratchnet backward was applied to a tensor on
    scratchnet's tape; its gradient would silently be lost."""


class StateDictError(ScratchnetError, RuntimeError):
    """A state_dict with missing, unexpected or wrongly shaped entries."""


class OptionError(ScratchnetError, ValueError):
    """A hyperparameter or option outside its valid range."""


class DataError(ScratchnetError, ValueError):
    """A data file that is missing, truncated or corrupt."""


class CheckpointError(ScratchnetError, ValueError):
    """A checkpoint that is corrupt, truncated or from another architecture."""


class ArgumentTypeError(ScratchnetError, TypeError):
    """An argument of the wrong Python type: a list where a layer or loss needs a
    tensor, a string where an optimizer needs a number."""


class AnomalyError(ScratchnetError, RuntimeError):
    """Raised inside :func:`scratchnet.debug.detect_anomaly`: a layer's output or an
    op's gradient holds NaN or Inf. The message names the layer path (or op) and
    the first batch index (row) holding a non-finite value."""


def check_tensor(where: str, name: str, value: object) -> None:
    """Raise :class:`ArgumentTypeError` unless ``value`` is a ``torch.Tensor``
    (``where``: the function, e.g. ``"linear"``; ``name``: the argument)."""
    import torch  # here, so that importing the exceptions alone stays cheap

    if not isinstance(value, torch.Tensor):
        raise ArgumentTypeError(f"{where}: {name} must be a torch.Tensor, got "
                                f"{type(value).__name__}")


def check_real(where: str, name: str, value: object) -> None:
    """Raise :class:`ArgumentTypeError` unless ``value`` is a real Python number
    (an int or float; a bool is refused: it is a flag, not a number)."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{where}: {name} must be a real number, got "
                                f"{type(value).__name__} {value!r}")
