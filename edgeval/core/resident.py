"""Measuring memory from outside a process: its resident set (total, anonymous and file-backed), a sampler of
its peak while it runs, and its GPU memory and the GPU's free memory through NVML where that answers."""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RSS:
    """A process's resident memory: the total and, where the OS tells, its anonymous and file-backed parts."""

    total: int
    anon: int | None = None  # heap, llama.cpp's buffers, repacked weights: only swap can free them
    file: int | None = None  # mapped files (a memory-mapped model, shared libraries): the kernel can drop them


def _status(pid: int) -> dict[str, int] | None:
    """Linux's /proc/<pid>/status memory lines in bytes — VmRSS (= RssAnon + RssFile + RssShmem), its parts, and
    VmHWM (the kernel's own high-water mark of VmRSS); None elsewhere, {} for a zombie (its memory is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    return {k: int(v) * 1024 for k, v in re.findall(r"^(VmRSS|RssAnon|RssFile|VmHWM):\s+(\d+) kB", text, re.M)}


def _rss_of(fields: dict[str, int]) -> RSS:
    return RSS(fields.get("VmRSS", 0), fields.get("RssAnon", 0), fields.get("RssFile", 0))


def _status_rss(pid: int) -> RSS | None:
    """RSS from /proc/<pid>/status; None where there is none."""
    fields = _status(pid)
    return None if fields is None else _rss_of(fields)


def _status_hwm(pid: int) -> int | None:
    """The process's resident high-water mark (VmHWM), None where there is none."""
    return (_status(pid) or {}).get("VmHWM")


def own_peak_bytes() -> int | None:
    """This process's own resident high-water mark (VmHWM), for a worker to tell its supervisor: a poller outside
    cannot read it once the process has ended."""
    return _status_hwm(os.getpid())


def read_rss(process: Any) -> RSS:
    """A psutil.Process's resident memory now: /proc/<pid>/status on Linux, psutil's figures elsewhere."""
    status = _status_rss(process.pid)
    if status is not None:
        return status
    info = process.memory_info()
    return RSS(int(info.rss))


class PeakRSS:
    """Samples a process's resident memory from outside, in a thread, and keeps the peak.

    Use as a context manager around the child's lifetime. Where the kernel keeps the resident set's high-water mark
    (Linux's VmHWM) `peak` is that — exact, transients included — with the file-backed part of the highest sample
    and the rest anonymous, and the thread samples every `hwm_interval_s` only for that split (a 10 ms poller beside
    a 2-core decode cost it ~3% of its speed); elsewhere `peak` is the highest sample, taken every `interval_s`.
    """

    def __init__(self, pid: int, interval_s: float = 0.01, hwm_interval_s: float = 0.25) -> None:
        import psutil

        self._process = psutil.Process(pid)
        self._hwm = _status_hwm(pid) is not None
        self._interval = hwm_interval_s if self._hwm else interval_s
        self.peak = RSS(0)
        self._highest = RSS(0)  # the highest sample
        self._hwm_seen = 0  # the highest high-water mark read or reported
        self.peak_vram_bytes: int | None = None
        self.samples = 0
        self._nvml = _nvml_handles()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the thread's samples and one taken on demand (`sample`)
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def peak_bytes(self) -> int:
        """The highest RSS seen."""
        return self.peak.total

    def sample(self) -> bool:
        """Read the process's memory now and keep it if it is the peak; False once the process is gone."""
        import psutil

        if self._hwm:  # one read: the resident set and its peak
            fields = _status(self._process.pid)
            if fields is None:
                return False  # the process is gone
            rss, hwm = _rss_of(fields), fields.get("VmHWM")
        else:
            try:
                rss, hwm = read_rss(self._process), None
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                return False
        with self._lock:
            if rss.total > self._highest.total:
                self._highest = rss
            self._hwm_seen = max(self._hwm_seen, hwm or 0)
            self._settle()
            if self._nvml:
                vram = _process_vram(self._nvml, self._process.pid)
                self.peak_vram_bytes = max(self.peak_vram_bytes or 0, vram)
            self.samples += 1
        return True

    def observe(self, hwm: int | None) -> None:
        """A high-water mark the process reported of itself (`own_peak_bytes`): the peak, if higher."""
        if not hwm:
            return
        with self._lock:
            self._hwm_seen = max(self._hwm_seen, hwm)
            self._settle()

    def _settle(self) -> None:
        """The peak: the highest sample, or the high-water mark above it with that sample's file-backed part."""
        if self._hwm_seen > self._highest.total:
            file = self._highest.file
            self.peak = RSS(self._hwm_seen, None if file is None else self._hwm_seen - file, file)
        else:
            self.peak = self._highest

    def _run(self) -> None:
        while not self._stop.is_set() and self.sample():
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _nvml_handles() -> list[Any]:
    """NVML device handles when nvidia-ml-py is installed and a driver answers; else empty."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:  # no package, no driver, no device: no VRAM figures
        return []


def gpu_free_bytes() -> int | None:
    """Free memory over the NVIDIA GPUs by NVML (no GPU context needed), or None where NVML does not answer."""
    handles = _nvml_handles()
    if not handles:
        return None
    import pynvml

    try:
        return sum(int(pynvml.nvmlDeviceGetMemoryInfo(h).free) for h in handles)
    except Exception:  # a driver that stops answering: let the caller ask llama.cpp
        return None


def _process_vram(handles: list[Any], pid: int) -> int:
    """GPU memory a process holds across devices (NVML's per-process accounting)."""
    import pynvml

    used = 0
    for handle in handles:
        try:
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid == pid and proc.usedGpuMemory:
                    used += int(proc.usedGpuMemory)
        except Exception:  # a device that stops answering keeps the figure seen so far
            continue
    return used


def address_space_left() -> int | None:
    """What a worker started from this process may still map under an address-space cap (RLIMIT_AS, `ulimit -v`,
    inherited by children): the cap less this process's own virtual size, which a fresh worker takes about as much
    of again before it loads a model. None without a cap (or where the platform has none)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    import psutil

    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    return max(0, soft - int(psutil.Process().memory_info().vms))
