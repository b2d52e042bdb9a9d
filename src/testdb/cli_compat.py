"""What differs across the typer versions testdb supports (see the floor in pyproject.toml).

typer < 0.22 depends on click and raises click's exceptions; newer typer vendors click as
``typer._click`` and its exceptions derive from ``typer.exceptions.TyperException``, a
module older typer does not have. The CLI catches whichever family is installed.
"""

from __future__ import annotations

import importlib


def _usage_error_base() -> type[Exception]:
    try:
        module = importlib.import_module("typer.exceptions")
        base = module.TyperException
    except (ImportError, AttributeError):
        base = importlib.import_module("click.exceptions").ClickException
    assert isinstance(base, type) and issubclass(base, Exception)
    return base


#: The base class of usage errors (bad option, missing argument) in the installed typer.
USAGE_ERRORS: type[Exception] = _usage_error_base()
