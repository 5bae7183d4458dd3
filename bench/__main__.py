"""`python -m bench ...` (what torchrun launches)."""

import sys

from bench.cli import main

sys.exit(main())
