"""scratchnet.optim: torch.optim's SGD, Adam and AdamW, same names, defaults,
state and state_dict layout, each update written out as a small function.

    import scratchnet.optim as optim
    optimizer = optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
"""

from scratchnet.optim.adam import Adam, adam_update
from scratchnet.optim.adamw import AdamW
from scratchnet.optim.optimizer import Optimizer
from scratchnet.optim.sgd import SGD, sgd_update

__all__ = ["SGD", "Adam", "AdamW", "Optimizer", "adam_update", "sgd_update"]
