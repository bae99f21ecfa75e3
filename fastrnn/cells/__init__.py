"""The recurrent cells. Each has a spec (fastrnn.cells.spec.CellSpec) and two backends: a
NumPy twin beside the spec (elman.py) and a compiled one (_elman.pyx).

To add a cell: write its spec and NumPy twin (cells/NAME.py), its compiled twin
(cells/_NAME.pyx, with the same signatures), register the spec in CELLS below and the
extension in setup.py, and add it to the tests' cell parametrisations (see CONTRIBUTING.md).
"""
from .elman import ELMAN
from .gru import GRU
from .lstm import LSTM
from .spec import CellSpec, Weight

CELLS = {spec.name: spec for spec in (ELMAN, LSTM, GRU)}

__all__ = ["CELLS", "CellSpec", "ELMAN", "GRU", "LSTM", "Weight", "get_cell"]


def get_cell(name):
    """The CellSpec of the cell called name ("elman", ...)."""
    if isinstance(name, CellSpec):
        return name
    if not isinstance(name, str) or name not in CELLS:
        raise ValueError(f"cell must be one of {', '.join(map(repr, CELLS))}; got {name!r}")
    return CELLS[name]


def _load_compiled():
    """Import the compiled backends now, as fastrnn is imported (not inside the first call);
    a source tree without a build still imports, with the NumPy backends only."""
    for spec in CELLS.values():
        try:
            spec.backend("cython")
        except ImportError:
            pass


_load_compiled()
