"""The ``embedder`` command: one module per subcommand (run, plan, status, search, demo), plus the sample corpus
the demo and the examples use.

A subcommand module has ``add_arguments(parser)`` and ``run(args) -> int``, and imports what it needs only inside
``run``. :func:`embedder.cli.main.main` turns every :class:`~embedder.errors.EmbedderError` into one line and
exit code 2.

May import: every stage below it, and ``embedder.mock_jina`` (the demo and ``embedder mock-jina``).
"""

from __future__ import annotations
