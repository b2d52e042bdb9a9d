"""The one ``"package.module:attr.path"`` resolver (schema callables, settings-cache hooks)."""

from __future__ import annotations

import importlib
from typing import Any


def resolve_attr(spec: str) -> Any:
    """Import ``package.module`` and follow ``attr.path``; ValueError/ImportError/AttributeError say why."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"{spec!r} must look like 'package.module:function'")
    target: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        target = getattr(target, part)
    return target
