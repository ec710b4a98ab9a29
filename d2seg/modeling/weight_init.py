"""Detectron2's weight initialisations (``c2_msra_fill``, ``c2_xavier_fill``) from fvcore.

Imported here once, quietly: importing ``fvcore.nn`` scripts its focal losses with
``torch.jit.script``, which torch 2.14 deprecates with a FutureWarning that every command would
otherwise print before its own output.
"""

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated",
                            category=FutureWarning)
    from fvcore.nn.weight_init import c2_msra_fill, c2_xavier_fill

__all__ = ["c2_msra_fill", "c2_xavier_fill"]
