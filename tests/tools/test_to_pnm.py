"""deploy/to_pnm.py prepares the exact-size PGM/PPM a generated C++ model program reads."""

import subprocess
import sys

import numpy as np
from PIL import Image


def run(repo_root, *args):
    return subprocess.run(
        [sys.executable, str(repo_root / "deploy" / "to_pnm.py"), *map(str, args)],
        capture_output=True, text=True, timeout=60,
    )


def test_writes_binary_pgm_and_ppm_at_the_model_size(repo_root, tmp_path):
    Image.fromarray(np.full((30, 50, 3), 200, np.uint8)).save(tmp_path / "a.jpg")
    for fmt, magic in (("L", b"P5"), ("RGB", b"P6")):
        out = tmp_path / f"a_{fmt}.pnm"
        done = run(repo_root, tmp_path / "a.jpg", "--height", 16, "--width", 24,
                   "--format", fmt, "--output", out)
        assert done.returncode == 0, done.stderr
        assert out.read_bytes()[:2] == magic
        with Image.open(out) as img:
            assert img.size == (24, 16) and img.mode == fmt


def test_unreadable_image_is_one_line_exit_2(repo_root, tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    done = run(repo_root, tmp_path / "bad.jpg", "--height", 8, "--width", 8,
               "--output", tmp_path / "x.pgm")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "bad.jpg" in done.stderr
    assert not (tmp_path / "x.pgm").exists()


def test_keep_aspect_letterboxes_top_left_with_the_pad_value(repo_root, tmp_path):
    # A 30×60 image into 32×32: resized to 16×32 without distortion, rows 16.. are the pad.
    image = np.zeros((30, 60, 3), np.uint8)
    image[:, :30] = 250
    Image.fromarray(image).save(tmp_path / "wide.png")
    out = tmp_path / "wide.pgm"
    done = run(repo_root, tmp_path / "wide.png", "--height", 32, "--width", 32,
               "--keep-aspect", 117, "--output", out)
    assert done.returncode == 0, done.stderr
    assert "image in the top-left 32x16" in done.stdout
    pixels = np.asarray(Image.open(out))
    assert pixels.shape == (32, 32)
    assert (pixels[16:] == 117).all()
    assert (pixels[:16, :14] == 250).all() and (pixels[:16, 18:] == 0).all()
