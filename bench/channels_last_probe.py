#!/usr/bin/env python
"""Probe (issue 11, ``tiled_vs_sahi``): does a channels-last input speed up the tiny Mask
R-CNN's backbone+FPN on SAHI's 512² tiles as much as on features mode's large blocks?

Not d2seg code. For each input size of ``--sizes`` it calls the BatchNorm-folded backbone (as
the model's forward does) on a batch-1 input of that size, contiguous and channels-last in turn,
``--rounds`` times, and prints the median process CPU ms of each, their ratio, and the largest
|difference| of the FPN features.

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python bench/channels_last_probe.py --sizes 512 1280
"""

import argparse
import statistics
import time

import torch

from d2seg.config import get_cfg
from d2seg.modeling import build_model
from d2seg.modeling.batchnorm_folding import inference_module

from predict import CONFIG  # bench/predict.py's tiny Mask R-CNN config


def cpu_ms(fn, x: torch.Tensor) -> float:
    start = time.process_time()
    fn(x)
    return (time.process_time() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1280])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIG))
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 1
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.inference_mode():
        backbone = inference_module(model.backbone)
        for size in args.sizes:
            x = torch.randn(1, 3, size, size)
            last = x.contiguous(memory_format=torch.channels_last)
            reference, other = backbone(x), backbone(last)  # also the warm-up
            diff = max(float((reference[k] - other[k]).abs().max()) for k in reference)
            plain, channels_last = [], []
            for _ in range(args.rounds):
                plain.append(cpu_ms(backbone, x))
                channels_last.append(cpu_ms(backbone, last))
            a, b = statistics.median(plain), statistics.median(channels_last)
            print(f"{size}²: contiguous {a:.0f} ms  channels_last {b:.0f} ms  ratio {b / a:.3f}  "
                  f"max |feature diff| {diff:.1e}  (median of {args.rounds} alternating rounds)")


if __name__ == "__main__":
    main()
