"""What this machine can do: versions, backend, CPU features, memory, GPUs, Hub settings, a budget."""

from __future__ import annotations

import json
import multiprocessing
import platform
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

import edgeval
from edgeval.core.machine import cpu_features as cpu_features
from edgeval.core.machine import cpu_model as cpu_model
from edgeval.core.machine import parse_cpuinfo_flags as parse_cpuinfo_flags
from edgeval.core.memory import RepackMode
from edgeval.core.paths import cache_dir, edgeval_home
from edgeval.core.quants import WeightQuant
from edgeval.edges import hub
from edgeval.llama import engine, synth

GB = 1_000_000_000
GIB = 1 << 30


@dataclass(frozen=True)
class Gpu:
    """A GPU and its memory."""

    name: str
    vram_total_bytes: int
    source: str  # "nvml", "llama.cpp" or "unified"


@dataclass(frozen=True)
class RepackProbe:
    """Which of llama.cpp's weight-repacking modes survive a real matrix product on this machine."""

    tested: bool
    works: bool | None  # whether some repacking works (None: not tested)
    detail: str
    mode: RepackMode | None = None  # the best mode that survived (OFF: none did); None: not tested
    tried: tuple[tuple[RepackMode, str], ...] = ()  # each mode tried and what happened ("works", "signal 4", ...)


@dataclass(frozen=True)
class MachineReport:
    """Everything `edgeval doctor` tells."""

    python: str
    platform: str
    edgeval: str
    llama_cpp_python: str
    llama_cpp_build: str | None
    gpu_offload: bool
    backend: str
    llama_cpp_system_info: str
    cpu: str
    cpu_cores: int
    cpu_threads: int
    cpu_features: list[str]
    ram_total_bytes: int
    ram_available_bytes: int
    gpus: list[Gpu]
    hf_cache: str
    hf_offline: bool
    hf_token_configured: bool
    edgeval_home: str
    repack: RepackProbe
    suggested_budget_bytes: int
    suggested_budget_reason: str
    # The throughput knees remembered for this build: (size class, device, knee in sequences, its gain over one).
    throughput: list[tuple[str, str, int, float]] = field(default_factory=list)

    def to_json(self) -> str:
        """One JSON object (the keys of `--json`)."""
        return json.dumps(asdict(self), indent=2)


def nvidia_gpus() -> list[Gpu]:
    """NVIDIA GPUs through NVML (needs the nvidia extra: nvidia-ml-py); empty when absent."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # NVML raises its own error types when no driver is present
        return []
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            total = pynvml.nvmlDeviceGetMemoryInfo(handle).total
            gpus.append(Gpu(name.decode() if isinstance(name, bytes) else str(name), int(total), "nvml"))
        return gpus
    finally:
        pynvml.nvmlShutdown()


def find_gpus(ram_total: int) -> list[Gpu]:
    """GPUs edgeval can budget for: NVML first, then llama.cpp's own devices, then Apple unified memory."""
    gpus = nvidia_gpus()
    if not gpus:
        gpus = [Gpu(d.description or d.name, d.memory_total, "llama.cpp") for d in engine.gpu_devices()]
    if not gpus and sys.platform == "darwin" and platform.machine() == "arm64":
        gpus = [Gpu(f"{cpu_model()} (unified memory)", ram_total, "unified")]
    return gpus


def suggest_budget(ram_total: int, ram_available: int, gpus: list[Gpu], gpu_offload: bool) -> tuple[int, str]:
    """A default memory budget for `plan`/`compare`, and why."""
    half_gb = GB // 2
    if gpu_offload and gpus:
        gpu = max(gpus, key=lambda g: g.vram_total_bytes)
        if gpu.source == "unified":
            budget = int(gpu.vram_total_bytes * 0.70) // half_gb * half_gb
            return budget, "70% of unified memory: about what Metal lets one process keep resident"
        budget = int(gpu.vram_total_bytes * 0.90) // half_gb * half_gb
        return budget, f"90% of {gpu.name}'s memory, so the whole model and KV cache stay on the GPU"
    by_total = int(ram_total * 0.75)
    by_available = ram_available - GIB
    budget = max(min(by_total, by_available), 0) // half_gb * half_gb
    if by_available < by_total:
        return budget, "available RAM less 1 GiB of headroom (other programs are using memory now)"
    return budget, "75% of RAM, leaving room for the operating system and other programs"


# ---------------------------------------------------------------- repacking probe

PROBE_SPEC = synth.SynthSpec(name="repack-probe", n_layer=1, n_embd=256, n_head=4, n_head_kv=2, n_ff=512)


# The modes the probe tries, best first: llama.cpp's own choice of extra buffers (AMX first where the build has it),
# then CPU_REPACK's layouts alone (CPUs whose AMX path crashes, as the Xeons these notes were measured on).
PROBED_MODES = (RepackMode.ALL, RepackMode.CPU_REPACK)


def _probe_child(path: str, mode: str) -> None:
    """Load with repacking in `mode` and decode: a crash here is what the probe is looking for."""
    with (
        engine.Model(Path(path), engine.LoadOptions(repack=RepackMode(mode), n_gpu_layers=0)) as model,
        engine.Context(model, engine.ContextOptions(n_ctx=256)) as ctx,
    ):
        ctx.generate(model.tokenize("<|im_start|>user\nhi<|im_end|>\n"), max_tokens=4)


