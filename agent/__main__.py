"""``python -m agent``: the same as ``invoice-sync-agent``."""

import sys

from agent._cli import main

sys.exit(main())
