"""`python -m flows`: see flows/cli.py."""

import sys

from flows.cli import main

sys.exit(main())
