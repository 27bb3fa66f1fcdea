"""What this PC has: its processor, memory and disk, and whether an export will fit."""
from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from .cache import cache_dir
from .catalog import weight_count
from .envs import IS_WINDOWS


def cpu_model() -> str:
    """The processor's marketing name, e.g. 'Intel(R) Core(TM) Ultra 7 155H'."""
    try:
        if IS_WINDOWS:
            import winreg

            key = winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE,
                                 r"HARDWARE\DESCRIPTION\System\CentralProcessor\0")
            return winreg.QueryValueEx(key, "ProcessorNameString")[0].strip()
        if sys.platform == "darwin":
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"],
                                  capture_output=True, text=True).stdout.strip()
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gb() -> dict:
    import psutil

    mem = psutil.virtual_memory()
    return {"total": round(mem.total / 2**30, 1), "available": round(mem.available / 2**30, 1)}


# Bytes per weight of each precision on disk (int4 keeps the embedding and lm_head at int8).
BYTES_PER_WEIGHT = {"fp32": 4.0, "fp16": 2.0, "int8": 1.0, "int4": 0.75}


def preflight(model_dir: Path, precision: str, what: str) -> None:
    """Refuse an export that will not fit, with the numbers and the way to try anyway.

    Converters hold the model in fp32 (4 bytes per weight) while they work, plus about 1 GB of
    their own; the output needs its precision's bytes per weight, half again as scratch space.
    """
    import psutil

    from .errors import InsufficientResources

    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    weights = weight_count(config)
    need_ram = weights * 4 + 1e9
    need_disk = weights * BYTES_PER_WEIGHT[precision] * 1.5 + 0.1e9
    free_ram = psutil.virtual_memory().available
    free_disk = shutil.disk_usage(cache_dir()).free
    if need_ram > free_ram or need_disk > free_disk:
        raise InsufficientResources(
            f"{what} needs about {need_ram / 1e9:.1f} GB of memory and {need_disk / 1e9:.1f} GB "
            f"of disk ({weights / 1e9:.2f} billion weights); this PC has {free_ram / 1e9:.1f} GB "
            f"of memory and {free_disk / 1e9:.1f} GB of disk free (at {cache_dir()}). Close "
            "other programs or free disk space (PHI3_AIPC_CACHE moves the cache), or try anyway "
            "with --skip-preflight (skip_preflight=True).")
