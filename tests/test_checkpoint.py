"""Checkpoints (scratchnet/checkpoint.py): round trip, the bare model.pt, the
checksum, atomic writes, and refusal of damaged files and other architectures."""

import os

import pytest
import torch

from reference.models import MODELS
from scratchnet import checkpoint as ckpt
from scratchnet.errors import CheckpointError
from scratchnet.optim import Adam
from scratchnet.train import build_model


def trained_state(model_name: str = "SingleLayerNN"):
    """A scratchnet model and Adam optimizer after one step, so the optimizer has
    state (step, exp_avg, exp_avg_sq)."""
    from scratchnet import nn

    torch.manual_seed(0)
    model = build_model(model_name)
    optimizer = Adam(model.parameters(), lr=1e-3)
    loss = nn.CrossEntropyLoss()(model(torch.rand(4, 1, 28, 28)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    optimizer.step()
    return model, optimizer


def save(directory, model, optimizer, epoch=1):
    return ckpt.save_checkpoint(
        directory, model_state_dict=ckpt.plain_state_dict(model),
        optimizer_state_dict=optimizer.state_dict(), epoch=epoch,
        config={"model": "SingleLayerNN"}, loader_state={"epoch": epoch},
        rng_state={"torch": torch.get_rng_state()}, metrics={"history": {}})


def test_round_trip_keeps_every_tensor_and_field(tmp_path):
    model, optimizer = trained_state()
    path = save(tmp_path, model, optimizer, epoch=3)
    loaded = ckpt.load_checkpoint(path)
    assert loaded["epoch"] == 3 and loaded["format_version"] == ckpt.FORMAT_VERSION
    assert loaded["config"] == {"model": "SingleLayerNN"}
    for key, value in model.state_dict().items():
        assert torch.equal(loaded["model_state_dict"][key], value), key
        assert type(loaded["model_state_dict"][key]) is torch.Tensor, key
    state = optimizer.state_dict()["state"]
    for index, entries in state.items():
        for name, value in entries.items():
            assert torch.equal(loaded["optimizer_state_dict"]["state"][index][name],
                               value), f"optimizer {index}.{name}"
    assert torch.equal(loaded["rng_state"]["torch"], torch.get_rng_state())


def test_checkpoint_and_model_pt_load_into_torch_nn_and_torch_optim(tmp_path):
    model, optimizer = trained_state()
    save(tmp_path, model, optimizer)
    ref = MODELS["SingleLayerNN"]()
    ref.load_state_dict(torch.load(tmp_path / ckpt.MODEL_NAME, weights_only=True))
    for key, value in model.state_dict().items():
        assert torch.equal(ref.state_dict()[key], value), key
    loaded = ckpt.load_checkpoint(tmp_path / ckpt.CHECKPOINT_NAME)
    ref.load_state_dict(loaded["model_state_dict"])
    torch_adam = torch.optim.Adam(ref.parameters(), lr=1e-3)
    torch_adam.load_state_dict(loaded["optimizer_state_dict"])  # torch.optim's layout
    assert torch.equal(torch_adam.state_dict()["state"][0]["exp_avg"],
                       optimizer.state_dict()["state"][0]["exp_avg"])


def test_writes_leave_no_temporary_files(tmp_path):
    model, optimizer = trained_state()
    save(tmp_path, model, optimizer)
    save(tmp_path, model, optimizer, epoch=2)  # overwrite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "model.pt"]


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model, optimizer = trained_state()
    path = save(tmp_path, model, optimizer, epoch=1)
    before = path.read_bytes()

    def crash(obj, file):
        file.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save(tmp_path, model, optimizer, epoch=2)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "model.pt"]


def test_truncated_file_is_refused(tmp_path):
    model, optimizer = trained_state()
    path = save(tmp_path, model, optimizer)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        ckpt.load_checkpoint(path)


def test_flipped_bytes_are_refused(tmp_path):
    model, optimizer = trained_state()
    path = save(tmp_path, model, optimizer)
    content = bytearray(path.read_bytes())
    middle = len(content) // 2
    content[middle:middle + 64] = bytes(255 - b for b in content[middle:middle + 64])
    path.write_bytes(bytes(content))
    with pytest.raises(CheckpointError):
        ckpt.load_checkpoint(path)


def test_checksum_catches_a_changed_tensor(tmp_path):
    model, optimizer = trained_state()
    path = save(tmp_path, model, optimizer)
    checkpoint = torch.load(path, weights_only=True)
    # a well-formed file whose weights no longer match its checksum
    checkpoint["model_state_dict"]["linear_relu_stack.0.bias"][0] += 1e-3
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="checksum"):
        ckpt.load_checkpoint(path)
    checkpoint["model_state_dict"]["linear_relu_stack.0.bias"][0] -= 1e-3
    checkpoint["optimizer_state_dict"]["state"][0]["exp_avg_sq"][0, 0] *= 2
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="checksum"):
        ckpt.load_checkpoint(path)


