#!/usr/bin/env python3
"""Evaluate the style student on its held-out split (distill.training.style_eval)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runs from a checkout without PYTHONPATH

from distill.training.style_eval import main  # noqa: E402

if __name__ == "__main__":
    main()
