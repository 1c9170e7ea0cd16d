"""Seeds 000, 002 and 003, PyTorch's "Build the Neural Network" tutorial (one
tutorial in three renderings): the FashionMNIST NeuralNetwork, 784-512-512-10 with
ReLU in an nn.Sequential, then each layer on its own on a random batch.

The code below is the tutorial's, cell by cell ("In [n]"), with these changes only:
  - `--backend scratchnet` swaps `from torch import nn` for `from scratchnet import nn`;
  - `torch.manual_seed(--seed)` first, so both backends start from the same weights
    and the same random inputs;
  - one added print (marked) of the classes predicted for the random batch of
    In [11]/[13], which the tutorial computes but does not show.
The tutorial reads no data (its inputs are torch.rand), so this script has no
--data-dir or --limit.

    python examples/seed_000_build_the_neural_network.py                       # torch.nn
    python examples/seed_000_build_the_neural_network.py --backend scratchnet  # scratchnet
"""

# ruff: noqa: E402  (the seed's import of nn below follows --backend, parsed first)

# In [1]:
import os  # noqa: F401 (the tutorial imports these and never uses them)

import seed_data
import torch
from torch.utils.data import DataLoader  # noqa: F401
from torchvision import datasets, transforms  # noqa: F401

args = seed_data.parse_args(__doc__)

# The tutorial's import of nn: the only line that differs between backends.
if args.backend == "scratchnet":
    from scratchnet import nn
else:
    from torch import nn

torch.manual_seed(args.seed)

# In [2]:
device = "cuda" if torch.cuda.is_available() else "cpu"
print(f"Using {device} device")


# In [3]:
class NeuralNetwork(nn.Module):
    def __init__(self):
        super(NeuralNetwork, self).__init__()  # noqa: UP008 (tutorial text)
        self.flatten = nn.Flatten()
        self.linear_relu_stack = nn.Sequential(
            nn.Linear(28 * 28, 512),
            nn.ReLU(),
            nn.Linear(512, 512),
            nn.ReLU(),
            nn.Linear(512, 10),
        )

    def forward(self, x):
        x = self.flatten(x)
        logits = self.linear_relu_stack(x)
        return logits


# In [4]:
model = NeuralNetwork().to(device)
print(model)

# In [5]:
X = torch.rand(1, 28, 28, device=device)
logits = model(X)
pred_probab = nn.Softmax(dim=1)(logits)
y_pred = pred_probab.argmax(1)
print(f"Predicted class: {y_pred}")

# In [6]:
input_image = torch.rand(3, 28, 28)
print(input_image.size())

# In [7]:
flatten = nn.Flatten()
flat_image = flatten(input_image)
print(flat_image.size())

# In [9]:
layer1 = nn.Linear(in_features=28 * 28, out_features=20)
hidden1 = layer1(flat_image)
print(hidden1.size())

# In [10]:
print(f"Before ReLU: {hidden1}\n\n")
hidden1 = nn.ReLU()(hidden1)
print(f"After ReLU: {hidden1}")

# In [11]:
seq_modules = nn.Sequential(flatten, layer1, nn.ReLU(), nn.Linear(20, 10))
input_image = torch.rand(3, 28, 28)
logits = seq_modules(input_image)

# In [13]:
softmax = nn.Softmax(dim=1)
pred_probab = softmax(logits)
print(f"Predicted classes of the random batch: {pred_probab.argmax(1)}")  # (added)

# In [14]:
print(f"Model structure: {model}\n\n")

for name, param in model.named_parameters():
    print(f"Layer: {name} | Size: {param.size()} | Values : {param[:2]} \n")
