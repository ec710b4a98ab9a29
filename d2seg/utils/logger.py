"""Logging to the console and to ``OUTPUT_DIR/log.txt``, one file per rank."""

import logging
import os
import sys

_FORMAT = "[%(asctime)s %(name)s %(levelname)s] %(message)s"


def setup_logger(
    output_dir: str | None = None, rank: int = 0, name: str = "d2seg"
) -> logging.Logger:
    """Configure the ``name`` logger (and fvcore's) once per process.

    Rank 0 logs INFO to stdout; every rank logs DEBUG to ``output_dir/log.txt`` (``log.txt.rankN``
    for rank N > 0).
    """
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter(_FORMAT, datefmt="%m/%d %H:%M:%S")
    if rank == 0:
        console = logging.StreamHandler(sys.stdout)
        console.setLevel(logging.INFO)
        console.setFormatter(formatter)
        logger.addHandler(console)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        filename = "log.txt" if rank == 0 else f"log.txt.rank{rank}"
        file_handler = logging.FileHandler(os.path.join(output_dir, filename))
        file_handler.setLevel(logging.DEBUG)
        file_handler.setFormatter(formatter)
        logger.addHandler(file_handler)
    fvcore_logger = logging.getLogger("fvcore")
    fvcore_logger.handlers = logger.handlers
    fvcore_logger.setLevel(logging.INFO)
    fvcore_logger.propagate = False
    return logger
