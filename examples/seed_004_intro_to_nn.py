"""Seed 004, "Intro to Neural Nets With PyTorch": from raw matrices to nn.Module.

The nn part of the seed: `Network` with hidden/output Linear 784-256-10 and
Sigmoid + Softmax(dim=1) modules, the same with torch.nn.functional, the
fc1/fc2/fc3 784-128-64-10 ReLU network with custom initialisation
(`bias.data.fill_(0)`, `weight.data.normal_(std=0.01)`), a forward pass on one
image (`images.resize_(64, 1, 784)`, `model.forward(images[0,:])`), the
nn.Sequential 784-128-64-10 indexed as `model[0]`, and `view_classify` pictures.
The seed's first exercise, the network built by hand from torch.randn weight
matrices with a hand-written sigmoid and softmax, is its own script beside this
one: seed_004_by_hand.py.

The code below is the seed's, cell by cell, with these changes only:
  - the imports are gathered at the top, and `--backend scratchnet` swaps
    `from torch import nn` / `import torch.nn.functional as F` for scratchnet's;
  - `torch.manual_seed(--seed)` first, so both backends start from the same weights;
  - `datasets.MNIST(download=True)` is seed_data.IDXDataset (the same items, from
    the IDX files scratchnet's data finder locates; no download), with `--dataset`
    (default fashion-mnist) and `--limit` (at least 64: the seed resizes a batch
    of 64);
  - `dataiter.next()` is `next(dataiter)` (DataLoader iterators lost `.next()` in
    torch 1.13); Udacity's `helper` module is scratchnet.viz, whose
    `view_classify` writes a PNG (`path=`, and `class_names=` of the dataset);
    `plt.imshow` is saved to a PNG too;
  - a notebook shows a cell's last value: here it is printed;
  - added lines (marked) run the two `Network`s the seed defines but never calls,
    and print the probabilities that view_classify draws.

    python examples/seed_004_intro_to_nn.py                       # torch.nn
    python examples/seed_004_intro_to_nn.py --backend scratchnet  # scratchnet
"""

# ruff: noqa: E402  (the seed's imports below follow --backend, parsed first)

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # a notebook draws inline; a script writes PNGs
import matplotlib.pyplot as plt
import numpy as np  # noqa: F401 (the seed imports it)
import seed_data
import torch
from torchvision import transforms

from scratchnet import viz as helper  # seed: import helper (Udacity's view_classify)
from scratchnet.data import dataset_info

args = seed_data.parse_args(__doc__, data=True, out_dir=True, min_limit=64)

# The seed's imports of nn and F: the only lines that differ between backends.
if args.backend == "scratchnet":
    import scratchnet.nn.functional as F
    from scratchnet import nn
else:
    import torch.nn.functional as F
    from torch import nn

torch.manual_seed(args.seed)
out_dir = Path(args.out_dir)
out_dir.mkdir(parents=True, exist_ok=True)
class_names = dataset_info(args.dataset).classes

### Run this cell

# Define a transform to normalize the data
transform = transforms.Compose([transforms.ToTensor(),
                              transforms.Normalize((0.5,), (0.5,)),
                              ])

# Download and load the training data
trainset = seed_data.IDXDataset(args.dataset, args.data_dir, train=True,
                                transform=transform, limit=args.limit)
trainloader = torch.utils.data.DataLoader(trainset, batch_size=64, shuffle=True)

dataiter = iter(trainloader)
images, labels = next(dataiter)  # seed: dataiter.next()
print(type(images))
print(images.shape)
print(labels.shape)

plt.imshow(images[1].numpy().squeeze(), cmap='gray')
plt.savefig(out_dir / f"seed_004_image_{args.backend}.png")  # (added) no inline display
plt.close()


class Network(nn.Module):
    def __init__(self):
        super().__init__()

        # Inputs to hidden layer linear transformation
        self.hidden = nn.Linear(784, 256)
        # Output layer, 10 units - one for each digit
        self.output = nn.Linear(256, 10)

        # Define sigmoid activation and softmax output
        self.sigmoid = nn.Sigmoid()
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x):
        # Pass the input tensor through each of our operations
        x = self.hidden(x)
        x = self.sigmoid(x)
        x = self.output(x)
        x = self.softmax(x)

        return x


# Create the network and look at it's text representation
model = Network()
print(model)
inputs = images.view(images.shape[0], -1)  # (added) run it once: (64, 784)
print(f"Predicted classes: {model(inputs).argmax(1)}")  # (added)


class Network(nn.Module):
    def __init__(self):
        super().__init__()
        # Inputs to hidden layer linear transformation
        self.hidden = nn.Linear(784, 256)
        # Output layer, 10 units - one for each digit
        self.output = nn.Linear(256, 10)

    def forward(self, x):
        # Hidden layer with sigmoid activation
        x = F.sigmoid(self.hidden(x))
        # Output layer with softmax activation
        x = F.softmax(self.output(x), dim=1)

        return x


model = Network()  # (added) run it once
print(f"Predicted classes: {model(inputs).argmax(1)}")  # (added)


## Your solution here
class Network(nn.Module):
    def __init__(self):
        super().__init__()
        # Inputs to first fully connected layer linear transformation
        self.fc1 = nn.Linear(784, 128)

        # Inputs to second fully connected layer linear transformation
        self.fc2 = nn.Linear(128, 64)

        # Output layer, 10 units - one for each digit
        self.fc3 = nn.Linear(64, 10)

    def forward(self, x):
        # Hidden layers with ReLU activation
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        # Output layer with softmax activation
        x = F.softmax(self.fc3(x), dim=1)

        return x

model = Network()
print(model)

print(model.fc1.weight.shape)
print(model.fc1.bias.shape)

# Set biases to all zeros
print(model.fc1.bias.data.fill_(0))

# sample from random normal with standard dev = 0.01
print(model.fc1.weight.data.normal_(std=0.01))

# Grab some data
dataiter = iter(trainloader)
images, labels = next(dataiter)  # seed: dataiter.next()

# Resize images into a 1D vector, new shape is (batch size, color channels, image pixels)
images.resize_(64, 1, 784)
# or images.resize_(images.shape[0], 1, 784) to automatically get batch size

# Forward pass through the network
img_idx = 0
ps = model.forward(images[img_idx,:])
print(f"Probabilities: {ps}")  # (added) what view_classify draws

img = images[img_idx]
helper.view_classify(img.view(1, 28, 28), ps, class_names=class_names,
                     path=out_dir / f"seed_004_view_classify_fc_{args.backend}.png")

# Hyperparameters for our network
input_size = 784
hidden_sizes = [128, 64]
output_size = 10

# Build a feed-forward network
model = nn.Sequential(nn.Linear(input_size, hidden_sizes[0]),
                      nn.ReLU(),
                      nn.Linear(hidden_sizes[0], hidden_sizes[1]),
                      nn.ReLU(),
                      nn.Linear(hidden_sizes[1], output_size),
                      nn.Softmax(dim=1))
print(model)

# Forward pass through the network and display output
images, labels = next(iter(trainloader))
images.resize_(images.shape[0], 1, 784)
ps = model.forward(images[0,:])
print(f"Probabilities: {ps}")  # (added) what view_classify draws
helper.view_classify(images[0].view(1, 28, 28), ps, class_names=class_names,
                     path=out_dir / f"seed_004_view_classify_sequential_{args.backend}.png")

print(model[0])
print(model[0].weight)
