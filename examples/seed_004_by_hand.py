"""Seed 004's first exercise: a network built by hand, without nn.

784 inputs, 256 sigmoid hidden units, 10 outputs, from torch.randn weight
matrices and torch.mm, with the seed's hand-written sigmoid and softmax. It uses
no torch.nn, so there is nothing to swap: this script has no --backend. Beside
it, seed_004_intro_to_nn.py builds the same kind of network with nn and runs on
torch.nn or scratchnet.

The code is the seed's, with these changes only: `torch.manual_seed(--seed)`;
`datasets.MNIST(download=True)` is seed_data.IDXDataset (no download), with
`--dataset` and `--limit`; `dataiter.next()` is `next(dataiter)`; the notebook's
displayed `out.shape` is printed; and an added last part (marked) puts the same
logits through scratchnet's F.softmax, then scales them until the seed's
softmax overflows, which scratchnet's does not (tests/test_examples.py checks
where exactly).

    python examples/seed_004_by_hand.py
"""

import seed_data
import torch
from torchvision import transforms


## Solution
def sigmoid(x):
    return 1/(1+torch.exp(-x))


def softmax(x):
    ## TODO: Implement the softmax function here
    return torch.exp(x)/torch.sum(torch.exp(x), dim=1).view(-1, 1)


def main() -> None:
    args = seed_data.parse_args(__doc__, data=True)
    torch.manual_seed(args.seed)

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

    ## Flatten the image input
    inputs = images.view(images.shape[0], -1) #same as images.view(images.shape[0], 784) ; -1 squished the image to single vector

    weights_1 = torch.randn(784,256) #because hidden layer will have 256 units
    bias_1 = torch.randn(256)

    weights_2 = torch.randn(256,10)
    bias_2 = torch.randn(10)

    hidden_layer = sigmoid(torch.mm(inputs, weights_1)+bias_1)
    out = torch.mm(hidden_layer, weights_2)+bias_2

    print(out.shape)
    #out = # output of your network, should have shape (64,10)

    # Here, out should be the output of the network in the previous excercise with shape (64,10)
    probabilities = softmax(out)

    # Does it have the right shape? Should be (64, 10)
    print(probabilities.shape)
    # Does it sum to 1?
    print(probabilities.sum(dim=1))

    compare_with_scratchnet(out, probabilities)


def compare_with_scratchnet(out: torch.Tensor, probabilities: torch.Tensor) -> None:
    """(added) The seed's softmax beside scratchnet's F.softmax on the same logits
    ``out`` (B, 10): equal while exp(out) is finite; then the logits are scaled
    up until exp overflows float32 (above log(max float32) ≈ 88.72) and the seed's
    softmax returns nan where scratchnet's, which subtracts each row's max first,
    still sums to 1."""
    import scratchnet.nn.functional as F

    scratchnet_probabilities = F.softmax(out, dim=1)  # (B, 10)
    difference = (probabilities - scratchnet_probabilities).abs().max().item()
    print(f"scratchnet F.softmax on the same logits: largest difference "
          f"{difference:.3g}; largest logit {out.max().item():.4g}")
    for scale in (1, 10, 100):
        logits = out * scale  # (B, 10)
        naive_rows_nan = softmax(logits).isnan().any(dim=1).sum().item()
        scratchnet_rows_nan = F.softmax(logits, dim=1).isnan().any(dim=1).sum().item()
        print(f"logits x{scale:<3}: largest {logits.max().item():10.4g} | rows with "
              f"nan: seed softmax {naive_rows_nan}, scratchnet F.softmax "
              f"{scratchnet_rows_nan}")


if __name__ == "__main__":
    main()
