"""``python -m bench.demo``, what ``scripts/demo.sh`` runs."""

from __future__ import annotations

import sys

from bench.demo.run import main

if __name__ == "__main__":
    sys.exit(main())
