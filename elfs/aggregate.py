"""`python -m elfs.aggregate DIR [DIR ...] [--out DIR]` rebuilds a sweep's tables (elfs/tables/aggregate.py)."""

import sys

from elfs.tables.aggregate import main

if __name__ == "__main__":
    sys.exit(main())
