"""`python -m digitserve` is the `digitserve` command."""

import sys

from digitserve.cli import main

sys.exit(main())
