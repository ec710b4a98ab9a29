"""Build a lowered model folder with g++ and call it from Python (ctypes); tests and bench."""

import ctypes
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from d2seg.export.edge.project import RUNTIME_DIR

CXX_FLAGS = ("-std=c++17", "-Wall", "-Wextra", "-Werror")


def _compile(sources: list[Path], output: Path, flags: tuple[str, ...],
             cxx: str = "g++") -> None:
    """``cxx`` (g++ or a cross g++) over the sources; -I the runtime and the sources' folder
    (where ``.incbin`` finds the weights file)."""
    folders = sorted({f"-I{s.parent}" for s in sources})
    command = [cxx, *CXX_FLAGS, *flags, f"-I{RUNTIME_DIR}", *folders, *map(str, sources),
               "-o", str(output)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-4000:]}")


class CompiledModel:
    """A lowered model loaded from its shared library: ``model(x)`` → output array.

    ``x``: float32 1×C×H×W pixels 0-255; returns float32 of the report's output shape.
    """

    def __init__(self, library: Path, report: dict):
        self.report = report
        self.input_shape = tuple(report["input_shape"])
        self.output_shape = tuple(report["output_shape"])
        self._lib = ctypes.CDLL(str(library))
        self._run = getattr(self._lib, f"{report['name']}_run")
        self._run.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        self._run.restype = ctypes.c_int

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.shape != self.input_shape:
            raise ValueError(f"input shape {x.shape}, the model takes {self.input_shape}")
        y = np.empty(self.output_shape, dtype=np.float32)
        self._run(x.ctypes.data, y.ctypes.data)
        return y


def load_model(model_dir: str | Path, *, flags: tuple[str, ...] = ("-O2",)) -> CompiledModel:
    """Compile ``model_dir``/{name}.cpp into a shared library in a temp folder and load it."""
    model_dir = Path(model_dir)
    report = json.loads((model_dir / "report.json").read_text())
    with tempfile.TemporaryDirectory(prefix="d2seg_edge_") as tmp:
        library = Path(tmp) / f"lib{report['name']}.so"
        name = report["name"]
        _compile([model_dir / f"{name}.cpp", model_dir / f"{name}_weights.S"], library,
                 ("-shared", "-fPIC", *flags))
        # The loaded library stays mapped after its file is deleted.
        return CompiledModel(library, report)


def build_program(model_dir: str | Path, output: str | Path, *,
                  flags: tuple[str, ...] = ("-O3",), cxx: str = "g++") -> Path:
    """``g++ -std=c++17 -I deploy/runtime -I DIR DIR/*.cpp DIR/*.S -o output`` (the folder's
    ``prog``); ``cxx`` names another compiler, e.g. ``aarch64-linux-gnu-g++``."""
    model_dir = Path(model_dir)
    _compile(sorted([*model_dir.glob("*.cpp"), *model_dir.glob("*.S")]), Path(output), flags,
             cxx)
    return Path(output)
