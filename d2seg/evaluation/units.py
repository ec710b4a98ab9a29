"""The scale of each evaluation metric, so that tables and plots never mix them unlabelled.

As Detectron2 reports them, COCO ``AP*``, ``PQ/SQ/RQ`` and ``IoU/mIoU/fwIoU/ACC/mACC/pACC``
are percentages (×100). ``Dice``, ``F1``, ``precision`` and ``recall`` are fractions in 0..1
and ``MCC`` in −1..1, as torchmetrics returns them (see ``sem_seg_evaluation``).
"""

FRACTION_METRICS = ("Dice", "F1", "precision", "recall", "MCC")


def base_metric(key: str) -> str:
    """The metric of a result key: ``"segm/AP-cat" → "AP"``, ``"sem_seg/mIoU" → "mIoU"``."""
    return key.rsplit("/", 1)[-1].split("-", 1)[0]


def is_fraction(key: str) -> bool:
    """Whether a key (``"Dice"``, ``"sem_seg/MCC-car"``) is a fraction rather than a %."""
    return base_metric(key) in FRACTION_METRICS


def unit(key: str) -> str:
    """``"%"``, ``"0–1"`` or (MCC) ``"−1…1"``: the label to write beside a metric."""
    if not is_fraction(key):
        return "%"
    return "−1…1" if base_metric(key) == "MCC" else "0–1"


def with_unit(key: str) -> str:
    """A column or legend label: ``"IoU (%)"``, ``"Dice (0–1)"``."""
    return f"{key} ({unit(key)})"


def format_number(key: str, value: float) -> str:
    """A value at its scale's precision, without unit: % with 2 decimals (``"41.25"``),
    fractions with 3 (``"0.912"``); ``"—"`` for NaN."""
    if value != value:  # NaN
        return "—"
    return f"{value:.2f}" if unit(key) == "%" else f"{value:.3f}"
