#!/bin/sh
# Entry point of the teacher server image (droidhead/llama-server): checks what llama-server would only report
# deep in its log, then runs it with the given arguments.
#   - the model file (--model/-m or LLAMA_ARG_MODEL) must be a readable file: a wrong TEACHER_MODEL_FILE or
#     weights directory fails here with one line naming both;
#   - published beyond loopback (TEACHER_BIND other than 127.0.0.1/localhost/::1) needs an API key
#     (--api-key or LLAMA_API_KEY): an open 20B teacher on the LAN is anyone's.
set -eu

fail() {
    echo "error: $*" >&2
    exit 2
}

model="${LLAMA_ARG_MODEL:-}"
api_key="${LLAMA_API_KEY:-}"
previous=""
for arg in "$@"; do
    case "$previous" in
        --model|-m) model="$arg" ;;
        --api-key) api_key="$arg" ;;
    esac
    case "$arg" in
        --model=*) model="${arg#--model=}" ;;
        --api-key=*) api_key="${arg#--api-key=}" ;;
    esac
    previous="$arg"
done

where="${TEACHER_WEIGHTS_DIR:+ (host directory $TEACHER_WEIGHTS_DIR)}"
if [ -z "$model" ]; then
    fail "no model given (--model FILE.gguf or LLAMA_ARG_MODEL)"
elif [ ! -e "$model" ]; then
    fail "model file $model not found$where; set TEACHER_MODEL_FILE / TEACHER_WEIGHTS_DIR (docs/teacher.md)"
elif [ ! -f "$model" ] || [ ! -r "$model" ]; then
    fail "model file $model is not a readable file$where (the server runs as uid $(id -u); make it world-readable)"
fi

case "${TEACHER_BIND:-127.0.0.1}" in
    127.0.0.1|localhost|::1|"[::1]") ;;
    *) if [ -z "$api_key" ]; then
           fail "TEACHER_BIND=${TEACHER_BIND} publishes the teacher beyond this machine: set TEACHER_API_KEY too"
       fi ;;
esac

exec llama-server "$@"
