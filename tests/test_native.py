"""scratchnet/native: its C loops against the torch ops they replace, and
their build.

The Adam loop (adam.c) must give m and v bit for bit as torch.optim.Adam (and AdamW) does,
and θ within the parity contract (√v is correctly rounded in the loop and not
always in torch's eager CPU sqrt: θ may differ in its last bit). The plain
cross-entropy's loops (cross_entropy.c) must give the loss and its gradient bit
for bit as the NumPy/torch path. The build must be cached, atomic, and fail
over cleanly. End to end, tests/test_fast.py runs them inside FastTrainer
(test_compiled_optimizer_matches_eager, test_plain_loss_equals_the_tape_...).
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import scratchnet.optim
from scratchnet import native
from scratchnet.native import gemm
from scratchnet.optim import adam
from tests.oracles import assert_parity

needs_compiler = pytest.mark.skipif(native.c_compiler() is None,
                                    reason="no C compiler: the C loop cannot be built")


def _flat_params(sizes: list[int], dtype: torch.dtype, seed: int
                 ) -> tuple[list[torch.nn.Parameter], torch.Tensor]:
    """Parameters as consecutive views of one buffer, their .grad views of
    another (the layout FlatParameters gives); returns them and the grad buffer."""
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(sum(sizes), generator=generator, dtype=dtype)
    grads = torch.zeros(sum(sizes), dtype=dtype)
    params, offset = [], 0
    for size in sizes:
        param = torch.nn.Parameter(values[offset:offset + size])
        param.grad = grads[offset:offset + size]
        params.append(param)
        offset += size
    return params, grads


def _loop_of(optimizer: scratchnet.optim.Adam):
    flat = optimizer._flat_cache[id(optimizer.param_groups[0])][1]
    return flat.native_loop()


@needs_compiler
@settings(max_examples=40, deadline=None)
@given(dtype=st.sampled_from([torch.float32, torch.float64]),
       sizes=st.lists(st.integers(1, 700), min_size=1, max_size=4),
       beta1=st.sampled_from([0.0, 0.3, 0.5, 0.9, 0.99]),
       beta2=st.sampled_from([0.0, 0.5, 0.9, 0.999, 0.9999]),
       lr=st.sampled_from([1e-4, 1e-3, 0.1]), eps=st.sampled_from([1e-8, 1e-3]),
       weight_decay=st.sampled_from([0.0, 0.0, 1e-2, 0.3]),
       steps=st.integers(1, 4), seed=st.integers(0, 2**31 - 1))
def test_c_loop_equals_torch_adam(dtype, sizes, beta1, beta2, lr, eps, weight_decay,
                                  steps, seed):
    """From the same parameters and gradients (of magnitudes 1e-20…1e2: tiny
    g² underflow), m and v equal torch.optim.Adam's (with a weight decay:
    AdamW's, the decay decoupled) bit for bit after every step, θ within the
    parity contract. The eager flat update is switched off: the loop did it."""
    ours, our_grads = _flat_params(sizes, dtype, seed)
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    options = {"lr": lr, "betas": (beta1, beta2), "eps": eps}
    name = "Adam"
    if weight_decay:
        options["weight_decay"], name = weight_decay, "AdamW"
    our_optimizer = getattr(scratchnet.optim, name)(ours, **options)
    our_optimizer._compiled_flat_update = True  # what FastTrainer(compile_optimizer=True) sets
    their_optimizer = getattr(torch.optim, name)(theirs, foreach=False, **options)
    _steps_with_the_c_loop(our_optimizer, their_optimizer, ours, theirs, our_grads,
                           steps, seed)


def _steps_with_the_c_loop(our_optimizer, their_optimizer, ours, theirs, our_grads,
                           steps, seed):
    """``steps`` steps of both optimizers on the same gradients, compared after
    each; the eager flat update must not run (the loop does the update)."""
    no_eager = mock.patch.object(adam, "_flat_step",
                                 side_effect=AssertionError("the eager flat update ran"))
    generator = torch.Generator().manual_seed(seed + 1)
    for step in range(steps):
        exponents = torch.randint(-20, 3, our_grads.shape, generator=generator)
        dtype = our_grads.dtype
        our_grads.copy_(torch.randn(our_grads.shape, generator=generator, dtype=dtype)
                        * torch.pow(10.0, exponents.to(dtype)))
        offset = 0
        for param in theirs:
            param.grad = our_grads[offset:offset + param.numel()].clone()
            offset += param.numel()
        before = [our.detach().clone() for our in ours]
        with no_eager:
            our_optimizer.step()
        their_optimizer.step()
        assert _loop_of(our_optimizer) is not None, native.why_unavailable("adam")
        for i, (our, their) in enumerate(zip(ours, theirs, strict=True)):
            our_state, their_state = our_optimizer.state[our], their_optimizer.state[their]
            for name in ("exp_avg", "exp_avg_sq"):
                assert torch.equal(our_state[name], their_state[name]), \
                    f"param {i} {name} at step {step + 1} ({dtype})"
            assert float(our_state["step"]) == float(their_state["step"])
            assert_parity(our.detach(), their.detach(), f"param {i} at step {step + 1}")
            expected = _update_with_a_correctly_rounded_sqrt(
                before[i], our_state, their_optimizer.param_groups[0])
            assert torch.equal(our.detach(), expected), \
                f"param {i} at step {step + 1}: not the eager formula with a correct √"
            # the parameters must not drift apart over steps: start each step equal
            their.data.copy_(our.detach())


def _update_with_a_correctly_rounded_sqrt(param: torch.Tensor, state: dict,
                                          group: dict) -> torch.Tensor:
    """θ·(1 - γλ) + (-γ/(1-β₁ᵗ))·m / (√v/√(1-β₂ᵗ) + ε) from the new m and v, each
    operation rounded on its own in the parameters' dtype, as torch's eager ops
    (their Python-float scalars computed as torch/optim/adam.py does), except √,
    which NumPy rounds correctly: the loop's θ must be this, bit for bit."""
    t = float(state["step"])
    beta1, beta2 = group["betas"]
    lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
    kind = param.numpy().dtype.type
    m, v = state["exp_avg"].numpy(), state["exp_avg_sq"].numpy()
    denom = np.sqrt(v) / kind((1 - beta2**t) ** 0.5) + kind(eps)
    theta = param.numpy() * kind(1 - lr * weight_decay) + (kind(-(lr / (1 - beta1**t))) * m) / denom
    return torch.from_numpy(theta)


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_c_loop_gives_the_same_bits_on_any_thread_count(dtype):
    """The loop is elementwise: splitting the buffers over 1, 2 or 3 threads
    (slices of 16 elements, an odd length) changes nothing."""
    results = []
    for threads in (1, 2, 3):
        params, grads = _flat_params([1001, 37], dtype, seed=0)
        grads.copy_(torch.randn(grads.shape, generator=torch.Generator().manual_seed(1),
                                dtype=dtype))
        optimizer = scratchnet.optim.Adam(params)
        optimizer._compiled_flat_update = True
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            optimizer.step()
            optimizer.step()
        finally:
            torch.set_num_threads(previous)
        state = optimizer.state[params[0]]
        results.append(torch.cat([torch.cat([p.detach() for p in params]),
                                  state["exp_avg"], state["exp_avg_sq"]]))
    assert torch.equal(results[0], results[1]) and torch.equal(results[0], results[2])


