#!/bin/sh
# Entry points of the llama.cpp image:
#   convert  HF_DIR --outfile OUT.gguf [--outtype f16]   -> convert_hf_to_gguf.py
#   quantize IN.gguf OUT.gguf TYPE [THREADS]            -> llama-quantize
#   version                                             -> the pinned llama.cpp release
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
    version) cat "$LLAMA_CPP_DIR/VERSION" ;;
    *) usage; exit 2 ;;
esac
