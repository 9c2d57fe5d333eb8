"""``python -m rnnbench`` is ``rnnbench``."""

from rnnbench.cli import main

main()