@needs_compiler
@pytest.mark.parametrize("options", [{"weight_decay": 0.1}, {"amsgrad": True},
                                     {"maximize": True}])
def test_options_the_loop_does_not_cover_take_the_eager_update(options):
    """L2 weight decay (Adam's, not AdamW's), AMSGrad and maximize are not in the
    loop: with them the compiled path steps aside and the result is the eager
    one, bit for bit."""
    compiled_params, compiled_grads = _flat_params([300, 20], torch.float32, seed=2)
    eager_params, eager_grads = _flat_params([300, 20], torch.float32, seed=2)
    grad = torch.randn(320, generator=torch.Generator().manual_seed(3))
    compiled_grads.copy_(grad)
    eager_grads.copy_(grad)
    compiled = scratchnet.optim.Adam(compiled_params, **options)
    compiled._compiled_flat_update = True
    eager = scratchnet.optim.Adam(eager_params, **options)
    compiled.step()
    eager.step()
    for ours, theirs in zip(compiled_params, eager_params, strict=True):
        assert torch.equal(ours, theirs)


def test_overlapping_or_foreign_buffers_are_not_given_to_the_loop():
    """The loop takes its four buffers as restrict pointers on the CPU."""
    buffer = torch.zeros(100)
    assert adam._any_overlap((buffer[:50], buffer[40:90]))
    assert not adam._any_overlap((buffer[:50], buffer[50:]))
    params, _ = _flat_params([10], torch.float32, seed=0)
    optimizer = scratchnet.optim.Adam(params)
    optimizer.step()
    flat = optimizer._flat_cache[id(optimizer.param_groups[0])][1]
    flat.grads = flat.params  # aliased: must not be handed over
    assert adam._bind_native_loop(flat) is None


