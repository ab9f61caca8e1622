#!/usr/bin/env python3
"""Seed entry point: LoRA-train the style student with mlx-lm (distill.training.train)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runs from a checkout without PYTHONPATH

from distill.training.train import style_main  # noqa: E402

if __name__ == "__main__":
    style_main()
