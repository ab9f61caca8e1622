#!/usr/bin/env python3
"""Paraphrase seed prompts per skill with the teacher (distill.teacher.expand)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runs from a checkout without PYTHONPATH

from distill.teacher.expand import main  # noqa: E402

if __name__ == "__main__":
    main()
