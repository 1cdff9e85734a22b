"""Sub-commands of the ``wsol`` CLI: one module per command (see :mod:`wsol.cli`)."""
