"""`python -m fusegraph ...`: the `fusegraph` command (as torchrun runs it: torchrun -m fusegraph train ...)."""

import sys

from .cli import main

sys.exit(main())
