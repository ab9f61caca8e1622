#!/usr/bin/env python3
"""Paraphrase seed prompts per skill with the teacher (a shim over distill.collect; `--help` lists the flags)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runs from a checkout without PYTHONPATH

from distill.collect import expand_main  # noqa: E402

if __name__ == "__main__":
    expand_main()
