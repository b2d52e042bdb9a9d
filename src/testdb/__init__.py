"""testdb: real PostgreSQL databases for parallel integration tests.

The command line (``testdb``) and the pytest plugin are thin layers over the
functions exported here; see the README for the architecture note.
"""

from testdb.errors import TestdbError

__all__ = ["TestdbError", "__version__"]


def __getattr__(name: str) -> str:
    # The version lives in the distribution's metadata only, read on demand.
    if name == "__version__":
        from testdb.entry import version

        return version()
    raise AttributeError(name)
