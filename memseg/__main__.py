"""``python -m memseg``: the command line."""

import sys

from memseg.cli import main

sys.exit(main())
