"""`python -m edgeval` runs the command-line interface."""

from edgeval.faces.cli import main

# Guarded: worker processes are spawned, and spawn re-imports the main module in each child.
if __name__ == "__main__":
    main()
