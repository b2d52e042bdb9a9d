"""Fresh databases per test, from a warm pool (the ``testdb_fresh_*`` fixtures).

Each test process (xdist worker, or the serial run) keeps a pool of databases cloned ahead
from the run's schema template. A hand-out is a pop from an in-process queue: no SQL and
no socket round trip. A background recycler (a few threads, each with its own admin
connection) clones replacements and drops used databases. Modules:

- :mod:`testdb.fresh.pool`: the pool, its recycler and the kept databases of failed tests;
- :mod:`testdb.fresh.stats`: hand-out and recycle figures, merged across workers;
- :mod:`testdb.fresh.kept`: kept databases of failed tests, for ``testdb status``;
- :mod:`testdb.fresh.plugin`: the pytest hooks and fixtures (imports nothing heavy until
  a test asks for a fresh database).
"""
