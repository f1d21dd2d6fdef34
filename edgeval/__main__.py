"""`python -m edgeval` runs the command-line interface."""

from edgeval.cli import main

main()
