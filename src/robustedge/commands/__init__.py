"""CLI command modules. Each module defines ``COMMANDS``: a list of click commands/groups.

Modules import heavy libraries (torch, tensorflow) inside the command functions, so that
`robustedge --help` stays fast. Register a new module by adding its name to ``MODULES``.
"""

MODULES: list = ["manifold", "compress", "export", "device", "run", "report"]
