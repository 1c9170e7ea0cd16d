"""scratchnet.fast.FastTrainer: the tape-free training step.

Checked against two oracles: scratchnet's own tape step (the same ops in the
same order, so equal bit for bit) and torch.nn + torch.optim (the parity
contract, tests/oracles.py), for the seed models it accepts, in float32 and
float64, over several steps with Adam, AdamW and SGD, including a change of
batch size. Models it cannot run, and bad batches, are refused by name.
"""

from __future__ import annotations

import copy

import pytest
import torch

import scratchnet.optim
from scratchnet import nn
from scratchnet.errors import DeviceError, DTypeError, OptionError, TargetError
from scratchnet.fast import FastTrainer
from scratchnet.train import build_model, seed_everything, train_step
from tests.oracles import assert_parity

# (model, activation): the seed MLPs, layer specs with each activation, and
# seed 004's Sequential (flat input, Softmax output)
MODELS = [("NeuralNetwork", None), ("SingleLayerNN", None), ("784-32-16-10", "sigmoid"),
          ("784-32-16-10", "tanh"), ("SequentialNetwork", None)]
OPTIMIZERS = {"adam": ("Adam", {"lr": 1e-2}), "adamw": ("AdamW", {"lr": 1e-2}),
              "sgd": ("SGD", {"lr": 0.1, "momentum": 0.9})}


