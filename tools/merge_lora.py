#!/usr/bin/env python3
"""Seed entry point: fuse the LoRA student into its base (Hugging Face layout) + a PEFT copy of the adapter.

    python tools/merge_lora.py --base TinyLlama/TinyLlama-1.1B-Chat-v1.0 --lora models/router_student_mlx --out models/router_merged

Same as `python -m distill merge ...` (distill.export.merge).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runs from a checkout without PYTHONPATH

from distill.export.merge import main  # noqa: E402

if __name__ == "__main__":
    main()