@pytest.mark.parametrize("content, reason", [
    (b"not a checkpoint at all\n", "corrupt or truncated"),
    (b"", "corrupt or truncated"),
])
def test_garbage_files_are_refused(tmp_path, content, reason):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=reason):
        ckpt.load_checkpoint(path)


def test_other_objects_missing_files_and_versions_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        ckpt.load_checkpoint(tmp_path / "missing.pt")
    torch.save({"weights": [1, 2, 3]}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a scratchnet checkpoint"):
        ckpt.load_checkpoint(tmp_path / "other.pt")
    model, optimizer = trained_state()
    path = save(tmp_path, model, optimizer)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["format_version"] = 99
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="format_version 99"):
        ckpt.load_checkpoint(path)


def test_bare_state_dict_is_accepted_only_when_asked(tmp_path):
    model, optimizer = trained_state()
    save(tmp_path, model, optimizer)
    bare = ckpt.load_checkpoint(tmp_path / ckpt.MODEL_NAME, allow_bare=True)
    assert bare["config"] is None and set(bare["model_state_dict"]) == set(
        model.state_dict())
    with pytest.raises(CheckpointError, match="not a scratchnet checkpoint"):
        ckpt.load_checkpoint(tmp_path / ckpt.MODEL_NAME)


@pytest.mark.parametrize("other, reason", [
    ("SimpleNN", "shape"),  # same keys, other sizes
    ("FCNetwork", "missing"),  # other keys
])
def test_another_architecture_is_refused(other, reason):
    model, _ = trained_state("SingleLayerNN")
    state = ckpt.plain_state_dict(model)
    with pytest.raises(CheckpointError, match=f"another architecture.*{reason}"):
        ckpt.verify_architecture(state, build_model(other), "ckpt", other)
    ckpt.verify_architecture(state, build_model("SingleLayerNN"))  # its own: fine


def test_checksum_depends_on_every_byte():
    model, optimizer = trained_state()
    state = ckpt.plain_state_dict(model)
    first = ckpt.state_checksum(state, optimizer.state_dict())
    assert first == ckpt.state_checksum(ckpt.plain_state_dict(model),
                                        optimizer.state_dict())
    state["linear_relu_stack.2.bias"] = state["linear_relu_stack.2.bias"].clone()
    state["linear_relu_stack.2.bias"].view(torch.int32)[3] ^= 1  # one bit
    assert ckpt.state_checksum(state, optimizer.state_dict()) != first


def test_atomic_json(tmp_path):
    path = ckpt.atomic_write_json({"a": [1, 2.5, None]}, tmp_path / "sub" / "m.json")
    assert path.read_text() == '{\n  "a": [\n    1,\n    2.5,\n    null\n  ]\n}\n'
    assert os.listdir(tmp_path / "sub") == ["m.json"]
