"""Seed entry point: LoRA-train the router student (see distill.train)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distill.train import main  # noqa: E402

if __name__ == "__main__":
    main("router")
