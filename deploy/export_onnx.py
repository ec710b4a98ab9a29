#!/usr/bin/env python
"""Export a trained d2seg model to ONNX and verify it against PyTorch with onnxruntime.

    python deploy/export_onnx.py --config-file configs/tiny/unet_R_18_tiny.yaml \\
        MODEL.WEIGHTS runs/unet/model_final.pth --output export/unet [--dynamic] [--fp16] \\
        [--height 128 --width 128] [--samples images/]

Writes DIR/model.onnx (static 1×C×H×W; H×W default INPUT.MIN_SIZE_TEST square),
DIR/model_dynamic.onnx with --dynamic, DIR/model_fp16.onnx with --fp16 (Mask R-CNN: fp16 trunk,
fp32 detection post-processing), and DIR/export_report.json. Inputs are float32 N×C×H×W pixels
0-255 in INPUT.FORMAT order; semantic graphs output "logits" N×K×H×W, Mask R-CNN graphs
"boxes", "labels" (1..K), "scores", "masks" (R×1×28×28 probabilities; paste with
d2seg.modeling.postprocess.detector_postprocess). Every graph is checked on sample images
(--samples, else DATASETS.TEST, else synthetic ones) before DIR appears; a failed check or a
bad input is one error line and exit status 2.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from d2seg.checkpoint import D2SegCheckpointer  # noqa: E402
from d2seg.config import get_cfg, validate_cfg  # noqa: E402
from d2seg.errors import ConfigError  # noqa: E402
from d2seg.export import export_model  # noqa: E402
from d2seg.modeling import build_model  # noqa: E402
from d2seg.utils.cli import run_cli  # noqa: E402


class _ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are a :class:`ConfigError` (one line, exit 2 via run_cli)."""

    def error(self, message: str) -> None:
        raise ConfigError(f"{message}; fix: see python deploy/export_onnx.py --help")


def parse_args() -> argparse.Namespace:
    parser = _ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help="model config")
    parser.add_argument("--output", required=True, metavar="DIR", help="new folder to write")
    parser.add_argument("--dynamic", action="store_true", help="also write model_dynamic.onnx")
    parser.add_argument("--fp16", action="store_true", help="also write model_fp16.onnx")
    parser.add_argument("--height", type=int, help="static graph height (with --width)")
    parser.add_argument("--width", type=int, help="static graph width (with --height)")
    parser.add_argument("--samples", metavar="DIR", help="folder of images to verify on")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument(
        "opts", nargs="*", help="config overrides as KEY VALUE pairs, e.g. MODEL.WEIGHTS w.pth"
    )
    # Intermixed: "MODEL.WEIGHTS W" may come before or after --output.
    return parser.parse_intermixed_args()


def main() -> None:
    args = parse_args()
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.MODEL.DEVICE = "cpu"
    validate_cfg(cfg)
    cfg.freeze()
    if not cfg.MODEL.WEIGHTS:
        raise ConfigError(
            "MODEL.WEIGHTS is empty, so there is nothing trained to export; fix: add "
            "MODEL.WEIGHTS path/to/model_final.pth"
        )
    model = build_model(cfg)
    D2SegCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    report = export_model(
        cfg,
        model,
        args.output,
        height=args.height,
        width=args.width,
        dynamic=args.dynamic,
        fp16=args.fp16,
        samples_dir=args.samples,
        opset=args.opset,
    )
    print(f"verified on {report['samples']}")
    for name, check in report["checks"].items():
        numbers = ", ".join(
            f"{k}={v:.3g}" for k, v in check.items() if isinstance(v, float)
        )
        size = report["files"][name]["bytes"]
        print(f"{os.path.join(args.output, name)}: {size} bytes {numbers}")
    print(f"report: {os.path.join(args.output, 'export_report.json')}")


if __name__ == "__main__":
    run_cli(main)
