#!/usr/bin/env python3
"""Seed entry point: label router prompts with the teacher (distill.teacher.collect; --help lists the flags)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runs from a checkout without PYTHONPATH

from distill.teacher.collect import routes_main  # noqa: E402

if __name__ == "__main__":
    routes_main()
