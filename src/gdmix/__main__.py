"""Run the command line with ``python -m gdmix``."""

import sys

from gdmix.cli import main

sys.exit(main())
