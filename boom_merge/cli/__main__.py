"""``python -m boom_merge.cli`` runs the ``boom-merge`` command."""

from boom_merge.cli import main

main(prog_name="boom-merge")
