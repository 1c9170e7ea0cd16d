"""scratchnet.nn.utils: helpers around modules' parameters (torch.nn.utils'
place). :class:`FlatParameters` lays a module's parameters and gradients out in
one flat buffer each."""

from scratchnet.nn.utils.flat import (
    Bucket,
    FlatParameters,
    ParameterSlot,
    contiguous_span,
)

__all__ = ["Bucket", "FlatParameters", "ParameterSlot", "contiguous_span"]
