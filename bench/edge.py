#!/usr/bin/env python
"""Edge C++ runtime: generated fp32 and int8 code vs onnxruntime (1 intra-op thread) vs PyTorch
eager (1 thread), on the same static ResNet-18 U-Net (random init, eval) at 256² and 512².

Prints per size the latencies (median thread CPU time, every runner called once per round in
alternating rounds), ``edge_fp32_vs_ort: X`` (C++ fp32 / onnxruntime; target <= 1.5),
``edge_int8_vs_fp32: X`` (C++ int8 / C++ fp32; target <= 0.7), ``edge_int8_vs_fp32_avx2``
(the same, both built with -march=haswell: AVX2 without AVX-512, where the CPU has AVX2),
``edge_fp32_vs_torch: X`` and the arena / liveness lower bound / naive bytes. Builds with -O3
-march=native.

Then the microcontroller rows: ``arena_vs_lower_bound`` (arena / largest live set) of every
configs/edge and configs/tiny semantic model at 128² (int8 layout, host target), and for the
MCU model lowered for --target stm32h743 and built with arm-none-eabi-g++ (when installed:
``make arm-deps``) ``mcu_flash_bytes`` and ``mcu_ram_bytes`` against the H743's budgets, and
``m7_int8_vs_fp32_instructions``: the instructions of the int8 run over those of a float32
build (lowered for the bench-only ``mps2-an500`` target: it does not fit an H743), both run in
QEMU with ``-icount shift=0`` and counted by SysTick around the model's run (target <= 0.6).

With ``--trained-runs MCU_RUN REFERENCE_RUN`` (``make demo-mcu`` trains the first; the second is
configs/edge/unet_R_18_gray_128_reference.yaml on the same data) the accuracy rows of the
trained MCU model: ``mcu_iou_vs_reference`` (both runs' final val IoU; target within 3 points)
and per int8 calibration method ``mcu_int8_vs_fp32_agreement[method]`` (share of pixels where
the int8 C++ mask equals onnxruntime's fp32 mask over the sample cars at 128², target >= 99.5%)
and ``mcu_int8_iou_drop[method]`` (fp32 IoU - int8 IoU on the val split, in points, target
<= 1). Calibration uses the train split only.
"""

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import torch

from PIL import Image
from pycocotools.coco import COCO

from d2seg.checkpoint import D2SegCheckpointer
from d2seg.config import get_cfg
from d2seg.data.synthetic import render_sample
from d2seg.export.edge import lower_onnx_to_cpp
from d2seg.export.edge.boards import QEMU_INSTRUCTIONS_PER_TICK, elf_memory, run_ticks
from d2seg.export.edge.harness import load_model
from d2seg.export.edge.quantize import CALIB_METHODS
from d2seg.export.edge.targets import TARGETS
from d2seg.export.onnx import export_semantic_onnx
from d2seg.export.samples import letterbox_image, letterbox_size
from d2seg.modeling import build_model

FLAGS = ("-O3", "-march=native")
AVX2_FLAGS = ("-O3", "-march=haswell")  # AVX2 + FMA, no AVX-512: the vpmaddwd int8 kernel