# --------------------------------------------------------------------------------------
# the build


@pytest.fixture
def fresh_build(tmp_path, monkeypatch):
    """An empty build cache in tmp_path, and no library loaded in this process."""
    monkeypatch.setenv("SCRATCHNET_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(native, "_loaded", {})
    monkeypatch.setattr(native, "_why_unavailable", {})
    monkeypatch.setattr(native, "_built_with", {})
    return tmp_path


@needs_compiler
def test_the_library_is_built_once_and_reused(fresh_build, monkeypatch):
    assert native.load("adam") is not None, native.why_unavailable("adam")
    built = [p.name for p in fresh_build.iterdir()]
    assert len(built) == 1 and built[0].startswith("adam-") and built[0].endswith(".so")
    monkeypatch.setattr(native, "_loaded", {})  # as a new process would start

    def no_compiling(*args):
        raise AssertionError("rebuilt a library that was in the cache")

    monkeypatch.setattr(native, "_compile", no_compiling)
    assert native.load("adam") is not None
    assert [p.name for p in fresh_build.iterdir()] == built


def test_without_a_working_compiler_load_says_why_and_leaves_nothing(fresh_build,
                                                                     monkeypatch):
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    assert native.load("adam") is None
    assert "false" in native.why_unavailable("adam")
    assert list(fresh_build.iterdir()) == []  # no half-written library left
    params, _ = _flat_params([10], torch.float32, seed=0)
    optimizer = scratchnet.optim.Adam(params)
    optimizer.step()
    assert _loop_of(optimizer) is None


@needs_compiler
def test_a_compiler_without_openmp_builds_the_one_thread_loop(fresh_build, monkeypatch,
                                                              tmp_path_factory):
    """A compiler that rejects -fopenmp (clang without libomp) still gives the
    loop, on one thread, with the same numbers."""
    wrapper = tmp_path_factory.mktemp("bin") / "cc-without-openmp"
    wrapper.write_text('#!/bin/sh\nfor a in "$@"; do [ "$a" = -fopenmp ] && '
                       f'{{ echo "unsupported: -fopenmp" >&2; exit 1; }}; done\n'
                       f'exec {native.c_compiler()} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("CC", str(wrapper))
    assert native.load("adam") is not None, native.why_unavailable("adam")
    assert "-march=native" in native.built_with("adam")
    assert "-fopenmp" not in native.built_with("adam")
    test_c_loop_equals_torch_adam.hypothesis.inner_test(
        dtype=torch.float32, sizes=[700, 3], beta1=0.9, beta2=0.999, lr=1e-3, eps=1e-8,
        weight_decay=0.0, steps=2, seed=6)


def test_scratchnet_native_0_turns_it_off(fresh_build, monkeypatch):
    monkeypatch.setenv("SCRATCHNET_NATIVE", "0")
    assert native.load("adam") is None
    assert native.why_unavailable("adam") == "SCRATCHNET_NATIVE=0"


def test_the_build_key_follows_the_source_its_headers_and_flags(tmp_path):
    source, header = tmp_path / "loop.c", tmp_path / "shared.h"
    source.write_text('#include "shared.h"\nint f(void) { return ONE; }\n')
    header.write_text("#define ONE 1\n")
    compiler = native.c_compiler() or "cc"
    key = native._build_key(source, compiler, native.FLAGS)
    assert key == native._build_key(source, compiler, native.FLAGS)
    assert key != native._build_key(source, compiler, (*native.FLAGS, "-fopenmp"))
    header.write_text("#define ONE 2\n")
    header_key = native._build_key(source, compiler, native.FLAGS)
    assert header_key != key
    source.write_text('#include "shared.h"\nint f(void) { return ONE + 1; }\n')
    assert native._build_key(source, compiler, native.FLAGS) not in (key, header_key)


def test_a_default_cache_dir_under_the_home_or_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("SCRATCHNET_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert native.cache_dir() == tmp_path / "scratchnet" / "native"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert native.cache_dir() == Path.home() / ".cache" / "scratchnet" / "native"
    assert os.path.isabs(native.cache_dir())


# --------------------------------------------------------------------------------------
# the plain cross-entropy's loops


def _plain_loss(batch: int, dtype: torch.dtype, classes: int, use_c: bool):
    from scratchnet.fast import _PlainCrossEntropyStep

    loss = _PlainCrossEntropyStep()
    loss.allocate(batch, torch.empty(0, dtype=dtype), classes)
    if not use_c:
        loss.native, loss.checks_targets = None, False
    return loss


@needs_compiler
@settings(max_examples=40, deadline=None)
@given(dtype=st.sampled_from([torch.float32, torch.float64]),
       batch=st.sampled_from([1, 2, 15, 16, 17, 64, 100, 256, 257, 600]),
       classes=st.integers(1, 12), scale=st.sampled_from([1e-3, 1.0, 30.0, 1e3]),
       specials=st.sampled_from([(), (float("nan"),), (float("inf"), -float("inf")),
                                 (0.0, -0.0)]),
       seed=st.integers(0, 2**31 - 1))
def test_c_cross_entropy_equals_the_numpy_path(dtype, batch, classes, scale, specials,
                                               seed):
    """The C loops give the loss, log p and dz bit for bit as the NumPy/torch
    ops they replace (the cascade order of nll_loss included: batches across
    16-row flushes and 256-row carries; NaN, ±inf and ±0 logits too), which
    equal the tape's in float64 (tests/test_fast.py::
    test_plain_loss_equals_the_tape_in_float64_and_torch_within_tolerance)."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, classes, generator=generator, dtype=dtype) * scale
    z.view(-1)[torch.randperm(z.numel(), generator=generator)[:len(specials)]] = \
        torch.tensor(specials[:z.numel()], dtype=dtype)
    y = torch.randint(0, classes, (batch,), generator=generator)
    results = []
    for use_c in (True, False):
        loss = _plain_loss(batch, dtype, classes, use_c)
        assert (loss.native is not None) == use_c, native.why_unavailable("cross_entropy")
        value = loss.forward(z, y)
        log_probs = loss.log_probs.clone()
        results.append((value.clone(), log_probs, loss.backward().clone()))
    c_loss = results[0][0]
    assert c_loss.dtype == dtype and c_loss.shape == ()
    for name, ours, theirs in zip(("loss", "log p", "dz"), *results, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0, equal_nan=True,
                                   msg=lambda m, name=name: f"{name}: {m}")
        numbers = ~theirs.isnan()  # (a NaN's sign bit carries no meaning)
        assert torch.equal(ours.signbit()[numbers], theirs.signbit()[numbers]), \
            f"{name}: signs of zero"


@needs_compiler
def test_c_cross_entropy_reads_strided_targets_and_refuses_bad_ones():
    from scratchnet.errors import TargetError

    z = torch.randn(8, 3)
    every_other = torch.tensor([0, 9, 1, 9, 2, 9, 0, 9, 1, 9, 2, 9, 0, 9, 1, 9])[::2]
    loss = _plain_loss(8, torch.float32, 3, use_c=True)
    numpy_loss = _plain_loss(8, torch.float32, 3, use_c=False)
    assert torch.equal(loss.forward(z, every_other), numpy_loss.forward(z, every_other))
    for bad, named in (([0, 1, 3, 0, 1, 2, 0, 1], "target 3"),
                       ([0, -1, 2, 0, 1, 5, 0, 1], "target -1")):
        with pytest.raises(TargetError, match=f"{named} is out of bounds for 3 classes"):
            loss.forward(z, torch.tensor(bad))



# --------------------------------------------------------------------------------------
# the Linear layers' products (gemm.c through scratchnet/native/gemm.py)


def _linear_operands(batch: int, d_in: int, d_out: int, dtype: torch.dtype, seed: int,
                     offset: int = 0) -> dict[str, torch.Tensor]:
    """x (at ``offset`` elements into a larger buffer: another alignment),
    weight, bias and dout of varied magnitudes, with exact zeros."""
    generator = torch.Generator().manual_seed(seed)

    def values(*shape: int) -> torch.Tensor:
        scale = 10.0 ** torch.randint(-3, 4, shape, generator=generator).to(dtype)
        drawn = torch.randn(*shape, generator=generator, dtype=dtype) * scale
        return drawn.masked_fill(torch.rand(*shape, generator=generator) < 0.05, 0.0)

    x = values(batch * d_in + offset)[offset:].view(batch, d_in)
    dout = values(batch * d_out + offset)[offset:].view(batch, d_out)
    return {"x": x, "weight": values(d_out, d_in), "bias": values(d_out), "dout": dout}


def _torch_products(o: dict[str, torch.Tensor], bias: bool) -> dict[str, torch.Tensor]:
    return {"forward": (torch.addmm(o["bias"], o["x"], o["weight"].t()) if bias
                        else torch.mm(o["x"], o["weight"].t())),
            "weight_grad": torch.mm(o["dout"].t(), o["x"]),
            "input_grad": torch.mm(o["dout"], o["weight"]),
            **({"bias_grad": torch.sum(o["dout"], 0)} if bias else {})}


def _our_products(products, o: dict[str, torch.Tensor], bias: bool
                  ) -> dict[str, torch.Tensor]:
    batch, d_in, d_out = products.shape
    out, dweight, dx, dbias = (o["x"].new_full(shape, float("nan")) for shape in
                               ((batch, d_out), (d_out, d_in), (batch, d_in), (d_out,)))
    ours = {"forward": products.forward(o["x"], o["weight"], o["bias"] if bias else None,
                                        out),
            "weight_grad": products.weight_grad(o["dout"], o["x"], dweight,
                                                dbias if bias else None),
            "input_grad": products.input_grad(o["dout"], o["weight"], dx)}
    return {**ours, "bias_grad": dbias} if bias else ours


def _assert_within_the_error_bound(ours: torch.Tensor, o: dict[str, torch.Tensor],
                                   bias: bool, kind: str, split: str) -> None:
    """|ours − A·B| ≤ 2k·ε·(|A|·|B|) elementwise: what any order of the k-term
    sums meets (A·B and the bound in float64), and a block written to the wrong
    place does not."""
    wide = {name: tensor.double() for name, tensor in o.items()}
    a, b = {"forward": (wide["x"], wide["weight"].t()),
            "weight_grad": (wide["dout"].t(), wide["x"]),
            "input_grad": (wide["dout"], wide["weight"])}[kind]
    exact, size = a @ b, a.abs() @ b.abs()
    if kind == "forward" and bias:
        exact, size = exact + wide["bias"], size + wide["bias"].abs()
    bound = 2 * (a.shape[1] + 1) * torch.finfo(ours.dtype).eps * size
    assert ((ours.double() - exact).abs() <= bound).all(), f"{kind} split over {split}"


def _assert_sums_within_the_error_bound(ours: torch.Tensor, o: dict[str, torch.Tensor]
                                       ) -> None:
    """|ours − Σ_B dout| ≤ 2B·ε·Σ_B |dout| per column, in any order of the sum."""
    wide = o["dout"].double()
    bound = 2 * wide.shape[0] * torch.finfo(ours.dtype).eps * wide.abs().sum(0)
    assert ((ours.double() - wide.sum(0)).abs() <= bound).all(), "bias gradient"


def _same_bits(ours: torch.Tensor, theirs: torch.Tensor) -> bool:
    return ours.shape == theirs.shape and torch.equal(ours.view(-1).view(torch.uint8),
                                                      theirs.view(-1).view(torch.uint8))


_shapes = dict(batch=st.sampled_from([1, 2, 3, 7, 16, 33, 64, 100, 257]),
               d_in=st.sampled_from([1, 2, 3, 10, 37, 128, 300, 784]),
               d_out=st.sampled_from([1, 2, 5, 10, 16, 37, 64, 200, 512]))


@needs_compiler
@settings(max_examples=40, deadline=None)
@given(dtype=st.sampled_from([torch.float32, torch.float64]), bias=st.booleans(),
       threads=st.sampled_from([1, 2, 3]), offset=st.integers(0, 17),
       seed=st.integers(0, 2**16), **_shapes)
def test_linear_products_equal_torch_ops_bit_for_bit(dtype, batch, d_in, d_out, bias,
                                                      threads, offset, seed):
    """Whatever split was chosen (on the probe's inputs), the products of other
    values at another alignment are torch's, every bit (signs of zero too); so
    is the bias's gradient, summed in the weight gradient's call or not."""
    products = gemm.linear_products(batch, d_in, d_out, dtype, bias, threads=threads)
    if min(batch, d_in, d_out) == 1:  # matrix-vector products: torch's own ops
        assert set(products.splits.values()) == {None}
    operands = _linear_operands(batch, d_in, d_out, dtype, seed, offset)
    theirs = _torch_products(operands, bias)
    for kind, ours in _our_products(products, operands, bias).items():
        assert _same_bits(ours, theirs[kind]), \
            f"{kind} split over {products.splits.get(kind)}, sums {products.sums_in_product}"


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_seed_mlps_products_go_through_gemm_c(dtype):
    """At batch 64 each product of 784-512-512-10 is torch's BLAS call, split
    or not (torch hands small products, 2×2 say, to its own kernels instead),
    and the two 512-wide bias gradients are summed in the weight gradient's
    call (torch's sum over ten columns takes another order)."""
    if gemm.why_unavailable(dtype):
        pytest.skip(gemm.why_unavailable(dtype))
    for d_in, d_out in ((784, 512), (512, 512), (512, 10)):
        products = gemm.linear_products(64, d_in, d_out, dtype, True, threads=2)
        assert None not in products.splits.values(), (d_in, d_out, products.splits)
        assert products.sums_in_product == (d_out == 512), (d_in, d_out)


@needs_compiler
@settings(max_examples=25, deadline=None)
@given(dtype=st.sampled_from([torch.float32, torch.float64]), bias=st.booleans(),
       offset=st.integers(1, 17), seed=st.integers(1, 2**16), **_shapes)
def test_whether_a_split_equals_torch_depends_on_the_shapes_only(dtype, batch, d_in,
                                                                 d_out, bias, offset,
                                                                 seed):
    """The probe's premise: each split, forced, equals torch's op on the probe's
    inputs exactly when it does on other values at another alignment, and so
    does gemm.c's sum of dout (the bias's gradient) at the widths where it is
    tried (multiples of gemm.SUM_WIDTH). And each computes the
    product (its blocks are where they belong), and the sum, within the order-
    free error bound even where its last bits are not torch's."""
    assume(min(batch, d_in, d_out) >= 2)  # (matrix-vector products take torch's ops)
    verdicts = []
    for operands in (_linear_operands(batch, d_in, d_out, dtype, 0),
                     _linear_operands(batch, d_in, d_out, dtype, seed, offset)):
        theirs, verdict = _torch_products(operands, bias), {}
        products = gemm.linear_products(batch, d_in, d_out, dtype, bias, threads=2)
        loop = gemm._gemm_loop(dtype)
        for kind, arguments in products.blas_arguments.items():
            for split in gemm.splits_to_try(arguments, 2, gemm.has_kernel(dtype)):
                products._calls[kind] = functools.partial(loop, *arguments,
                                                          gemm.SPLITS[split], 2)
                products.sums_in_product = bias  # gemm.c's sum, forced
                ours = _our_products(products, operands, bias)
                verdict[kind, split] = _same_bits(ours[kind], theirs[kind])
                _assert_within_the_error_bound(ours[kind], operands, bias, kind, split)
                if kind == "weight_grad" and bias:
                    _assert_sums_within_the_error_bound(ours["bias_grad"], operands)
                    if d_out % gemm.SUM_WIDTH == 0:  # the widths where it is tried
                        verdict["bias_grad", split] = _same_bits(ours["bias_grad"],
                                                                 theirs["bias_grad"])
        verdicts.append(verdict)
    assert verdicts[0] == verdicts[1]


needs_kernel = pytest.mark.skipif(
    native.c_compiler() is None or not gemm.has_kernel(torch.float32),
    reason="gemm.c has no loops of its own here (sgemm.h needs AVX-512)")


def _sgemm_reference(arguments: tuple, a: torch.Tensor, b: torch.Tensor,
                     bias: torch.Tensor | None, c: torch.Tensor) -> torch.Tensor:
    """sgemm.h's order, one element at a time (gemm.c's scratchnet_sgemm_reference)."""
    reference = native.function("gemm", "scratchnet_sgemm_reference", None,
                                [ctypes.c_char, ctypes.c_char, *[ctypes.c_int] * 6,
                                 *[ctypes.c_void_p] * 4])
    reference(*arguments, a.data_ptr(), b.data_ptr(),
              None if bias is None else bias.data_ptr(), c.data_ptr())
    return c


@needs_kernel
@settings(max_examples=30, deadline=None)
@given(batch=st.integers(2, 70), d_in=st.integers(2, 420), d_out=st.integers(2, 90),
       bias=st.booleans(), threads=st.sampled_from([1, 2, 3]), seed=st.integers(0, 2**16),
       offset=st.integers(0, 17))
def test_the_own_loops_sum_in_the_order_sgemm_h_states(batch, d_in, d_out, bias, threads,
                                                       seed, offset):
    """Every way on scratchnet's loops (one block, split over rows or columns),
    at every size (tails of the 16-wide vectors and of the tiles, k across
    chunks of SGEMM_KC = 192), gives the reference order's bits: the chunked
    chains of fused multiply-adds, whether or not that is torch's order for the
    shape. And they compute the product: within the order-free error bound."""
    o = _linear_operands(batch, d_in, d_out, torch.float32, seed, offset)
    products = gemm.linear_products(batch, d_in, d_out, torch.float32, bias,
                                    threads=threads)
    loop = gemm._gemm_loop(torch.float32)
    for kind, arguments in products.blas_arguments.items():
        a, b, with_bias = {"forward": (o["weight"], o["x"], bias),
                           "weight_grad": (o["x"], o["dout"], False),
                           "input_grad": (o["weight"], o["dout"], False)}[kind]
        size = (arguments[3], arguments[2])  # C (m, n) column-major: (n, m) row-major
        expected = _sgemm_reference(arguments, a, b, o["bias"] if with_bias else None,
                                    torch.full(size, float("nan")))
        for split in ("kernel", "kernel rows", "kernel columns"):  # at any size
            products._calls[kind] = functools.partial(loop, *arguments,
                                                      gemm.SPLITS[split], threads)
            ours = _our_products(products, o, bias)[kind]
            assert _same_bits(ours, expected), f"{kind} on {split}"
            _assert_within_the_error_bound(ours, o, bias, kind, split)


@needs_kernel
def test_the_seed_mlps_products_on_the_own_loops_are_torchs():
    """The observation sgemm.h rests on (MKL's order for these shapes, one or
    two threads): at batch 64, the forward and both gradients of 784→512 and
    512→512 on scratchnet's loops equal torch's ops bit for bit, so the probe
    may choose them."""
    for d_in, d_out in ((784, 512), (512, 512)):
        o = _linear_operands(64, d_in, d_out, torch.float32, seed=d_in)
        theirs = _torch_products(o, bias=True)
        for threads in (1, 2):
            products = gemm.linear_products(64, d_in, d_out, torch.float32, True,
                                            threads=threads)
            loop = gemm._gemm_loop(torch.float32)
            for kind, arguments in products.blas_arguments.items():
                for split in ("kernel", "kernel rows", "kernel columns"):
                    products._calls[kind] = functools.partial(
                        loop, *arguments, gemm.SPLITS[split], threads)
                    ours = _our_products(products, o, bias=True)[kind]
                    assert _same_bits(ours, theirs[kind]), (d_in, d_out, kind, split)


@needs_compiler
def test_a_split_that_differs_from_torch_is_never_used(monkeypatch):
    """A loop one ulp off on some splits: the probe keeps only the exact ones,
    and a product with none left takes torch's op."""
    real_loop = gemm._gemm_loop(torch.float32)

    def off_by_one_ulp_unless(exact_splits):
        def loop(*arguments):
            real_loop(*arguments)
            if arguments[8] not in exact_splits:
                out = torch.from_numpy(np.ctypeslib.as_array(
                    ctypes.cast(arguments[-2], ctypes.POINTER(ctypes.c_float)),
                    (arguments[2] * arguments[3],)))  # C: m × n
                out.copy_(torch.nextafter(out, torch.tensor(float("inf"))))
        return loop

    operands = _linear_operands(64, 100, 37, torch.float32, seed=5)
    theirs = _torch_products(operands, bias=True)
    for exact, expected in (({gemm.SPLITS["columns"]}, "columns"), (set(), None)):
        monkeypatch.setattr(gemm, "_plans", {})
        monkeypatch.setattr(gemm, "_gemm_loop", lambda dtype, e=exact: (
            off_by_one_ulp_unless(e)))
        products = gemm.linear_products(64, 100, 37, torch.float32, True, threads=2)
        assert set(products.splits.values()) == {expected}
        for kind, ours in _our_products(products, operands, bias=True).items():
            assert _same_bits(ours, theirs[kind]), kind


@needs_compiler
def test_products_of_a_non_contiguous_input_take_torch_ops():
    operands = _linear_operands(16, 30, 20, torch.float32, seed=3)
    operands["x"] = operands["x"].t().contiguous().t()  # (16, 30), column-major
    products = gemm.linear_products(16, 30, 20, torch.float32, True, threads=2)
    theirs = _torch_products(operands, bias=True)
    for kind, ours in _our_products(products, operands, bias=True).items():
        assert _same_bits(ours, theirs[kind]), kind


def test_without_the_library_every_product_takes_torch_ops(fresh_build, monkeypatch):
    monkeypatch.setenv("SCRATCHNET_NATIVE", "0")
    gemm._gemm_loop.cache_clear()
    monkeypatch.setattr(gemm, "_why_unavailable", {})
    try:
        products = gemm.linear_products(8, 5, 3, torch.float64, True)
        assert set(products.splits.values()) == {None}
        assert gemm.why_unavailable(torch.float64) == "gemm.c: SCRATCHNET_NATIVE=0"
        operands = _linear_operands(8, 5, 3, torch.float64, seed=1)
        theirs = _torch_products(operands, bias=True)
        for kind, ours in _our_products(products, operands, bias=True).items():
            assert _same_bits(ours, theirs[kind]), kind
    finally:
        gemm._gemm_loop.cache_clear()  # the real library again for later tests


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_relu_beside_a_product_is_torchs_relu_and_the_fast_steps_mask(dtype):
    """On every split, forward(relu=True) = torch.relu_(the plain product) and
    input_grad(gate=h) = (the plain product).mul_(sign(h)), bit for bit, with
    NaN, ±0, ±inf and subnormal pre-activations, gates and gradients (signs of
    zero and NaNs' bits included)."""
    batch, d_in, d_out = 64, 48, 40
    specials = torch.tensor([float("nan"), -0.0, 0.0, -1.0, 1.0, float("inf"),
                             float("-inf"), 1e-310, -1e-310, 3.0], dtype=dtype)

    def with_specials(values: torch.Tensor, every: int) -> torch.Tensor:
        strided = values.reshape(-1)[::every]  # (a view: rows of a contiguous tensor)
        strided.copy_(specials.repeat(strided.numel() // len(specials) + 1)[
            :strided.numel()])
        return values

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, d_in, generator=generator, dtype=dtype)
    x[::2] = 0.0  # these rows' pre-activations are the bias plus −0s: the specials
    weight = -torch.rand(d_out, d_in, generator=generator, dtype=dtype)
    bias = specials.repeat(d_out // len(specials))
    dout = torch.randn(batch, d_out, generator=generator, dtype=dtype)
    with_specials(dout[:4], 3)  # (a NaN or inf in dout makes its row of dx NaN)
    h = torch.relu(with_specials(torch.randn(batch, d_in, generator=generator,
                                             dtype=dtype), 5))  # a ReLU's output
    products = gemm.linear_products(batch, d_in, d_out, dtype, True, threads=2)
    loop = gemm._gemm_loop(dtype)
    for kind in ("forward", "input_grad"):
        for split in gemm.splits_to_try(products.blas_arguments[kind], 2,
                                        gemm.has_kernel(dtype)):
            products._calls[kind] = functools.partial(loop, *products.blas_arguments[kind],
                                                      gemm.SPLITS[split], 2)
            if kind == "forward":
                plain = products.forward(x, weight, bias, x.new_empty(batch, d_out))
                expected = torch.relu_(plain)
                ours = products.forward(x, weight, bias, torch.empty_like(plain), relu=True)
            else:
                plain = products.input_grad(dout, weight, x.new_empty(batch, d_in))
                expected = plain.mul_(torch.sign(h))
                ours = products.input_grad(dout, weight, torch.empty_like(plain), gate=h)
            assert _same_bits(ours, expected), f"{kind} split over {split}"
