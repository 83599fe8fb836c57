"""The optional plotting dependencies of spcl.analysis (the `analysis` extra of setup.py) and the
error that says how to install them. Imported lazily by plots.py and embedding.py; checked up front
by tools/analyze.py so a run does not fail after its model passes."""
from __future__ import annotations

import importlib

INSTALL_HINT = 'Install the analysis extra: pip install -e ".[analysis]" (matplotlib, scikit-learn).'


class MissingDependencyError(ImportError):
    """An optional package of the `analysis` extra is not installed."""


def require(module: str, purpose: str = "") -> None:
    """Raise MissingDependencyError naming `module`, `purpose` and the install command when it is absent."""
    try:
        importlib.import_module(module)
    except ImportError as e:
        what = f" for {purpose}" if purpose else ""
        raise MissingDependencyError(f"{module} is needed{what} but is not installed. {INSTALL_HINT}") from e


def available(module: str) -> bool:
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        return False
