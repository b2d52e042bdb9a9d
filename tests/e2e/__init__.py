"""End-to-end tests: the installed ``testdb`` command, run in a subprocess, on real PostgreSQL."""
