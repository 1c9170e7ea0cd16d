"""Seed 001, "Neural Networks in PyTorch": a full MNIST training walkthrough.

SimpleNN (784-512-256-10, ReLU) and SingleLayerNN (784-256-10, ReLU), each trained
with CrossEntropyLoss and Adam(lr=0.001), batch 64, shuffled, for 5 epochs, then
evaluated under model.eval() and torch.no_grad(). The seed reports 97.30% and
97.78% on MNIST's 10,000 test images.

The code below is the seed's, cell by cell ("In [n]"), with these changes only:
  - the imports are gathered at the top, and `--backend scratchnet` swaps
    `from torch import nn` / `import torch.optim as optim` for scratchnet's;
  - `torch.manual_seed(--seed)` first, so both backends start from the same weights;
  - `datasets.MNIST(root, download=True)` is seed_data.IDXDataset (the same items,
    from the IDX files scratchnet's data finder locates; no download), with
    `--dataset` (default fashion-mnist) and `--limit`;
  - `epochs = --epochs` (default 5), and the accuracy line counts the test images
    it was given rather than printing the literal "10,000".

    python examples/seed_001_mnist_training.py                       # torch.nn
    python examples/seed_001_mnist_training.py --backend scratchnet  # scratchnet
    python examples/seed_001_mnist_training.py --limit 512 --epochs 1  # quick
"""

# ruff: noqa: E402  (the seed's imports below follow --backend, parsed first)

import seed_data
import torch
from torch.utils.data import DataLoader
from torchvision import transforms

args = seed_data.parse_args(__doc__, data=True, epochs=5)

# The seed's imports of nn and optim: the only lines that differ between backends.
if args.backend == "scratchnet":
    import scratchnet.optim as optim
    from scratchnet import nn
else:
    import torch.optim as optim
    from torch import nn

torch.manual_seed(args.seed)

# In [1]:
transformer = transforms.Compose([
    transforms.ToTensor(), # Convert the image to a PyTorch Tensor
])

train_dataset = seed_data.IDXDataset(  # seed: datasets.MNIST(download=True)
    args.dataset,
    root=args.data_dir,
    train=True,
    transform=transformer,
    limit=args.limit,
)

test_dataset = seed_data.IDXDataset(  # seed: datasets.MNIST(download=True)
    args.dataset,
    root=args.data_dir,
    train=False,
    transform=transformer,
    limit=args.limit,
)

# In [2]:
# Defining a batch size
BATCH_SIZE = 64

train_loader = DataLoader(
    dataset=train_dataset,
    batch_size=BATCH_SIZE,
    shuffle=True
)

test_loader = DataLoader(
    dataset=test_dataset,
    batch_size=BATCH_SIZE,
    shuffle=False
)


# In [3]:
class SimpleNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten() # Flattens the 28x28 image into a 784-dimensional vector
        self.linear_relu_stack = nn.Sequential(
            nn.Linear(28 * 28, 512), # First linear layer
            nn.ReLU(), # Activation function
            nn.Linear(512, 256), # Second linear layer
            nn.ReLU(), # Activation function
            nn.Linear(256, 10) # Output layer
        )

    def forward(self, x):
        x = self.flatten(x) # Flatten the input
        logits = self.linear_relu_stack(x) # Pass through the linear_relu_stack
        return logits


# In [4]:
# Create an instance of the model
model = SimpleNN()

# Get a single batch of images and labels from the training data loader
images, labels = next(iter(train_loader))

# Perform the forward pass to get the logits
logits = model(images)

# Print the shape of the output
print(f"Shape of the logits tensor: {logits.shape}")
print(f"Sample logits for first image:\n{logits[0]}")

# In [5]:
# Define the loss function
loss_function = nn.CrossEntropyLoss()

# Calculate the loss
loss = loss_function(logits, labels)

print(f"Loss value: {loss.item()}")

# In [6]:
# Set the starting learning rate (hyperparameter)
# This is the maximum learning rate and acts as an Upper Bound for the learning rates.
learning_rate = 0.001
optimizer = optim.Adam(model.parameters(), lr=learning_rate)

# In [7]:
# Hyperparameter
# Define the number of epochs
epochs = args.epochs  # seed: epochs = 5

for epoch in range(1, epochs + 1):
    running_loss = 0.0 # To monitor progress and debugging. This should eventually flatten out
    for inputs, labels in train_loader:
        # Zero out the gradients
        optimizer.zero_grad()

        # Forward Pass
        logits = model(inputs)
        loss = loss_function(logits, labels)

        # Backward Pass (backpropagation)
        loss.backward()

        # Update the weights
        optimizer.step()

        running_loss += loss.item()

    # Print the average loss for this epoch
    print(f"Epoch {epoch}, Loss: {running_loss / len(train_loader)}")

# In [8]:
model.eval()  # Set the model to evaluation mode
correct = 0
total = 0

# Disable gradient calculation
with torch.no_grad():
    for images, labels in test_loader:
        outputs = model(images)
        # Get the predicted class
        _, predicted = torch.max(outputs.data, 1)
        total += labels.size(0)
        correct += (predicted == labels).sum().item()

accuracy = 100 * correct / total
print(f'Accuracy of the model on the {total:,} test images: {accuracy:.2f}%')


# In [9]:
class SingleLayerNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten() # Flattens the 28x28 image into a 784-dimensional vector
        self.linear_relu_stack = nn.Sequential(
            nn.Linear(28 * 28, 256), # First linear layer
            nn.ReLU(), # Activation function
            nn.Linear(256, 10) # Output layer
        )

    def forward(self, x):
        x = self.flatten(x)
        logits = self.linear_relu_stack(x)
        return logits


# In [10]:
# Create our model
single_layer_model = SingleLayerNN()

# Create our loss function
single_layer_loss_function = nn.CrossEntropyLoss()

# Create our ADAM Optimizer
single_layer_optimizer = optim.Adam(single_layer_model.parameters(), lr=0.001)

for epoch in range(1, epochs + 1):
    running_loss = 0.0
    for index, (inputs, labels) in enumerate(train_loader):  # noqa: B007 (seed text)
        # Zero out the gradients
        single_layer_optimizer.zero_grad()

        # Forward Pass
        logits = single_layer_model(inputs)

        # Calculate the loss
        loss = single_layer_loss_function(logits, labels)

        # Backward Pass (backpropagation)
        loss.backward()

        # Update the weights
        single_layer_optimizer.step()

        running_loss += loss.item()
    print(f'Epoch {epoch}\'s training loss: {running_loss}')

# In [11]:
single_layer_model.eval()  # Set the model to evaluation mode
single_layer_correct = 0
single_layer_total = 0

# Disable gradient calculation
with torch.no_grad():
    for images, labels in test_loader:
        outputs = single_layer_model(images)
        # Get the predicted class
        _, predicted = torch.max(outputs.data, 1)
        single_layer_total += labels.size(0)
        single_layer_correct += (predicted == labels).sum().item()

single_layer_accuracy = 100 * single_layer_correct / single_layer_total
print(f'Accuracy of the model on the {single_layer_total:,} test images: {single_layer_accuracy:.2f}%')
