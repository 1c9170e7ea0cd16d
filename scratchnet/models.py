"""The seed tutorials' models, written once for any ``nn`` namespace.

``seed_models(nn, F)`` defines the classes exactly as the seeds write them;
called with ``scratchnet.nn`` it gives scratchnet's models, called with
``torch.nn`` it gives the oracle in ``reference/`` — same attribute names, so a
state_dict moves between the two unchanged, and the same ``print(model)``.

Seeds: 000/002/003 ``NeuralNetwork`` (FashionMNIST, 784-512-512-10 ReLU);
001 ``SimpleNN`` (784-512-256-10) and ``SingleLayerNN`` (784-256-10);
004 ``Network`` (hidden/output, Sigmoid + Softmax modules), its
``torch.nn.functional`` twin ``FunctionalNetwork``, ``FCNetwork``
(fc1/fc2/fc3 784-128-64-10 ReLU + softmax) and the ``nn.Sequential``
784-128-64-10 built by :func:`sequential_network`.
"""

from __future__ import annotations

from types import ModuleType, SimpleNamespace
from typing import Any


def seed_models(nn: ModuleType, F: ModuleType) -> SimpleNamespace:  # noqa: N803
    """The seed model classes built from ``nn`` (scratchnet.nn or torch.nn) and
    ``F`` (its functional module)."""

    class NeuralNetwork(nn.Module):
        """Seed 000: the PyTorch tutorial's FashionMNIST model."""

        def __init__(self):
            super().__init__()
            self.flatten = nn.Flatten()
            self.linear_relu_stack = nn.Sequential(
                nn.Linear(28 * 28, 512),
                nn.ReLU(),
                nn.Linear(512, 512),
                nn.ReLU(),
                nn.Linear(512, 10),
            )

        def forward(self, x):
            x = self.flatten(x)  # (B, 1, 28, 28) → (B, 784)
            logits = self.linear_relu_stack(x)  # (B, 10)
            return logits

    class SimpleNN(nn.Module):
        """Seed 001: 784-512-256-10 ReLU."""

        def __init__(self):
            super().__init__()
            self.flatten = nn.Flatten()
            self.linear_relu_stack = nn.Sequential(
                nn.Linear(28 * 28, 512),
                nn.ReLU(),
                nn.Linear(512, 256),
                nn.ReLU(),
                nn.Linear(256, 10),
            )

        def forward(self, x):
            x = self.flatten(x)
            logits = self.linear_relu_stack(x)
            return logits

    class SingleLayerNN(nn.Module):
        """Seed 001: one hidden layer, 784-256-10."""

        def __init__(self):
            super().__init__()
            self.flatten = nn.Flatten()
            self.linear_relu_stack = nn.Sequential(
                nn.Linear(28 * 28, 256),
                nn.ReLU(),
                nn.Linear(256, 10),
            )

        def forward(self, x):
            x = self.flatten(x)
            logits = self.linear_relu_stack(x)
            return logits

    class Network(nn.Module):
        """Seed 004: 784-256-10 with Sigmoid and Softmax modules; returns
        probabilities. Takes flattened input (B, 784)."""

        def __init__(self):
            super().__init__()
            self.hidden = nn.Linear(784, 256)
            self.output = nn.Linear(256, 10)
            self.sigmoid = nn.Sigmoid()
            self.softmax = nn.Softmax(dim=1)

        def forward(self, x):
            x = self.hidden(x)
            x = self.sigmoid(x)
            x = self.output(x)
            x = self.softmax(x)
            return x

    class FunctionalNetwork(nn.Module):
        """Seed 004: the same network with ``F.sigmoid`` / ``F.softmax``."""

        def __init__(self):
            super().__init__()
            self.hidden = nn.Linear(784, 256)
            self.output = nn.Linear(256, 10)

        def forward(self, x):
            x = F.sigmoid(self.hidden(x))
            x = F.softmax(self.output(x), dim=1)
            return x

    class FCNetwork(nn.Module):
        """Seed 004: fc1/fc2/fc3 784-128-64-10, ReLU, softmax output."""

        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(784, 128)
            self.fc2 = nn.Linear(128, 64)
            self.fc3 = nn.Linear(64, 10)

        def forward(self, x):
            x = F.relu(self.fc1(x))
            x = F.relu(self.fc2(x))
            x = F.softmax(self.fc3(x), dim=1)
            return x

    return SimpleNamespace(
        NeuralNetwork=NeuralNetwork, SimpleNN=SimpleNN, SingleLayerNN=SingleLayerNN,
        Network=Network, FunctionalNetwork=FunctionalNetwork, FCNetwork=FCNetwork,
    )


def sequential_network(nn: ModuleType) -> Any:
    """Seed 004's ``nn.Sequential`` 784-128-64-10 with a Softmax(dim=1) output."""
    input_size, hidden_sizes, output_size = 784, [128, 64], 10
    return nn.Sequential(nn.Linear(input_size, hidden_sizes[0]),
                         nn.ReLU(),
                         nn.Linear(hidden_sizes[0], hidden_sizes[1]),
                         nn.ReLU(),
                         nn.Linear(hidden_sizes[1], output_size),
                         nn.Softmax(dim=1))


ACTIVATIONS = ("relu", "sigmoid", "tanh", "leaky_relu", "gelu", "step")


def mlp_from_spec(nn: ModuleType, spec: str, activation: str = "relu") -> Any:
    """A Flatten + Linear/activation stack from a layer spec such as
    ``"784-512-512-10"`` (shaped like the seeds' ``linear_relu_stack``)."""
    from scratchnet.errors import OptionError

    try:
        sizes = [int(part) for part in spec.split("-")]
    except ValueError:
        raise OptionError(f"layer spec {spec!r}: expected sizes joined by '-', "
                          "like 784-512-512-10") from None
    if len(sizes) < 2 or any(size <= 0 for size in sizes):
        raise OptionError(f"layer spec {spec!r}: need at least two positive sizes "
                          "(input-output), like 784-512-512-10")
    if activation not in ACTIVATIONS:
        raise OptionError(f"unknown activation {activation!r}; choose one of "
                          f"{', '.join(ACTIVATIONS)}")
    make_activation = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh,
                       "leaky_relu": nn.LeakyReLU, "gelu": nn.GELU,
                       "step": getattr(nn, "Step", None)}[activation]
    if make_activation is None:
        raise OptionError(f"activation {activation!r} has no module in {nn.__name__}")
    layers = []
    for i, (d_in, d_out) in enumerate(zip(sizes, sizes[1:], strict=False)):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(sizes) - 2:
            layers.append(make_activation())

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.flatten = nn.Flatten()
            self.linear_relu_stack = nn.Sequential(*layers)

        def forward(self, x):
            return self.linear_relu_stack(self.flatten(x))

    return MLP()
