#!/usr/bin/env python3
"""Seed entry point: collect in-persona answers from the teacher (distill.teacher.collect)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runs from a checkout without PYTHONPATH

from distill.teacher.collect import style_main  # noqa: E402

if __name__ == "__main__":
    style_main()
