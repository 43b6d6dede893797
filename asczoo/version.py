"""asczoo's release number, in a module of its own so that any module can name it without importing
the package's public API (``asczoo/__init__``, which reaches every layer). Keep it equal to
``pyproject.toml``'s ``version`` (``tests/test_architecture.py`` checks)."""

__version__ = "0.1.0"
