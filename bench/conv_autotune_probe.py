#!/usr/bin/env python
"""Probe (issue 13, DeepLab rows): would per-shape autotuning of the inference copy's convs pay?

Not d2seg code. It wraps every plain ``nn.Conv2d`` of the BatchNorm-folded inference copy
(:func:`d2seg.modeling.batchnorm_folding.fold_batchnorm`) in :class:`Tuned`: on the first call
with a given input shape it times (process CPU clock, best of 3) PyTorch's default conv dispatch
and oneDNN with the weight reordered (prepacked) once for that shape
(``torch.ops.mkldnn._reorder_convolution_weight`` / ``_convolution_pointwise``, the ops
inductor's CPU backend emits; private API) and keeps the faster one for that shape.

For each ``--rows`` entry of ``bench/models.py``'s ``FAMILIES`` it prints, at ``--size``² and
``--threads``: median ms of the plain d2seg model (folded copy, default dispatch), the tuned one
and the reference; both ratios to the reference (median of per-round ratios, the three called in
turn); the CPU time of the first (tuning) call; the largest |difference| of the logits tuned vs
plain; and how many (conv, shape) pairs chose oneDNN.

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python bench/conv_autotune_probe.py --size 128
"""

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

import d2seg.modeling.batchnorm_folding as folding

sys.path.insert(0, str(Path(__file__).resolve().parent))
import models  # noqa: E402  (bench/models.py: FAMILIES, family_pair, render_sample)


class Tuned(nn.Module):
    """``conv`` run by whichever of default dispatch / prepacked oneDNN was faster, per input
    shape (N, C, H, W); ``trials`` collects (ms default, ms oneDNN) per decision."""

    def __init__(self, conv: nn.Conv2d, trials: list):
        super().__init__()
        self.conv, self.trials = conv, trials
        self.choice: dict[tuple, Callable[[torch.Tensor], torch.Tensor]] = {}

    def _onednn(self, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        c = self.conv
        geometry = (list(c.padding), list(c.stride), list(c.dilation), c.groups)
        weight = torch.ops.mkldnn._reorder_convolution_weight(c.weight, *geometry, list(x.shape))
        return lambda x: torch.ops.mkldnn._convolution_pointwise(
            x, weight, c.bias, *geometry, "none", [], "")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        run = self.choice.get(tuple(x.shape))
        if run is None:
            candidates = [self.conv, self._onednn(x)]
            best = []
            for candidate in candidates:
                candidate(x)
                times = []
                for _ in range(3):
                    start = time.process_time()
                    candidate(x)
                    times.append(time.process_time() - start)
                best.append(min(times))
            run = candidates[best.index(min(best))]
            self.choice[tuple(x.shape)] = run
            self.trials.append(best)
        return run(x)


def tuned_fold(trials: list) -> Callable[[nn.Module], nn.Module]:
    plain_fold = folding.fold_batchnorm

    def fold(module: nn.Module) -> nn.Module:
        folded = plain_fold(module)
        for parent in list(folded.modules()):
            for name, child in list(parent.named_children()):
                if type(child) is nn.Conv2d and child.padding_mode == "zeros":
                    setattr(parent, name, Tuned(child, trials))
        return folded
    return fold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=512, help="image side in pixels")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rows", default="deeplabv3plus_r50_latency_ratio,"
                        "deeplabv3_r50_latency_ratio", help="comma-separated FAMILIES names")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sample = models.render_sample("balloons", seed=0, size=(args.size, args.size))
    image = torch.from_numpy(np.ascontiguousarray(sample["image"])).permute(2, 0, 1)
    plain_fold, trials = folding.fold_batchnorm, []
    for name in args.rows.split(","):
        plain, reference = models.family_pair(name)
        tuned, inputs = copy.deepcopy(plain), [{"image": image}]
        with torch.no_grad():
            folding.fold_batchnorm = plain_fold
            plain_out = plain(inputs)[0]["sem_seg"]
            folding.fold_batchnorm = tuned_fold(trials)
            start = time.process_time()
            tuned_out = tuned(inputs)[0]["sem_seg"]
            tuning_s = time.process_time() - start
            calls = (lambda: plain(inputs), lambda: tuned(inputs), lambda: reference(image))
            times: list[list[float]] = [[], [], []]
            for call in calls:
                call()
            for _ in range(args.repeats):
                for call, out in zip(calls, times):
                    start = time.process_time()
                    call()
                    out.append(time.process_time() - start)
        ms = [statistics.median(t) * 1e3 for t in times]
        ratio = [statistics.median(a / b for a, b in zip(t, times[2])) for t in times[:2]]
        print(f"{name} {args.size}px {args.threads} thread(s): plain {ms[0]:.1f} ms, tuned "
              f"{ms[1]:.1f} ms, reference {ms[2]:.1f} ms; plain/ref {ratio[0]:.3f}, tuned/ref "
              f"{ratio[1]:.3f}; tuning call {tuning_s * 1e3:.0f} ms CPU; max|diff| "
              f"{(plain_out - tuned_out).abs().max().item():.1e}; oneDNN chosen "
              f"{sum(b < a for a, b in trials)}/{len(trials)}", flush=True)
        trials.clear()
        folding.fold_batchnorm = plain_fold


if __name__ == "__main__":
    main()