def median_cpu_seconds(runs: dict, repeats: int) -> dict[str, float]:
    """Median thread CPU seconds per call of each of ``runs`` (name → callable), called in
    alternating rounds after one warm-up each, so load drift on a shared machine hits every
    runner alike (all run on this thread: onnxruntime and torch with one thread)."""
    for run in runs.values():
        run()
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.thread_time()
            run()
            times[name].append(time.thread_time() - start)
    return {name: float(np.median(values)) for name, values in times.items()}


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
    avx2 = "avx2" in Path("/proc/cpuinfo").read_text().split() \
        if Path("/proc/cpuinfo").is_file() else False
    if avx2:
        fp32_avx2 = load_model(root / f"fp32_{size}", flags=AVX2_FLAGS)
        int8_avx2 = load_model(root / f"int8_{size}", flags=AVX2_FLAGS)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    tensor = torch.from_numpy(x)

    def run_torch():
        with torch.no_grad():
            model([{"image": tensor[0].to(torch.uint8)}])

    runs = {"edge_fp32": lambda: fp32(x), "edge_int8": lambda: int8(x),
            "onnxruntime": lambda: session.run(None, {name: x}), "torch": run_torch}
    if avx2:
        runs.update(edge_fp32_avx2=lambda: fp32_avx2(x), edge_int8_avx2=lambda: int8_avx2(x))
    seconds = median_cpu_seconds(runs, repeats)
    delta = np.abs(fp32(x) - session.run(None, {name: x})[0]).max()
    print(f"--- {size}x{size} (median thread CPU time of {repeats} alternating rounds)")
    for key, value in seconds.items():
        print(f"{key}_ms: {value * 1e3:.1f}")
    print(f"edge_fp32_vs_ort: {seconds['edge_fp32'] / seconds['onnxruntime']:.2f}")
    print(f"edge_int8_vs_fp32: {seconds['edge_int8'] / seconds['edge_fp32']:.2f}")
    print(f"edge_fp32_vs_torch: {seconds['edge_fp32'] / seconds['torch']:.2f}")
    if avx2:
        print(f"edge_int8_vs_fp32_avx2: "
              f"{seconds['edge_int8_avx2'] / seconds['edge_fp32_avx2']:.2f} (-march=haswell)")
    print(f"max_abs_logit_delta_vs_ort: {delta:.2e}")
    print(f"arena_bytes: {fp32_report['arena_bytes']}  lower_bound_bytes: "
          f"{fp32_report['liveness_lower_bound_bytes']}  naive_bytes: "
          f"{fp32_report['naive_bytes']}")


ARENA_CONFIGS = ("configs/edge/unet_MNV3_small_gray_128.yaml",
                 "configs/tiny/unet_R_18_gray_binary_tiny.yaml",
                 "configs/tiny/unet_MNV3_small_gray_tiny.yaml", "configs/tiny/unet_EffB0_tiny.yaml",
                 "configs/tiny/lraspp_MNV3_tiny.yaml", "configs/tiny/fcn_MNV3_tiny.yaml",
                 "configs/tiny/deeplabv3plus_MNV3_tiny.yaml")
MCU_CONFIG = ARENA_CONFIGS[0]


def _export(config: str, size: int, root: Path) -> Path:
    torch.manual_seed(0)
    cfg = get_cfg()
    cfg.merge_from_file(config)
    cfg.MODEL.DEVICE = "cpu"
    return export_semantic_onnx(build_model(cfg).eval(), height=size, width=size,
                                path=root / f"{Path(config).stem}_{size}.onnx")


