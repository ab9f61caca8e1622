"""Evaluate the style student on its held-out split (see distill.evaluate)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distill.evaluate import style_main  # noqa: E402

if __name__ == "__main__":
    style_main()