def _batches(name: str, dtype: torch.dtype, sizes: tuple[int, ...] = (16, 16, 5)
             ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Pixel-like batches in [0, 1); the last one smaller (an epoch's tail)."""
    generator = torch.Generator().manual_seed(7)
    batches = []
    for size in sizes:
        x = torch.rand(size, 1, 28, 28, generator=generator, dtype=dtype)
        if name == "SequentialNetwork":  # takes (B, 784)
            x = x.reshape(size, -1)
        batches.append((x, torch.randint(0, 10, (size,), generator=generator)))
    return batches


def _model(name: str, activation: str | None, backend: str, dtype: torch.dtype):
    seed_everything(0)
    return build_model(name, backend, activation).to(dtype)


def _optimizer(namespace, model, which: str):
    class_name, options = OPTIMIZERS[which]
    return getattr(namespace, class_name)(model.parameters(), **options)


# each model with one optimizer, every optimizer at least twice
TAPE_RUNS = [(*model, optimizer) for model, optimizer
             in zip(MODELS, ["adam", "adamw", "sgd", "adam", "adamw"], strict=True)]


@pytest.mark.parametrize(("name", "activation", "optimizer_name"), TAPE_RUNS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fast_step_is_the_tape_step_bit_for_bit(name, activation, dtype,
                                                optimizer_name):
    tape_model = _model(name, activation, "scratchnet", dtype)
    fast_model = copy.deepcopy(tape_model)
    tape_optimizer = _optimizer(scratchnet.optim, tape_model, optimizer_name)
    trainer = FastTrainer(fast_model, _optimizer(scratchnet.optim, fast_model,
                                                 optimizer_name))
    loss_fn = nn.CrossEntropyLoss()
    for step, (x, y) in enumerate(_batches(name, dtype)):
        tape_loss = train_step(tape_model, tape_optimizer, loss_fn, x, y)
        fast_loss = trainer.step(x, y).item()
        assert fast_loss == tape_loss, f"loss at step {step}"
    for (key, ours), theirs in zip(fast_model.named_parameters(),
                                   tape_model.parameters(), strict=True):
        assert torch.equal(ours.detach(), theirs.detach()), key
        assert torch.equal(ours.grad, theirs.grad), f"d{key}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_with_torchs_products_and_separate_relus_the_step_is_the_tapes(dtype,
                                                                     monkeypatch):
    """Where gemm.c is unavailable (off the CPU, no compiler) the products are
    torch's ops and each ReLU its own step: still the tape's step bit for bit."""
    from scratchnet.fast import _ReLUStep
    from scratchnet.native import gemm

    monkeypatch.setattr(gemm, "_gemm_loop", lambda dtype: None)
    tape_model = _model("NeuralNetwork", None, "scratchnet", dtype)
    fast_model = copy.deepcopy(tape_model)
    tape_optimizer = _optimizer(scratchnet.optim, tape_model, "adam")
    trainer = FastTrainer(fast_model, _optimizer(scratchnet.optim, fast_model, "adam"))
    for x, y in _batches("NeuralNetwork", dtype):
        loss = train_step(tape_model, tape_optimizer, nn.CrossEntropyLoss(), x, y)
        assert trainer.step(x, y).item() == loss
    relus = [step for step in trainer.steps if isinstance(step, _ReLUStep)]
    assert relus and not any(r.fused_forward or r.fused_backward for r in relus)
    for ours, theirs in zip(fast_model.parameters(), tape_model.parameters(), strict=True):
        assert torch.equal(ours.detach(), theirs.detach())
        assert torch.equal(ours.grad, theirs.grad)


def test_a_new_thread_count_rechooses_the_products_and_keeps_the_bits():
    """The products' split is chosen per thread count (scratchnet.native.gemm):
    after torch.set_num_threads the next step chooses again, and still equals
    the tape's step bit for bit (with the ReLUs inside the products)."""
    from scratchnet.fast import _LinearStep, _ReLUStep
    from scratchnet.native import gemm

    tape_model = _model("NeuralNetwork", None, "scratchnet", torch.float32)
    fast_model = copy.deepcopy(tape_model)
    tape_optimizer = _optimizer(scratchnet.optim, tape_model, "adam")
    trainer = FastTrainer(fast_model, _optimizer(scratchnet.optim, fast_model, "adam"))
    threads = torch.get_num_threads()
    try:
        for count, (x, y) in zip((threads, 1, threads),
                                 _batches("NeuralNetwork", torch.float32, (16, 16, 16)),
                                 strict=True):
            torch.set_num_threads(count)
            loss = train_step(tape_model, tape_optimizer, nn.CrossEntropyLoss(), x, y)
            assert trainer.step(x, y).item() == loss
            assert {step.products.threads for step in trainer.steps
                    if isinstance(step, _LinearStep)} == {count}
            if gemm.why_unavailable(torch.float32) is None:
                assert all(step.fused_forward and step.fused_backward
                           for step in trainer.steps if isinstance(step, _ReLUStep))
    finally:
        torch.set_num_threads(threads)
    for ours, theirs in zip(fast_model.parameters(), tape_model.parameters(), strict=True):
        assert torch.equal(ours.detach(), theirs.detach())


def _adam_state(optimizer, params) -> list[torch.Tensor]:
    return [optimizer.state[p][name].clone() for p in params
            for name in ("step", "exp_avg", "exp_avg_sq")]


@pytest.mark.parametrize(("name", "optimizer_name", "groups"), [
    ("NeuralNetwork", "adam", 1), ("SequentialNetwork", "adamw", 1),
    ("NeuralNetwork", "adam", 2), ("NeuralNetwork", "adam", "subset")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_adam_inside_the_backward_is_optimizer_step_bit_for_bit(name, optimizer_name,
                                                                groups, dtype):
    """With the compiled Adam on the CPU, each Linear's update runs right after
    its backward (scratchnet.optim.adam.update_in_parts); with
    update_in_backward off, optimizer.step() runs after the whole backward.
    The two agree bit for bit in loss, parameters, gradients and Adam's state
    over steps that change the batch size and the learning rate, load a
    state_dict and set the gradients to None. The first step, the one after
    the load, an optimizer with two groups and one over some of the
    parameters take optimizer.step()."""
    from scratchnet import native

    if native.load("adam") is None:
        pytest.skip(f"the C loop cannot be built: {native.why_unavailable('adam')}")
    models = [_model(name, None, "scratchnet", dtype) for _ in range(2)]
    trainers = []
    for model in models:
        params = list(model.parameters())
        split = {1: params, 2: [{"params": params[:2]}, {"params": params[2:]}],
                 "subset": params[2:]}[groups]
        optimizer = getattr(scratchnet.optim, OPTIMIZERS[optimizer_name][0])(
            split, lr=1e-2, weight_decay=0.1 if optimizer_name == "adamw" else 0)
        trainers.append(FastTrainer(model, optimizer, compile_optimizer=True))
    inside, after = trainers
    after.update_in_backward = False
    batches = _batches(name, dtype, (16, 16, 5, 16, 16, 16))
    used = []
    for step, (x, y) in enumerate(batches):
        if step == 2:  # a scheduler's change, between steps
            for trainer in trainers:
                trainer.optimizer.param_groups[0]["lr"] *= 0.5
        if step == 3:  # a checkpoint restored, each tensor on its own: laid out anew
            for trainer in trainers:
                saved = trainer.optimizer.state_dict()
                saved["state"] = {index: {key: value.clone() for key, value in state.items()}
                                  for index, state in saved["state"].items()}
                trainer.optimizer.load_state_dict(saved)
        if step == 4:
            for trainer in trainers:
                trainer.optimizer.zero_grad(set_to_none=True)
        assert inside.step(x, y).item() == after.step(x, y).item(), f"loss, step {step}"
        used.append(inside.updated_in_backward)
        assert not after.updated_in_backward
        for (key, ours), theirs in zip(models[0].named_parameters(),
                                       models[1].parameters(), strict=True):
            assert torch.equal(ours.detach(), theirs.detach()), f"{key}, step {step}"
            assert torch.equal(ours.grad, theirs.grad), f"d{key}, step {step}"
        ours = _adam_state(inside.optimizer, inside.optimizer.state)
        theirs = _adam_state(after.optimizer, after.optimizer.state)
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True)), \
            f"Adam's state, step {step}"
    expected = [False, True, True, False, True, True] if groups == 1 else [False] * 6
    assert used == expected


def test_tied_weights_are_refused():
    """Each Linear writes its gradient: a shared weight would get one layer's share."""
    first, second = nn.Linear(8, 8), nn.Linear(8, 8)
    second.weight = first.weight
    model = nn.Sequential(first, nn.ReLU(), second)
    with pytest.raises(OptionError, match=r"share a parameter of shape \(8, 8\)"):
        FastTrainer(model, scratchnet.optim.SGD(model.parameters(), lr=0.1))


# SGD with momentum, not Adam: Adam moves each weight by lr · m̂/(√v̂ + ε), and for
# a gradient element of size ~ε that ratio turns last-bit differences between
# torch's gradient and ours (torch's autograd forms dweight as (xᵀ·dout)ᵀ,
# scratchnet as doutᵀ·x: the BLAS sums in another order) into relative errors
# of 1e-8 (float64) after a step or two: conditioning, not a bug. Adam itself
# is covered by the chain: fast step == tape step bit for bit (above, with Adam),
# flat Adam == torch.optim.Adam bit for bit given the same gradients
# (tests/test_flat.py), and the gradients == torch's within the contract (here).
TORCH_RUNS = [(torch.float64, "sgd"), (torch.float32, "sgd")]


@pytest.mark.parametrize(("name", "activation"), MODELS)
@pytest.mark.parametrize(("dtype", "optimizer_name"), TORCH_RUNS)
def test_fast_training_matches_torch(name, activation, dtype, optimizer_name):
    ours = _model(name, activation, "scratchnet", dtype)
    theirs = _model(name, activation, "torch", dtype)
    trainer = FastTrainer(ours, _optimizer(scratchnet.optim, ours, optimizer_name))
    torch_optimizer = _optimizer(torch.optim, theirs, optimizer_name)
    for step, (x, y) in enumerate(_batches(name, dtype)):
        our_loss = trainer.step(x, y)
        torch_optimizer.zero_grad()
        their_loss = torch.nn.functional.cross_entropy(theirs(x), y)
        their_loss.backward()
        torch_optimizer.step()
        assert_parity(our_loss, their_loss.detach(), f"{name} loss at step {step}")
    for (key, our_param), their_param in zip(ours.named_parameters(),
                                             theirs.parameters(), strict=True):
        assert_parity(our_param, their_param, f"{name} {key} after 3 steps")
        assert_parity(our_param.grad, their_param.grad, f"{name} d{key} at step 3")


def test_gradients_reach_params_even_after_zero_grad_set_to_none():
    model = _model("SingleLayerNN", None, "scratchnet", torch.float64)
    optimizer = scratchnet.optim.Adam(model.parameters())
    trainer = FastTrainer(model, optimizer)
    x, y = _batches("SingleLayerNN", torch.float64)[0]
    optimizer.zero_grad(set_to_none=True)
    before = trainer.flat.flat_params.clone()
    trainer.step(x, y)
    assert trainer.flat.is_intact()
    assert not torch.equal(before, trainer.flat.flat_params)  # the step moved them


@pytest.mark.parametrize("name", ["FCNetwork", "Network"])
def test_models_whose_forward_is_not_their_layer_order_are_refused(name):
    """FCNetwork applies F.relu between its Linears; Network registers its
    activations after its Linears. Neither is its layers in order."""
    model = _model(name, None, "scratchnet", torch.float32)
    trainer = FastTrainer(model, scratchnet.optim.Adam(model.parameters()))
    x, y = _batches("SequentialNetwork", torch.float32)[0]
    with pytest.raises(OptionError, match="not its layers"):
        trainer.step(x, y)


def test_unsupported_layers_losses_and_bad_batches_are_refused():
    dropout = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5), nn.Linear(3, 2))
    with pytest.raises(OptionError, match="Dropout"):
        FastTrainer(dropout, scratchnet.optim.SGD(dropout.parameters()))
    model = nn.Sequential(nn.Linear(4, 3))
    optimizer = scratchnet.optim.SGD(model.parameters())
    with pytest.raises(OptionError, match="label smoothing"):
        FastTrainer(model, optimizer, nn.CrossEntropyLoss(label_smoothing=0.1))
    with pytest.raises(OptionError, match="CrossEntropyLoss"):
        FastTrainer(model, optimizer, nn.MSELoss())
    trainer = FastTrainer(model, optimizer)
    with pytest.raises(DTypeError, match="float64"):
        trainer.step(torch.zeros(2, 4, dtype=torch.float64), torch.zeros(2).long())
    with pytest.raises(TargetError, match="target 3 is out of bounds"):
        trainer.step(torch.zeros(2, 4), torch.tensor([0, 3]))
    with pytest.raises(TargetError, match="target -1 is out of bounds"):
        trainer.step(torch.zeros(2, 4), torch.tensor([-1, 0]))
    with pytest.raises(TargetError, match="shape"):
        trainer.step(torch.zeros(2, 4), torch.zeros(3).long())
    with pytest.raises(DeviceError, match="input on meta and targets on cpu, but the "
                                          "model is on cpu"):
        trainer.step(torch.zeros(2, 4, device="meta"), torch.zeros(2).long())
    with pytest.raises(DeviceError, match="targets on meta"):
        trainer.step(torch.zeros(2, 4), torch.zeros(2, device="meta").long())


