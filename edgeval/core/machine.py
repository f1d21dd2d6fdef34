"""What this CPU is: its name and the SIMD and matrix features that decide llama.cpp's speed (read from the
operating system, without llama.cpp)."""

from __future__ import annotations

import platform
import re
import subprocess
import sys
from pathlib import Path

# CPU features that decide llama.cpp's speed, as Linux's /proc/cpuinfo names them.
_X86_FEATURES = {
    "avx": "AVX",
    "avx2": "AVX2",
    "fma": "FMA",
    "f16c": "F16C",
    "avx512f": "AVX512F",
    "avx512_vnni": "AVX512_VNNI",
    "avx512_bf16": "AVX512_BF16",
    "avx_vnni": "AVX_VNNI",
    "amx_tile": "AMX_TILE",
    "amx_int8": "AMX_INT8",
    "amx_bf16": "AMX_BF16",
}
_ARM_FEATURES = {"asimd": "NEON", "asimddp": "DOTPROD", "sve": "SVE", "i8mm": "MATMUL_INT8", "fphp": "FP16"}
_MAC_FEATURES = {
    "hw.optional.neon": "NEON",
    "hw.optional.arm.FEAT_DotProd": "DOTPROD",
    "hw.optional.arm.FEAT_I8MM": "MATMUL_INT8",
    "hw.optional.arm.FEAT_FP16": "FP16",
}


def cpu_model() -> str:
    """The CPU's marketing name."""
    if sys.platform == "darwin":
        name = _sysctl("machdep.cpu.brand_string")
        if name:
            return name
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_features() -> list[str]:
    """SIMD and matrix features that matter to llama.cpp, as this CPU reports them."""
    if sys.platform == "darwin":
        return [name for key, name in _MAC_FEATURES.items() if _sysctl(key) == "1"]
    try:
        return parse_cpuinfo_flags(Path("/proc/cpuinfo").read_text())
    except OSError:
        return []


def parse_cpuinfo_flags(text: str) -> list[str]:
    """The features that matter, from the text of Linux's /proc/cpuinfo (x86 `flags` or ARM `Features`)."""
    match = re.search(r"^(flags|Features)\s*:\s*(.*)$", text, re.MULTILINE)
    flags = set(match.group(2).split()) if match else set()
    table = _X86_FEATURES if match and match.group(1) == "flags" else _ARM_FEATURES
    return [name for flag, name in table.items() if flag in flags]


def _sysctl(key: str) -> str:
    try:
        return subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
