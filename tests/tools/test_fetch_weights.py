"""tools/fetch_weights.py: torchvision weights fetched once, hash-checked, usable as weights."""

import hashlib
import subprocess
import sys

import pytest
import torch
import torchvision

from d2seg.checkpoint import D2SegCheckpointer
from d2seg.config import get_cfg
from d2seg.modeling import build_model


def fetch(repo_root, *args):
    return subprocess.run(
        [sys.executable, str(repo_root / "tools" / "fetch_weights.py"), *map(str, args)],
        capture_output=True, text=True, timeout=120,
    )


def assert_one_line_error(done, *fragments):
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    for fragment in fragments:
        assert fragment in done.stderr


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    """A torchvision ResNet-18 state dict named as torchvision does: resnet18-<sha256[:8]>.pth."""
    folder = tmp_path_factory.mktemp("mirror")
    state = torchvision.models.resnet18().state_dict()
    path = folder / "resnet18.pth"
    torch.save(state, path)
    named = folder / f"resnet18-{hashlib.sha256(path.read_bytes()).hexdigest()[:8]}.pth"
    path.rename(named)
    return named, state


def test_file_url_writes_a_state_dict_that_loads_into_the_tiny_unet(repo_root, resnet18_file,
                                                                       tmp_path):
    source, state = resnet18_file
    done = fetch(repo_root, "resnet18", "--url", source.as_uri(), "--output", tmp_path / "w")
    assert done.returncode == 0, done.stderr
    written = tmp_path / "w" / "resnet18.pth"
    assert f"MODEL.WEIGHTS {written}" in done.stdout

    cfg = get_cfg()
    cfg.merge_from_file(str(repo_root / "configs" / "tiny" / "unet_R_18_tiny.yaml"))
    model = build_model(cfg)
    D2SegCheckpointer(model, str(tmp_path)).load(str(written))
    backbone = {k[len("backbone."):]: v for k, v in model.state_dict().items()
                if k.startswith("backbone.")}
    assert backbone and set(backbone) <= set(state)
    for key, value in backbone.items():
        assert torch.equal(value, state[key]), key


def test_hash_mismatch_is_one_line_and_writes_nothing(repo_root, resnet18_file, tmp_path):
    source, _ = resnet18_file
    wrong = tmp_path / "resnet18-00000000.pth"
    wrong.write_bytes(source.read_bytes())
    done = fetch(repo_root, "resnet18", "--url", wrong.as_uri(), "--output", tmp_path / "w")
    assert_one_line_error(done, "sha256", wrong.as_uri())
    assert not (tmp_path / "w").exists()


def test_unreachable_host_says_how_to_copy_the_file_by_hand(repo_root, tmp_path):
    url = "http://127.0.0.1:9/resnet18-f37072fd.pth"  # port 9 (discard) is closed
    done = fetch(repo_root, "resnet18", "--url", url, "--output", tmp_path / "w")
    assert_one_line_error(done, "cannot reach 127.0.0.1:9", f"fix: download {url}",
                          str(tmp_path / "w" / "resnet18.pth"))
    assert not (tmp_path / "w").exists()


def test_unknown_name_lists_the_known_ones(repo_root, tmp_path):
    done = fetch(repo_root, "resnet51", "--output", tmp_path)
    assert_one_line_error(done, "resnet51", "resnet18, resnet34, resnet50, resnet101")
