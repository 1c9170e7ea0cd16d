"""The oracle: the seed models in plain torch.nn, trained by torch.autograd and
torch.optim. scratchnet is checked against these."""