def _try_mode(path: Path, mode: RepackMode, timeout_s: float, target: Callable[[str, str], None]) -> str:
    """Run `target` in a child process: "works", or how it failed."""
    spawn = multiprocessing.get_context("spawn")
    child = spawn.Process(target=target, args=(str(path), mode.value), daemon=True)
    child.start()
    child.join(timeout_s)
    if child.is_alive():
        child.kill()
        child.join()
        return f"did not finish in {timeout_s:.0f} s"
    code = child.exitcode or 0
    if code == 0:
        return "works"
    return f"signal {-code}" if code < 0 else f"exit code {code}"


def probe_repack(timeout_s: float = 120.0, target: Callable[[str, str], None] = _probe_child) -> RepackProbe:
    """Run a tiny Q4_0 model in each repacking mode, best first, each in a child process; the first that
    survives is this machine's mode (none: OFF)."""
    model = synth.build(PROBE_SPEC, WeightQuant.Q4_0, cache_dir("models"), threads=1)
    tried: list[tuple[RepackMode, str]] = []
    for mode in PROBED_MODES:
        outcome = _try_mode(model, mode, timeout_s, target)
        tried.append((mode, outcome))
        if outcome == "works":
            break
    mode = tried[-1][0] if tried[-1][1] == "works" else RepackMode.OFF
    failed = "; ".join(f"{m.value} {outcome}" for m, outcome in tried if outcome != "works")
    if mode is RepackMode.ALL:
        detail = "repacking works on this CPU: leave it on for speed"
    elif mode is RepackMode.CPU_REPACK:
        detail = f"CPU_REPACK repacking works on this CPU (llama.cpp's full choice crashed: {failed}): edgeval uses it"
    else:
        detail = f"repacking crashed a tiny model ({failed}): edgeval loads with repacking off here"
    return RepackProbe(True, mode is not RepackMode.OFF, detail, mode, tuple(tried))


def _probe_cache() -> Path:
    return edgeval_home() / "repack-probe.json"


def _probe_key() -> str:
    # "modes:" marks verdicts of the probe that tries each mode (an older verdict, on/off only, is probed again).
    return f"modes:{engine.build_version()}|{engine.LLAMA_CPP_PYTHON_VERSION}|{cpu_model()}|{' '.join(cpu_features())}"


def repack_cached() -> RepackMode | None:
    """The probe's remembered mode for this llama.cpp build and CPU, without probing (None: never probed)."""
    try:
        cached = json.loads(_probe_cache().read_text())
        if cached.get("key") == _probe_key():
            return RepackMode(cached["mode"])
    except (OSError, ValueError, KeyError):
        pass
    return None


def repack_default() -> RepackMode:
    """How to load with weight repacking: the best mode the probe found for this llama.cpp build and CPU (probed
    once)."""
    cached = repack_cached()
    if cached is not None:
        return cached
    return _remember(probe_repack()).mode or RepackMode.OFF


def repack_mode(requested: bool | None) -> RepackMode:
    """The mode a run loads with: off when `requested` is False; else the probe's mode (probed once), and where
    the probe found none, llama.cpp's own choice when repacking was asked for explicitly."""
    if requested is False:
        return RepackMode.OFF
    found = repack_default()
    return RepackMode.ALL if requested and found is RepackMode.OFF else found


def repack_expected(requested: bool | None = None) -> RepackMode:
    """The mode a run will load with, for predictions made before any run (`plan`): as `repack_mode`, from the
    remembered verdict only, else llama.cpp's own choice (the probe passes on most CPUs; a plan must not wait)."""
    if requested is False:
        return RepackMode.OFF
    cached = repack_cached()
    return RepackMode.ALL if cached is None or (requested and cached is RepackMode.OFF) else cached


def _remember(result: RepackProbe) -> RepackProbe:
    if result.tested and result.mode is not None:
        record = {"key": _probe_key(), "mode": result.mode.value, "works": result.works, "detail": result.detail}
        _probe_cache().write_text(json.dumps(record))
    return result


def examine(probe: bool = True) -> MachineReport:
    """Gather the machine report (runs the repacking probe unless `probe` is False)."""
    memory = psutil.virtual_memory()
    offload = engine.supports_gpu_offload()
    gpus = find_gpus(memory.total)
    budget, reason = suggest_budget(memory.total, memory.available, gpus, offload)
    repack = _remember(probe_repack()) if probe else RepackProbe(False, None, "not tested (--no-probe)")
    return MachineReport(
        python=f"{platform.python_implementation()} {platform.python_version()}",
        platform=platform.platform(),
        edgeval=edgeval.__version__,
        llama_cpp_python=engine.LLAMA_CPP_PYTHON_VERSION,
        llama_cpp_build=engine.build_version(),
        gpu_offload=offload,
        backend=engine.backend_name(),
        llama_cpp_system_info=engine.system_info(),
        cpu=cpu_model(),
        cpu_cores=psutil.cpu_count(logical=False) or 0,
        cpu_threads=psutil.cpu_count(logical=True) or 0,
        cpu_features=cpu_features(),
        ram_total_bytes=int(memory.total),
        ram_available_bytes=int(memory.available),
        gpus=gpus,
        hf_cache=str(hub.cache_folder()),
        hf_offline=hub.offline(),
        hf_token_configured=hub.token_configured(),
        edgeval_home=str(edgeval_home()),
        repack=repack,
        suggested_budget_bytes=budget,
        suggested_budget_reason=reason,
        throughput=throughput_knees(),
    )


def throughput_knees() -> list[tuple[str, str, int, float]]:
    """What `--parallel auto` measured on this machine for this llama.cpp build (`throughput.probe`)."""
    from edgeval.llama import throughput

    build = throughput.build_prefix()
    return [
        (k.key.split("|")[-1], k.key.split("|")[-2], k.knee, round(k.gain, 2))
        for k in throughput.remembered()
        if k.key.startswith(build)
    ]
