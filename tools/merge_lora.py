#!/usr/bin/env python3
"""Seed entry point: fuse the LoRA student into its base (Hugging Face layout) + a PEFT copy of the adapter.

    python tools/merge_lora.py --base TinyLlama/TinyLlama-1.1B-Chat-v1.0 --lora models/router_student_mlx --out models/router_merged

Same as `python -m distill.export merge ...` (flags passed through).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distill.blas import ensure_openblas  # noqa: E402

if __name__ == "__main__":
    ensure_openblas()
    from distill.export import main

    main(["merge", *sys.argv[1:]])