def bench_mcu(root: Path) -> None:
    """Arena vs liveness bound per config; the MCU model's flash/RAM after an arm build."""
    print("--- microcontroller (128², int8, random init)")
    for config in ARENA_CONFIGS:
        path = _export(config, 128, root)
        report = lower_onnx_to_cpp(path, root / f"{path.stem}_fp32", name="m")
        print(f"arena_vs_lower_bound[{Path(config).stem}]: "
              f"{report['arena_bytes'] / report['liveness_lower_bound_bytes']:.2f} "
              f"(float32 arena {report['arena_bytes']:,} bytes)")
    path = _export(MCU_CONFIG, 128, root)
    calib = root / "mcu_calib"
    calib.mkdir()
    for i in range(2):
        image = render_sample("carvana", seed=0, size=(128, 128), index=i)["image"]
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        cv2.imwrite(str(calib / f"{i}.png"), gray)
    folder = root / "mcu"
    report = lower_onnx_to_cpp(path, folder, name="mcu", int8=True, calib_dir=calib,
                               target="stm32h743")
    print(f"mcu_weights_bytes: {report['weights_bytes']:,}  mcu_arena_bytes: "
          f"{report['arena_bytes']:,} (lower bound {report['liveness_lower_bound_bytes']:,})")
    small = lower_onnx_to_cpp(_export(MCU_CONFIG, 96, root), root / "mcu_96", name="mcu",
                              int8=True, calib_dir=calib, target="stm32h743")
    print(f"mcu_arena_bytes[96x96]: {small['arena_bytes']:,} (lower bound "
          f"{small['liveness_lower_bound_bytes']:,}; the same weights)")
    if shutil.which("arm-none-eabi-g++") is None:
        print("mcu_flash_bytes / mcu_ram_bytes: skipped (no arm-none-eabi-g++: make arm-deps)")
        return
    subprocess.run(["make", "-s", "-C", str(folder), "prog.elf"], check=True,
                   capture_output=True)
    memory = elf_memory((folder / "size.txt").read_text())
    target = TARGETS["stm32h743"]
    ram = sum(memory["regions"].values())
    print(f"mcu_flash_bytes: {memory['flash_bytes']:,} of {target.flash_budget:,} budget "
          f"({memory['flash_bytes'] / target.flash_budget:.2f})")
    print(f"mcu_ram_bytes: {ram:,} of {sum(r.size for r in target.regions):,} "
          f"({', '.join(f'{n} {b:,}' for n, b in memory['regions'].items())})")
    if shutil.which("qemu-system-arm") is None:
        print("m7_int8_vs_fp32_instructions: skipped (no qemu-system-arm: make arm-deps)")
        return
    # The float32 build does not fit an H743 (~4x the weights and arena): it is lowered for the
    # bench-only mps2-an500 target, the QEMU board's own 4 MiB memories.
    float_folder = root / "mcu_fp32"
    lower_onnx_to_cpp(path, float_folder, name="mcu_fp32", target="mps2-an500")
    instructions = {}
    for precision, model_folder in (("int8", folder), ("fp32", float_folder)):
        (model_folder / "in.pgm").write_bytes(b"P5\n128 128\n255\n" + gray.tobytes())
        run = subprocess.run(["make", "-s", "-C", str(model_folder), "qemu-count", "IN=in.pgm",
                              "OUT=mask.pgm"], check=True, capture_output=True, text=True)
        instructions[precision] = run_ticks(run.stdout + run.stderr) * QEMU_INSTRUCTIONS_PER_TICK
        print(f"m7_{precision}_instructions: {instructions[precision]:,} (QEMU -icount shift=0, "
              f"SysTick around the run)")
    print(f"m7_int8_vs_fp32_instructions: {instructions['int8'] / instructions['fp32']:.3f} "
          f"(target <= 0.6)")


def final_iou(run: Path) -> float:
    """The binary IoU (sem_seg/IoU, %) of a run's last evaluation in its metrics.json."""
    records = [json.loads(line) for line in (run / "metrics.json").read_text().splitlines()]
    return [r["sem_seg/IoU"] for r in records if "sem_seg/IoU" in r][-1]


