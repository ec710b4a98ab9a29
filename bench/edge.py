#!/usr/bin/env python
"""Edge C++ runtime: generated fp32 and int8 code vs onnxruntime (1 intra-op thread) vs PyTorch
eager (1 thread), on the same static ResNet-18 U-Net (random init, eval) at 256² and 512².

Prints per size the latencies, ``edge_fp32_vs_ort: X`` (C++ fp32 / onnxruntime; target <= 1.5),
``edge_int8_vs_fp32: X`` (C++ int8 / C++ fp32; target <= 0.7), ``edge_fp32_vs_torch: X`` and
the arena / liveness lower bound / naive bytes. Builds with -O3 -march=native.
"""

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import torch

from d2seg.config import get_cfg
from d2seg.data.synthetic import render_sample
from d2seg.export.edge import lower_onnx_to_cpp
from d2seg.export.edge.harness import load_model
from d2seg.export.onnx import export_semantic_onnx
from d2seg.modeling import build_model

FLAGS = ("-O3", "-march=native")


def median_seconds(run, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def bench_size(model, size: int, repeats: int, root: Path) -> None:
    path = export_semantic_onnx(model, height=size, width=size, path=root / f"unet{size}.onnx")
    calib = root / f"calib{size}"
    calib.mkdir()
    images = [render_sample("carvana", seed=0, size=(size, size), index=i)["image"]
              for i in range(2)]
    for i, image in enumerate(images):
        cv2.imwrite(str(calib / f"{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    x = images[0].transpose(2, 0, 1)[None].astype(np.float32)
    fp32_report = lower_onnx_to_cpp(path, root / f"fp32_{size}", name="unet_fp32")
    lower_onnx_to_cpp(path, root / f"int8_{size}", name="unet_int8", int8=True, calib_dir=calib)
    fp32 = load_model(root / f"fp32_{size}", flags=FLAGS)
    int8 = load_model(root / f"int8_{size}", flags=FLAGS)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    tensor = torch.from_numpy(x)

    def run_torch():
        with torch.no_grad():
            model([{"image": tensor[0].to(torch.uint8)}])

    seconds = {
        "edge_fp32": median_seconds(lambda: fp32(x), repeats),
        "edge_int8": median_seconds(lambda: int8(x), repeats),
        "onnxruntime": median_seconds(lambda: session.run(None, {name: x}), repeats),
        "torch": median_seconds(run_torch, repeats),
    }
    delta = np.abs(fp32(x) - session.run(None, {name: x})[0]).max()
    print(f"--- {size}x{size} (median of {repeats})")
    for key, value in seconds.items():
        print(f"{key}_ms: {value * 1e3:.1f}")
    print(f"edge_fp32_vs_ort: {seconds['edge_fp32'] / seconds['onnxruntime']:.2f}")
    print(f"edge_int8_vs_fp32: {seconds['edge_int8'] / seconds['edge_fp32']:.2f}")
    print(f"edge_fp32_vs_torch: {seconds['edge_fp32'] / seconds['torch']:.2f}")
    print(f"max_abs_logit_delta_vs_ort: {delta:.2e}")
    print(f"arena_bytes: {fp32_report['arena_bytes']}  lower_bound_bytes: "
          f"{fp32_report['liveness_lower_bound_bytes']}  naive_bytes: "
          f"{fp32_report['naive_bytes']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--repeats", type=int, default=5, help="at 256²; half at 512²")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = get_cfg()
    cfg.merge_from_file("configs/tiny/unet_R_18_tiny.yaml")
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg).eval()
    with tempfile.TemporaryDirectory(prefix="d2seg_bench_edge_") as tmp:
        for size in args.sizes:
            repeats = args.repeats if size <= 256 else max(1, args.repeats // 2)
            bench_size(model, size, repeats, Path(tmp))


if __name__ == "__main__":
    main()
