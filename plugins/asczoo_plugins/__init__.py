"""asczoo's built-in plugins.

Each module here is its own entry point of group ``asczoo`` (see pyproject.toml) and registers its
parts exactly as a third-party package would; the core never imports this package by name.
"""
