"""The seed tutorials' models in torch.nn (the oracle).

The class bodies are shared with scratchnet (:func:`scratchnet.models.seed_models`)
and built here from ``torch.nn`` and ``torch.nn.functional`` only, so both sides
have the same attribute names and print the same.
"""

import torch.nn
import torch.nn.functional

from scratchnet.models import mlp_from_spec as _mlp_from_spec
from scratchnet.models import seed_models as _seed_models
from scratchnet.models import sequential_network as _sequential_network

_models = _seed_models(torch.nn, torch.nn.functional)
NeuralNetwork = _models.NeuralNetwork
SimpleNN = _models.SimpleNN
SingleLayerNN = _models.SingleLayerNN
Network = _models.Network
FunctionalNetwork = _models.FunctionalNetwork
FCNetwork = _models.FCNetwork


def sequential_network() -> torch.nn.Sequential:
    return _sequential_network(torch.nn)


def mlp_from_spec(spec: str, activation: str = "relu") -> torch.nn.Module:
    return _mlp_from_spec(torch.nn, spec, activation)


MODELS = {"NeuralNetwork": NeuralNetwork, "SimpleNN": SimpleNN,
          "SingleLayerNN": SingleLayerNN, "Network": Network,
          "FunctionalNetwork": FunctionalNetwork, "FCNetwork": FCNetwork,
          "SequentialNetwork": sequential_network}
