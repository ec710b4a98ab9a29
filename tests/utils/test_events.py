"""metrics.json holds the losses the log line shows (median of the last 20 iterations)."""

import json
import logging
from statistics import median

from d2seg.utils.events import EventStorage, JSONWriter, ProgressWriter


def test_metrics_json_losses_match_the_progress_line_and_other_scalars_stay_raw(tmp_path, caplog):
    storage = EventStorage()
    writer = JSONWriter(str(tmp_path / "metrics.json"))
    for it in range(40):
        storage.iter = it
        # a noisy loss: every third iteration spikes
        storage.put_scalars(total_loss=10.0 if it % 3 == 0 else 1.0 + it / 100, lr=0.1 - it / 1000)
        if it == 39:
            storage.put_scalar("validation_loss", 5.0)
    writer.write(storage)
    with caplog.at_level(logging.INFO, logger="d2seg.utils.events"):
        ProgressWriter(40, use_bar=False).write(storage)
    (row,) = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    assert row["iteration"] == 39
    assert f"total_loss: {row['total_loss']:.4g}" in caplog.text
    assert row["total_loss"] == median(1.0 + i / 100 if i % 3 else 10.0 for i in range(20, 40))
    assert row["lr"] == 0.1 - 39 / 1000  # not a loss: the value at the iteration
    assert row["validation_loss"] == 5.0  # once per evaluation: nothing to smooth over
