"""The ``embedder`` command: one module per subcommand (run, plan, status, search, demo; ``sample.py`` is
``sample-corpus``), plus the generated sample corpus the demo, the examples and the tests use.

A subcommand module has ``add_arguments(parser)`` and ``run(args) -> int``, and imports what it needs only inside
``run``. :func:`embedder.cli.main.main` turns every :class:`~embedder.errors.EmbedderError` into one line and
exit code 2 (any other exception into one line and exit code 1; ``--debug`` shows the traceback instead).

May import: every stage below it, and ``embedder.mock_jina`` (the demo and ``embedder mock-jina``).
"""

from __future__ import annotations
