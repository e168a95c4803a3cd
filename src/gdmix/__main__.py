"""Run the command line with ``python -m gdmix``."""

from gdmix.cli import entry

entry()
