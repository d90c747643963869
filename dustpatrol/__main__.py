"""``python -m dustpatrol`` runs the CLI."""

from dustpatrol.cli import main

main()
