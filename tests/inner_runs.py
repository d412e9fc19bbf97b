"""Arguments for pytester's inner pytest runs: none of the outer session's extra plugins.

The inner runs test this plugin only. The others just slow every in-process run down, and
pytest-asyncio would warn that its loop-scope ini option is unset (a warning that ends up in
the outer run's summary).
"""

from __future__ import annotations

#: For a run that uses xdist itself (``-n``).
QUIET_WITH_XDIST = ("-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:hypothesispytest")
QUIET_WITH_XDIST += ("-p", "no:asyncio", "-p", "no:cov")
#: For every other run.
QUIET = (*QUIET_WITH_XDIST, "-p", "no:xdist")
