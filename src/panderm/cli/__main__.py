"""`python -m panderm.cli`: the `panderm` command."""
import sys

from . import main

sys.exit(main())
