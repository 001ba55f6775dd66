"""Package attributes imported on first use (PEP 562).

A package ``__init__`` that re-exports its modules' names would import all of them, and with them torch, for any
submodule: ``tools/diagnose.py`` needs ``converters.io``'s atomic writes, not torch's ~2 s of imports.
"""
from __future__ import annotations

import importlib


def lazy_exports(package: str, exports: dict) -> tuple:
    """``(__getattr__, __dir__)`` for ``package`` that import ``exports`` (name -> submodule) when first read."""
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        namespace[name] = value  # later reads skip this function
        return value

    def __dir__() -> list:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
