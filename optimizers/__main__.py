"""``python -m optimizers``: see ``optimizers.cli``."""

import sys

from optimizers.cli import main

sys.exit(main())
