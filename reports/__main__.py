"""``python -m gradparity.reports DIR [DIR ...] --out DIR``: merge report directories into one report (merge.py)."""

import sys

from .merge import main

if __name__ == "__main__":
    sys.exit(main())
