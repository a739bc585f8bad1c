"""``python -m medrecon``: the ``medrecon`` command (also ``torchrun ... -m medrecon``)."""

import sys

from medrecon.cli import main

if __name__ == "__main__":
    sys.exit(main())
