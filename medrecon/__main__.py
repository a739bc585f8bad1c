"""``python -m medrecon``: the command line (also what ``torchrun -m medrecon`` runs)."""

import sys

from medrecon.cli import main

sys.exit(main())
