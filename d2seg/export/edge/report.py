"""The lowering report: memory, compute and whether the model fits common edge devices."""

from d2seg.export.edge.emit import GeneratedModel

KIB, MIB = 1024, 1024 * 1024

# Budgets of the boards d2seg users deploy to. The arena must be one contiguous block.
DEVICES = {
    "ESP32-S3": {"sram": 512 * KIB, "psram": 8 * MIB, "flash": 8 * MIB,
                 "note": "512 KB SRAM + 8 MB PSRAM, 8-16 MB flash"},
    "STM32H743": {"sram": 512 * KIB, "psram": 0, "flash": 2 * MIB,
                  "note": "1 MB RAM (largest contiguous block: 512 KB AXI SRAM), 2 MB flash"},
}


def device_fit(weights_bytes: int, arena_bytes: int) -> dict:
    """Per device: whether the weights fit in flash and the arena in (PS)RAM."""
    fits = {}
    for device, budget in DEVICES.items():
        in_sram = arena_bytes <= budget["sram"]
        in_psram = arena_bytes <= budget["psram"]
        flash_ok = weights_bytes <= budget["flash"]
        fits[device] = {
            "fits": flash_ok and (in_sram or in_psram),
            "weights_in_flash": flash_ok,
            "arena_in": "SRAM" if in_sram else "PSRAM" if in_psram else "does not fit",
            "budget": budget["note"],
        }
    return fits


def lowering_report(model: GeneratedModel, *, name: str, precision: str,
                    input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> dict:
    """report.json content: bytes, MACs and device fit of one generated model."""
    plan = model.plan
    return {
        "name": name,
        "precision": precision,
        "input_shape": list(input_shape),
        "output_shape": list(output_shape),
        "weights_bytes": model.weights_bytes,
        "arena_bytes": plan.size,
        "liveness_lower_bound_bytes": plan.lower_bound,
        "naive_bytes": plan.naive,
        "macs": model.macs,
        "devices": device_fit(model.weights_bytes, plan.size),
    }


def format_report(report: dict) -> str:
    """Human-readable lines of a :func:`lowering_report`."""
    lines = [
        f"model {report['name']} ({report['precision']}): input {report['input_shape']}, "
        f"output {report['output_shape']}",
        f"weights: {report['weights_bytes']:,} bytes",
        f"arena: {report['arena_bytes']:,} bytes (liveness lower bound "
        f"{report['liveness_lower_bound_bytes']:,}, naive sum {report['naive_bytes']:,})",
        f"MACs: {report['macs']:,}",
    ]
    for device, fit in report["devices"].items():
        verdict = "fits" if fit["fits"] else "does NOT fit"
        lines.append(f"{device} ({fit['budget']}): {verdict} (weights in flash: "
                     f"{'yes' if fit['weights_in_flash'] else 'no'}, arena: {fit['arena_in']})")
    return "\n".join(lines)