@pytest.mark.parametrize("loop", [
    "C", pytest.param("torch.compile", marks=pytest.mark.slow)])  # compiling: tens of s
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_optimizer_matches_eager(dtype, loop, monkeypatch):
    """The compiled Adam update, through either loop (the C one on the CPU, or
    torch.compile's where the C one is not built), rounds as the eager one
    (torch's kernels' fused multiply-adds reproduced), except √v, which the
    loops round correctly and torch's eager CPU sqrt does not always: from the
    same state and gradients, m and v come out bit for bit the eager update's,
    θ within the parity contract."""
    from scratchnet import native
    from scratchnet.optim import adam

    if loop == "C" and native.load("adam") is None:
        pytest.skip(f"the C loop cannot be built: {native.why_unavailable('adam')}")
    if loop == "torch.compile":
        monkeypatch.setattr(adam, "_bind_native_loop", lambda flat: None)
    eager_model = _model("SingleLayerNN", None, "scratchnet", dtype)
    compiled_model = copy.deepcopy(eager_model)
    eager = FastTrainer(eager_model, scratchnet.optim.Adam(eager_model.parameters()))
    compiled = FastTrainer(compiled_model, scratchnet.optim.Adam(
        compiled_model.parameters()), compile_optimizer=True)
    for x, y in _batches("SingleLayerNN", dtype):
        eager.step(x, y)
        compiled.step(x, y)
        compiled_model.load_state_dict(eager_model.state_dict())  # same start each step
        compiled.optimizer.load_state_dict(copy.deepcopy(eager.optimizer.state_dict()))
    x, y = _batches("SingleLayerNN", dtype)[0]
    eager.step(x, y)
    compiled.step(x, y)
    flat = compiled.optimizer._flat_cache[id(compiled.optimizer.param_groups[0])][1]
    if loop == "C":
        assert flat.native_loop() is not None, "the C loop did not run"
    else:
        assert adam._compiled_kernel and adam._compiled_kernel[0] is not None, \
            "did not compile"
    for (key, ours), theirs in zip(compiled_model.named_parameters(),
                                   eager_model.parameters(), strict=True):
        assert_parity(ours, theirs, f"compiled Adam ({loop}): {key}")
        for name in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(compiled.optimizer.state[ours][name],
                               eager.optimizer.state[theirs][name]), f"{key} {name}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_plain_loss_equals_the_tape_in_float64_and_torch_within_tolerance(dtype):
    """exact_loss=False: bit for bit the tape where the tape uses plain exp/log
    (float64), within the parity contract of torch.nn in float32 (one step)."""
    tape_model = _model("784-32-16-10", "tanh", "scratchnet", dtype)
    fast_model = copy.deepcopy(tape_model)
    theirs = _model("784-32-16-10", "tanh", "torch", dtype)
    tape_optimizer = scratchnet.optim.SGD(tape_model.parameters(), lr=0.1)
    trainer = FastTrainer(fast_model, scratchnet.optim.SGD(fast_model.parameters(),
                                                           lr=0.1), exact_loss=False)
    torch_optimizer = torch.optim.SGD(theirs.parameters(), lr=0.1)
    for x, y in _batches("784-32-16-10", dtype):
        tape_loss = train_step(tape_model, tape_optimizer, nn.CrossEntropyLoss(), x, y)
        fast_loss = trainer.step(x, y)
        torch_optimizer.zero_grad()
        torch_loss = torch.nn.functional.cross_entropy(theirs(x), y)
        torch_loss.backward()
        torch_optimizer.step()
        assert_parity(fast_loss, torch_loss.detach(), "plain loss vs torch")
        if dtype == torch.float64:
            assert fast_loss.item() == tape_loss
    for ours, tape_param, their_param in zip(fast_model.parameters(),
                                             tape_model.parameters(),
                                             theirs.parameters(), strict=True):
        assert_parity(ours.grad, their_param.grad, "plain loss: gradient vs torch")
        if dtype == torch.float64:
            assert torch.equal(ours.detach(), tape_param.detach())


def test_train_epoch_fast_option_gives_the_tape_losses():
    """scratchnet.train.train_epoch(fast=True), what ``scratchnet train --fast``
    runs: the same losses and weights as the tape loop."""
    from scratchnet.data import TensorLoader
    from scratchnet.train import train_epoch

    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 28, 28), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (40,), generator=generator)
    runs = []
    for fast in (False, True):
        model = _model("SingleLayerNN", None, "scratchnet", torch.float32)
        loader = TensorLoader(images, labels, batch_size=16, shuffle=True,
                              generator=torch.Generator().manual_seed(1))
        losses = train_epoch(model, scratchnet.optim.Adam(model.parameters()), loader,
                             fast=fast)
        runs.append((losses, [p.detach().clone() for p in model.parameters()]))
    assert runs[0][0] == runs[1][0] and len(runs[0][0]) == 3
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1], strict=True))
