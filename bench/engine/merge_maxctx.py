"""Merge the JSON files that `ctxscope agent maxctx --out` wrote into one list (stdout)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    records = [json.loads(Path(name).read_text()) for name in sorted(sys.argv[1:])]
    json.dump(records, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
