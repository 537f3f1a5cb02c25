"""``python -m carbon_callbacks.cli``: the same as ``carbon-callbacks``."""

import sys

from carbon_callbacks.cli.commands import main

sys.exit(main())
