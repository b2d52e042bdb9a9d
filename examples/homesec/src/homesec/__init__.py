"""homesec: a small home-security backend (the example project testdb's demo runs)."""

__version__ = "0.1.0"