def _sample_cars(run: Path, split: str, size: int, pad_value: float
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(1×1×size×size float32 gray pixels, bool foreground mask of the region the image fills)
    of each image of the run's train or val COCO json, letterboxed like
    ``deploy/to_pnm.py --keep-aspect pad_value`` (the mask resized nearest to that region)."""
    cfg = get_cfg()
    cfg.merge_from_file(str(run / "config.yaml"))
    coco = Path(cfg.DATASETS.TRAIN[0] if split == "train" else cfg.DATASETS.TEST[0])
    dataset = COCO(str(coco))
    pairs = []
    for image_id in sorted(dataset.getImgIds()):
        record = dataset.loadImgs(image_id)[0]
        gray = np.asarray(Image.open(coco.parent.parent / "images" / record["file_name"])
                          .convert("L"))[:, :, None]
        mask = np.zeros((record["height"], record["width"]), np.uint8)
        for annotation in dataset.loadAnns(dataset.getAnnIds(imgIds=image_id)):
            mask |= dataset.annToMask(annotation)
        height, width = letterbox_size(*mask.shape, size, size)
        mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST) > 0
        pixels = letterbox_image(gray, size, size, pad_value).astype(np.float32)
        pairs.append((pixels.transpose(2, 0, 1)[None], mask))
    return pairs


def _iou(pred: list[np.ndarray], truth: list[np.ndarray]) -> float:
    """Binary IoU (%) over all pairs; each prediction is cropped to its truth's region."""
    pred = [p[:t.shape[0], :t.shape[1]] for p, t in zip(pred, truth)]
    inter = sum(int((p & t).sum()) for p, t in zip(pred, truth))
    union = sum(int((p | t).sum()) for p, t in zip(pred, truth))
    return 100.0 * inter / max(union, 1)


def bench_trained(mcu_run: Path, reference_run: Path, root: Path, size: int = 128) -> None:
    """IoU of the trained MCU model vs the R-18 reference; int8 vs fp32 per calibration, on
    images letterboxed with the model's pixel mean as the deploy path feeds them."""
    print(f"--- trained MCU model ({mcu_run}) vs reference ({reference_run})")
    mcu, reference = final_iou(mcu_run), final_iou(reference_run)
    print(f"mcu_iou_vs_reference: {mcu:.2f} vs {reference:.2f} ({mcu - reference:+.2f} points; "
          f"target >= -3)")
    cfg = get_cfg()
    cfg.merge_from_file(str(mcu_run / "config.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    pad = cfg.MODEL.PIXEL_MEAN[0]
    model = build_model(cfg).eval()
    D2SegCheckpointer(model).load(str(mcu_run / "model_final.pth"))
    path = export_semantic_onnx(model, height=size, width=size, path=root / "trained.onnx")
    calib = root / "trained_calib"
    calib.mkdir()
    train = _sample_cars(mcu_run, "train", size, pad)
    for k, (x, _) in enumerate(train):
        cv2.imwrite(str(calib / f"{k}.png"), x[0, 0].round().astype(np.uint8))
    val = _sample_cars(mcu_run, "val", size, pad)
    samples = train + val
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    fp32 = [session.run(None, {name: x})[0][0, 0] > 0 for x, _ in samples]
    fp32_iou = _iou(fp32[-len(val):], [m for _, m in val])
    print(f"mcu_fp32_val_iou_{size}: {fp32_iou:.2f} (onnxruntime, {len(val)} val images "
          f"letterboxed to {size}x{size} with pad {pad:g})")
    for method in CALIB_METHODS:
        folder = root / f"trained_int8_{method}"
        lower_onnx_to_cpp(path, folder, name=f"car_{method}", int8=True, calib_dir=calib,
                          calib_method=method, mask_output=True, calib_pad_value=pad)
        int8_model = load_model(folder, flags=FLAGS)
        int8 = [int8_model(x)[0, 0] > 0.5 for x, _ in samples]
        # Over the region the image fills: the pad holds no image and the model was never
        # trained there (training pads are ignore labels).
        agree = np.mean([(a == b)[:m.shape[0], :m.shape[1]].mean()
                         for a, b, (_, m) in zip(int8, fp32, samples)])
        drop = fp32_iou - _iou(int8[-len(val):], [m for _, m in val])
        print(f"mcu_int8_vs_fp32_agreement[{method}]: {agree:.4%} of {len(samples)} images "
              f"(target >= 99.5%)")
        print(f"mcu_int8_iou_drop[{method}]: {drop:+.2f} points (target <= 1)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--repeats", type=int, default=5, help="at 256²; half at 512²")
    parser.add_argument("--mcu-only", action="store_true", help="only the microcontroller rows")
    parser.add_argument("--trained-runs", nargs=2, type=Path, metavar=("MCU_RUN", "REFERENCE_RUN"),
                        help="also the accuracy rows of a trained MCU run vs a reference run")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = get_cfg()
    cfg.merge_from_file("configs/tiny/unet_R_18_tiny.yaml")
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg).eval()
    with tempfile.TemporaryDirectory(prefix="d2seg_bench_edge_") as tmp:
        for size in [] if args.mcu_only else args.sizes:
            repeats = args.repeats if size <= 256 else max(1, args.repeats // 2)
            bench_size(model, size, repeats, Path(tmp))
        bench_mcu(Path(tmp))
        if args.trained_runs:
            bench_trained(*args.trained_runs, Path(tmp))


if __name__ == "__main__":
    main()
