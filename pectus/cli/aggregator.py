"""``pectus-aggregator``: the central server that keeps the record of every run.

The server itself is not part of this release yet; the command exists so that deployments
can already install both console scripts. It states that plainly and exits with status 2.
"""

from __future__ import annotations

import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    print("pectus-aggregator: the aggregator server is not available in this version of Pectus; "
          "use 'pectus-engine simulate' to run methods offline.", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
