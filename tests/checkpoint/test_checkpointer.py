"""Checkpoints load as data only, survive interrupted writes, and fine-tune across shapes."""

import logging
import os

import pytest
import torch
from torch import nn

from d2seg.checkpoint import D2SegCheckpointer
from d2seg.errors import CheckpointError


class TinyNet(nn.Module):
    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.trunk = nn.Linear(4, 8)
        self.cls = nn.Linear(8, num_classes)


class NotATensor:
    """A Python object: a pickle holding it could run code when loaded."""


def test_save_then_load_restores_weights_and_extra_state(tmp_path):
    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ckpt = D2SegCheckpointer(model, str(tmp_path), optimizer=opt)
    ckpt.save("model_0000009", iteration=9)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000009.pth"

    fresh = TinyNet()
    extra = D2SegCheckpointer(fresh, str(tmp_path)).resume_or_load("", resume=True)
    assert extra["iteration"] == 9
    for a, b in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(a, b)


def test_pickle_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": TinyNet().state_dict(), "payload": NotATensor()}, path)
    with pytest.raises(CheckpointError, match="cannot be loaded as data"):
        D2SegCheckpointer(TinyNet()).load(str(path))


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all" * 3])
def test_corrupt_file_is_a_checkpoint_error(tmp_path, content):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="bad.pth"):
        D2SegCheckpointer(TinyNet()).load(str(path))


def test_truncated_file_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "full.pth"
    torch.save({"model": TinyNet().state_dict()}, path)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        D2SegCheckpointer(TinyNet()).load(str(cut))


def test_missing_file_says_weights_are_never_downloaded(tmp_path):
    with pytest.raises(CheckpointError, match="never downloads"):
        D2SegCheckpointer(TinyNet()).load(str(tmp_path / "nope.pth"))


def test_plain_state_dict_is_accepted(tmp_path):
    src = TinyNet()
    path = tmp_path / "plain.pth"
    torch.save(src.state_dict(), path)
    dst = TinyNet()
    D2SegCheckpointer(dst).load(str(path))
    assert torch.equal(src.trunk.weight, dst.trunk.weight)


def test_new_number_of_classes_skips_mismatched_head_with_a_warning(tmp_path, caplog):
    src = TinyNet(num_classes=3)
    path = tmp_path / "three.pth"
    torch.save({"model": src.state_dict()}, path)
    dst = TinyNet(num_classes=1)
    before = dst.cls.weight.clone()
    with caplog.at_level(logging.WARNING):
        D2SegCheckpointer(dst).load(str(path))
    assert torch.equal(dst.trunk.weight, src.trunk.weight)
    assert torch.equal(dst.cls.weight, before)
    assert "Skip loading parameter 'cls.weight'" in caplog.text


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = TinyNet()
    ckpt = D2SegCheckpointer(model, str(tmp_path))
    ckpt.save("model_0000000")

    def die_mid_write(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # what a kill during the write looks like to this process

    monkeypatch.setattr(torch, "save", die_mid_write)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save("model_0000001")
    monkeypatch.undo()

    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000000.pth"]
    D2SegCheckpointer(TinyNet(), str(tmp_path)).resume_or_load("", resume=True)


def test_temp_files_of_killed_saves_are_removed_and_checkpoints_kept(tmp_path):
    ckpt = D2SegCheckpointer(TinyNet(), str(tmp_path))
    ckpt.save("model_0000000")
    # What SIGKILL during atomic_open leaves: the hidden temp file of the unfinished save.
    (tmp_path / ".model_0000001.pth.k2x8.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / ".last_checkpoint.9q1z.tmp").write_text("model_0000001.pth")
    (tmp_path / ".notes.tmp").write_text("not ours")

    removed = ckpt.remove_interrupted_saves()

    assert sorted(os.path.basename(p) for p in removed) == [
        ".last_checkpoint.9q1z.tmp", ".model_0000001.pth.k2x8.tmp"]
    assert sorted(os.listdir(tmp_path)) == [".notes.tmp", "last_checkpoint", "model_0000000.pth"]


def test_every_file_carries_the_metadata_and_lean_files_no_optimizer(tmp_path):
    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    metadata = {"thing_classes": ["chip", "capacitor", "resistor"], "tasks": ["instances"]}
    ckpt = D2SegCheckpointer(model, str(tmp_path), metadata=metadata, optimizer=opt)
    ckpt.save("model_0000009", iteration=9)
    ckpt.save("model_best", tag_last=False, model_only=True, iteration=9, **{"segm/AP": 50.0})
    full = torch.load(tmp_path / "model_0000009.pth", weights_only=True)
    lean = torch.load(tmp_path / "model_best.pth", weights_only=True)
    assert full["metadata"] == metadata == lean["metadata"]
    assert "optimizer" in full and "optimizer" not in lean
    assert lean["iteration"] == 9 and lean["segm/AP"] == 50.0
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000009.pth"
    assert os.path.getsize(tmp_path / "model_best.pth") < os.path.getsize(
        tmp_path / "model_0000009.pth"
    )


@pytest.mark.parametrize("content", [b"hello, not a checkpoint\n", b"PK\x03\x04garbage"])
def test_weights_that_are_not_a_checkpoint_name_the_file(tmp_path, content):
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=rf"{path} is not a checkpoint.*fix: point MODEL.WEIGHTS"):
        D2SegCheckpointer(TinyNet()).load(str(path))


def test_a_disk_too_small_for_two_checkpoints_is_refused_before_training(tmp_path, monkeypatch):
    from d2seg.checkpoint import check_free_space, estimated_checkpoint_bytes

    model = TinyNet()
    params = sum(p.numel() * 4 for p in model.parameters())
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    adam = torch.optim.AdamW(model.parameters())
    assert estimated_checkpoint_bytes(model, sgd) == 2 * params  # weights + momentum
    assert estimated_checkpoint_bytes(model, adam) == 3 * params  # weights + two moments
    check_free_space(str(tmp_path), 1000)  # a real disk has room for 2 kB
    usage = type("Usage", (), {"free": 1500 * 2**20})
    monkeypatch.setattr("shutil.disk_usage", lambda folder: usage)
    with pytest.raises(CheckpointError, match=rf"{tmp_path} has 1500 MiB free but 2 checkpoints"):
        check_free_space(str(tmp_path), 1000 * 2**20)
