#!/bin/sh
# Entry points of the llama.cpp converter image (droidhead/llamacpp):
#   convert  HF_DIR --outfile OUT.gguf [--outtype f16]   -> llama.cpp's convert_hf_to_gguf.py
#   quantize IN.gguf OUT.gguf TYPE [THREADS]            -> llama-quantize
#   version                                             -> the llama-cpp-python release whose llama.cpp this is
set -eu
LLAMA_CPP_DIR="${LLAMA_CPP_DIR:-/opt/llama.cpp}"

usage() {
    echo "usage: convert HF_DIR --outfile OUT.gguf [--outtype f16] | quantize IN.gguf OUT.gguf TYPE [THREADS] | version" >&2
}

command="${1:-}"
if [ $# -gt 0 ]; then shift; fi
case "$command" in
    convert) exec python3 "$LLAMA_CPP_DIR/convert_hf_to_gguf.py" "$@" ;;
    quantize) exec llama-quantize "$@" ;;
    version) echo "llama-cpp-python $(cat "$LLAMA_CPP_DIR/LLAMA_CPP_PYTHON_VERSION")" ;;
    *) usage; exit 2 ;;
esac
