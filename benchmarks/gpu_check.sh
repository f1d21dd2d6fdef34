#!/usr/bin/env bash
# The GPU check, for the day a GPU machine is lent (at most 8 minutes; see benchmarks/gpu_check.py for what it
# measures). Builds llama-cpp-python with CUDA from its source distribution, installs edgeval beside it, then runs
# the checks. A device machine reaches no network: give it the sdist and a wheelhouse of edgeval's dependencies
# (`pip download -d wheels ".[test,nvidia]"` on a machine that has the network).
#
#   LLAMA_SDIST=llama_cpp_python-0.3.36.tar.gz WHEELHOUSE=wheels bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv /tmp/edgeval-gpu
. /tmp/edgeval-gpu/bin/activate
pip_args=(--no-index --find-links "${WHEELHOUSE:-wheels}")
# CUDA kernels for this GPU only, and the flash-attention kernels for every KV type pair (mixed K/V types).
CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=native -DGGML_CUDA_FA_ALL_QUANTS=ON" \
  CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" timeout 330 pip install "${pip_args[@]}" "${LLAMA_SDIST:?the llama-cpp-python sdist}"
pip install "${pip_args[@]}" -e ".[test,nvidia]"
timeout 150 python -m benchmarks.gpu_check "$@"
