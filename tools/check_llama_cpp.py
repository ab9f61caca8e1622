"""Setup check: llama-cpp-python can decode a batch on this CPU (a -march=native build may pick kernels,
such as AMX, that crash in a VM). Exit 0 when it works; make setup rebuilds with portable flags otherwise."""

import subprocess
import sys

PROBE = """
from llama_cpp import Llama
from distill.bases.smollm2 import smollm2_gguf
llm = Llama(str(smollm2_gguf()), n_ctx=128, n_threads=2, verbose=False)
out = llm.create_completion("<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n", max_tokens=4, temperature=0)
assert out["choices"][0]["text"] is not None
"""

if __name__ == "__main__":
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        print(f"llama-cpp-python cannot decode on this machine (exit {result.returncode}): {result.stderr.strip()[-300:]}")
    sys.exit(0 if result.returncode == 0 else 1)
