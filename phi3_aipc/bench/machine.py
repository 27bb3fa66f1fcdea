"""What the machine is: its description for a benchmark report, and its memory read bandwidth
(the roofline decode speed is held against)."""
from __future__ import annotations

import time
from pathlib import Path

from ..doctor import doctor
from ..routes import all_routes


def machine(bandwidth: bool = True) -> dict:
    """The machine's description: CPU, cores, memory, instruction sets, package versions, and
    its measured memory read bandwidth."""
    report = doctor()
    info = {k: report[k] for k in ("os", "python", "cpu", "memory_gb", "packages")}
    info["cpu"]["instruction_sets"] = instruction_sets()
    info["route_facts"] = {r.name: report[r.doctor_key] for r in all_routes()
                           if r.doctor_key in report}  # what each route's runtime sees
    if bandwidth:
        info.update(measure_bandwidth())
    return info


def instruction_sets() -> list[str]:
    """The vector extensions that decide CPU kernel speed (Linux; OpenVINO's view elsewhere)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        flags = set()
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
        wanted = ["avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile"]
        return [f for f in wanted if f in flags]
    try:
        import openvino as ov

        return list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except Exception:  # no OpenVINO: nothing to say
        return []


def measure_bandwidth(size_mb: int = 512, repeats: int = 7) -> dict:
    """Memory read bandwidth with all cores: the best of `repeats` sums over a buffer far larger
    than any cache. torch's multi-threaded sum is vectorized; on the machines tried it matched a
    hand-written AVX2 loop (numpy's sum is single-threaded and reads less)."""
    import torch

    buffer = torch.ones(size_mb * 2**20 // 4, dtype=torch.float32)
    buffer.sum()  # touch every page first
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        buffer.sum()
        best = min(best, time.perf_counter() - start)
    return {"bandwidth_gb_s": round(buffer.numel() * 4 / best / 1e9, 2),
            "bandwidth_method": f"torch.sum over {size_mb} MB of fp32, "
                                f"{torch.get_num_threads()} threads, best of {repeats}"}
