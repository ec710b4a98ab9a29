"""The lowering report: memory per region of the target, flash, compute."""

from d2seg.export.edge.emit import GeneratedModel
from d2seg.export.edge.targets import Target

KIB = 1024


def lowering_report(model: GeneratedModel, *, name: str, precision: str,
                    calib_method: str | None, calib_pad_value: float | None,
                    input_shape: tuple[int, ...], output_shape: tuple[int, ...],
                    target: Target, io_bytes: int) -> dict:
    """report.json content: bytes, MACs and, per RAM region of ``target``, what the arena, the
    program's reserve and main.cpp's I/O buffers (``io_bytes``) use and what is left."""
    plan = model.plan
    regions = []
    for region in target.regions:
        io = io_bytes if region.name == target.io_region else 0
        used = plan.sizes[region.name] + region.reserved + io
        regions.append({"name": region.name, "bytes": region.size,
                        "arena_bytes": plan.sizes[region.name], "reserved_bytes": region.reserved,
                        "io_bytes": io, "left_bytes": region.size - used, "note": region.note})
    return {
        "name": name,
        "precision": precision,
        "calib_method": calib_method,
        # None: calibration images were stretched to the input size; a number: letterboxed
        # with it (deploy/to_pnm.py --keep-aspect with the same value feeds the model alike).
        "calib_pad_value": calib_pad_value,
        "target": target.name,
        "input_shape": list(input_shape),
        "output_shape": list(output_shape),
        "weights_bytes": model.weights_bytes,
        "arena_bytes": plan.size,
        "liveness_lower_bound_bytes": plan.lower_bound,
        "naive_bytes": plan.naive,
        "peak_node": model.peak_node,
        "macs": model.macs,
        "regions": regions if target.name != "host" else [],
        "flash_bytes": target.flash,
        "flash_budget_bytes": target.flash_budget,
    }


def format_report(report: dict) -> str:
    """Human-readable lines of a :func:`lowering_report`."""
    lines = [
        f"model {report['name']} ({report['precision']}"
        + (f", {report['calib_method']} calibration" if report.get("calib_method") else "")
        + f", target {report['target']}): input "
        f"{report['input_shape']}, output {report['output_shape']}",
        f"weights: {report['weights_bytes']:,} bytes"
        + (f" (flash budget {report['flash_budget_bytes']:,} of {report['flash_bytes']:,})"
           if report["flash_bytes"] else ""),
        f"arena: {report['arena_bytes']:,} bytes (liveness lower bound "
        f"{report['liveness_lower_bound_bytes']:,} at {report['peak_node']}, naive sum "
        f"{report['naive_bytes']:,})",
        f"MACs: {report['macs']:,}",
    ]
    for region in report["regions"]:
        lines.append(
            f"  {region['name']:<9} {region['bytes'] // KIB:>5} KiB: arena "
            f"{region['arena_bytes'] / KIB:7.1f} KiB, reserved {region['reserved_bytes'] / KIB:.0f}"
            f" KiB, I/O {region['io_bytes'] / KIB:.1f} KiB, left {region['left_bytes'] / KIB:.1f}"
            f" KiB")
    return "\n".join(lines)
