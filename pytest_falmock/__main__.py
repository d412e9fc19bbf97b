"""``python -m pytest_falmock``: the ``fal-mock`` standalone server."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
