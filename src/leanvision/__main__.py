"""``python -m leanvision`` (also what ``torchrun -m leanvision train ...`` runs)."""

import sys

from .cli import main

sys.exit(main())
