"""`edgeval doctor`: the machine report, its JSON keys, the repacking probe and the suggested budget."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeval.core.memory import RepackMode
from edgeval.faces.cli import cli
from edgeval.llama import doctor

GB = 10**9
GIB = 2**30

REQUIRED_KEYS = {
    "python", "platform", "edgeval", "llama_cpp_python", "gpu_offload", "backend", "cpu", "cpu_features",
    "ram_total_bytes", "ram_available_bytes", "gpus", "hf_cache", "hf_offline", "hf_token_configured",
    "edgeval_home", "suggested_budget_bytes",
}  # fmt: skip


def test_json_has_every_key_and_reads_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_secretvalue123")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(cli, ["doctor", "--json", "--no-probe"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report.keys() >= REQUIRED_KEYS
    assert report["hf_token_configured"] is True
    assert "hf_secretvalue123" not in result.output
    assert report["hf_offline"] is True
    assert report["hf_cache"] == str(tmp_path / "hf-home" / "hub")
    assert report["edgeval_home"] == str(tmp_path / "edgeval-home")
    assert 0 < report["ram_available_bytes"] <= report["ram_total_bytes"]
    assert 0 < report["suggested_budget_bytes"] < report["ram_total_bytes"]
    assert isinstance(report["gpus"], list)
    assert report["backend"] in ("CPU",) or report["gpu_offload"]


def test_token_saved_to_a_file_counts_as_configured(tmp_path: Path) -> None:
    token_file = tmp_path / "hf-home" / "token"
    token_file.parent.mkdir(parents=True)
    assert CliRunner().invoke(cli, ["doctor", "--json", "--no-probe"]).output.count('"hf_token_configured": false')
    token_file.write_text("hf_abc\n")
    assert json.loads(CliRunner().invoke(cli, ["doctor", "--json", "--no-probe"]).output)["hf_token_configured"]


def test_table_shows_the_sections_and_the_probe_verdict() -> None:
    result = CliRunner().invoke(cli, ["doctor"])
    assert result.exit_code == 0, result.output
    for label in ("llama-cpp-python", "backend", "weight repacking", "CPU features", "RAM", "memory budget"):
        assert label in result.output
    assert "repacking" in result.output and ("works" in result.output or "crashed" in result.output)


def _crash(path: str, mode: str) -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def _fine(path: str, mode: str) -> None:
    assert Path(path).stat().st_size > 0


def _only_full_repacking_crashes(path: str, mode: str) -> None:
    if mode == "all":  # as llama.cpp's AMX buffer does on some Xeons
        os.kill(os.getpid(), signal.SIGILL)


def test_probe_reports_a_crash_in_the_child_and_survives() -> None:
    crashed = doctor.probe_repack(target=_crash)
    assert crashed.tested and crashed.works is False and crashed.mode is RepackMode.OFF
    assert f"signal {int(signal.SIGSEGV)}" in crashed.detail
    assert [m for m, _ in crashed.tried] == [RepackMode.ALL, RepackMode.CPU_REPACK]
    fine = doctor.probe_repack(target=_fine)
    assert fine.works is True and fine.mode is RepackMode.ALL and fine.tried == ((RepackMode.ALL, "works"),)


def test_probe_falls_back_to_cpu_repack_when_llama_cpps_full_choice_crashes() -> None:
    probe = doctor.probe_repack(target=_only_full_repacking_crashes)
    assert probe.mode is RepackMode.CPU_REPACK and probe.works is True
    assert probe.tried == ((RepackMode.ALL, f"signal {int(signal.SIGILL)}"), (RepackMode.CPU_REPACK, "works"))
    assert "CPU_REPACK" in probe.detail


def test_the_remembered_mode_decides_runs_and_no_repack_forces_off() -> None:
    assert doctor.repack_cached() is None and doctor.repack_expected() is RepackMode.ALL
    doctor._remember(doctor.probe_repack(target=_only_full_repacking_crashes))
    assert doctor.repack_cached() is RepackMode.CPU_REPACK
    assert doctor.repack_mode(None) is RepackMode.CPU_REPACK and doctor.repack_mode(True) is RepackMode.CPU_REPACK
    assert doctor.repack_mode(False) is RepackMode.OFF and doctor.repack_expected(False) is RepackMode.OFF
    doctor._remember(doctor.probe_repack(target=_crash))
    assert doctor.repack_mode(None) is RepackMode.OFF
    assert doctor.repack_mode(True) is RepackMode.ALL  # asked for explicitly: llama.cpp's own choice


def test_probe_runs_llama_cpp_with_repacking_in_a_child() -> None:
    result = doctor.probe_repack()
    assert result.tested
    # Whatever this CPU does, the parent survives and says which it was.
    assert result.works in (True, False) and result.works is (result.mode is not RepackMode.OFF)
    assert ("works" in result.detail) is bool(result.works)
    assert result.tried[-1][1] == "works" or result.mode is RepackMode.OFF


@pytest.mark.parametrize(
    ("total", "available", "gpus", "offload", "expected", "why"),
    [
        (16 * GIB, 14 * GIB, [], False, 12.5 * GB, "75% of RAM"),
        (16 * GIB, 12 * GIB, [], False, 11.5 * GB, "available RAM"),
        (16 * GIB, 4 * GIB, [], False, 3.0 * GB, "available RAM"),
        (32 * GIB, 30 * GIB, [doctor.Gpu("RTX 4090", 24 * GIB, "nvml")], True, 23.0 * GB, "RTX 4090"),
        (32 * GIB, 30 * GIB, [doctor.Gpu("RTX 4090", 24 * GIB, "nvml")], False, 25.5 * GB, "75% of RAM"),
        (16 * GIB, 10 * GIB, [doctor.Gpu("Apple M2", 16 * GIB, "unified")], True, 12.0 * GB, "unified"),
    ],
)
def test_suggested_budget(
    total: int, available: int, gpus: list[doctor.Gpu], offload: bool, expected: float, why: str
) -> None:
    budget, reason = doctor.suggest_budget(total, available, gpus, offload)
    assert budget == int(expected)
    assert budget % (GB // 2) == 0
    assert why in reason


def test_cpu_flags_parse_x86_and_arm() -> None:
    x86 = "processor : 0\nflags\t\t: fpu sse avx avx2 fma f16c avx512f amx_tile amx_int8\n"
    assert doctor.parse_cpuinfo_flags(x86) == [
        "AVX",
        "AVX2",
        "FMA",
        "F16C",
        "AVX512F",
        "AMX_TILE",
        "AMX_INT8",
    ]
    arm = "processor : 0\nFeatures\t: fp asimd asimddp sve\n"
    assert doctor.parse_cpuinfo_flags(arm) == ["NEON", "DOTPROD", "SVE"]
    assert doctor.parse_cpuinfo_flags("nothing here") == []
