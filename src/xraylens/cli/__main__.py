"""``python -m xraylens.cli``: the same command line as the ``xraylens`` script (for subprocesses and CI)."""

import sys

from xraylens.cli import main

sys.exit(main())
