#!/usr/bin/env python3
"""Seed entry point: merged HF model -> <out>.f16.gguf -> quantized <out> (Q4_K_M by default) + <out>.sha256.

    python tools/convert_to_gguf.py --in models/router_merged --out gguf/router-student.gguf [--quant Q4_K_M|Q4_0|Q5_K_M|Q8_0] [--runner native|docker]

Same as `python -m distill convert ...` (distill.export.gguf).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runs from a checkout without PYTHONPATH

from distill.export.gguf import main  # noqa: E402

if __name__ == "__main__":
    main()
