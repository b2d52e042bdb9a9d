"""testdb: real PostgreSQL databases for parallel integration tests.

The command line (``testdb``) and the pytest plugin are thin layers over the
functions exported here; see the README for the architecture note.
"""

from testdb.errors import TestdbError

__all__ = ["TestdbError", "__version__"]
__version__ = "0.1.0"
