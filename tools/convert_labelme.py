#!/usr/bin/env python
"""tools/convert.py under its first name: ``python tools/convert_labelme.py --input DIR
--output OUT ...`` runs exactly ``python tools/convert.py --input DIR --output OUT ...``."""

import runpy
from pathlib import Path

if __name__ == "__main__":
    runpy.run_path(str(Path(__file__).with_name("convert.py")), run_name="__main__")
