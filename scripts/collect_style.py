#!/usr/bin/env python3
"""Collect in-persona answers from the teacher (a shim over distill.collect; `--help` lists the flags)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runs from a checkout without PYTHONPATH

from distill.collect import style_main  # noqa: E402

if __name__ == "__main__":
    style_main()
