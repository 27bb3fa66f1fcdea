"""What this PC has: its processor, memory and disk, and whether an export will fit."""
from __future__ import annotations

import json
import ntpath
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

from .cache import cache_dir
from .catalog import MODELS, weight_count
from .envs import IS_WINDOWS
from .errors import InsufficientResources


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


# --- Windows paths ----------------------------------------------------------------------------
# Windows refuses a path of more than 259 characters (MAX_PATH, 260, less the closing NUL) unless
# long paths are enabled, and they are not by default. The Hugging Face cache nests a build's
# files deep under the user's folder, so the longest published file names pass the limit for
# ordinary user names. And ONNX Runtime GenAI cannot load a tokenizer from a folder whose path
# has non-ASCII characters (a user folder such as C:\Users\Renée). `phi3-aipc doctor` checks both
# with `windows_path_advice`, which takes its facts as arguments so that it can be tested anywhere.

MAX_PATH_CHARS = 259
LONG_PATHS_KEY = r"SYSTEM\CurrentControlSet\Control\FileSystem"  # in HKEY_LOCAL_MACHINE
ENABLE_LONG_PATHS = (r'New-ItemProperty -Path "HKLM:\SYSTEM\CurrentControlSet\Control\FileSystem"'
                     " -Name LongPathsEnabled -Value 1 -PropertyType DWORD -Force")
HF_CACHE, PHI3_CACHE = "Hugging Face cache", "phi3-aipc cache"
# The variable that moves each folder, and a short ASCII folder to move it to (HF_HOME holds the
# hub cache in its `hub` subfolder).
SHORT_FOLDERS = {HF_CACHE: ("HF_HOME", r"C:\hf"), PHI3_CACHE: ("PHI3_AIPC_CACHE", r"C:\phi3-aipc")}

# The longest file name of each catalog ONNX Runtime GenAI build, as its model page lists it
# (microsoft/*-onnx, "Files and versions"). Every OpenVINO/*-ov build holds an optimum-intel
# export at its top level, whose longest names are OPENVINO_LONGEST's; a checkpoint's longest
# name is its first weight shard's.
PUBLISHED_LONGEST = {
    ("microsoft/Phi-3-mini-4k-instruct-onnx", "cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4"):
        "phi3-mini-4k-instruct-cpu-int4-rtn-block-32-acc-level-4.onnx.data",
    ("microsoft/Phi-3-mini-4k-instruct-onnx", "directml/directml-int4-awq-block-128"):
        "special_tokens_map.json",
    ("microsoft/Phi-3-mini-128k-instruct-onnx", "cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4"):
        "phi3-mini-128k-instruct-cpu-int4-rtn-block-32-acc-level-4.onnx.data",
    ("microsoft/Phi-3.5-mini-instruct-onnx", "cpu_and_mobile/cpu-int4-awq-block-128-acc-level-4"):
        "phi-3.5-mini-instruct-cpu-int4-awq-block-128-acc-level-4.onnx.data",
    ("microsoft/Phi-4-mini-instruct-onnx", "cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4"):
        "special_tokens_map.json",  # its weights are model.onnx.data
}
OPENVINO_LONGEST = "openvino_detokenizer.bin"
CHECKPOINT_LONGEST = "model-00001-of-00002.safetensors"
# The longest names in the folders phi3_aipc makes (cache.py's layout): an export's files, and
# the manifest's temporary name while it is written (cache.write_atomically).
EXPORT_LONGEST = {"openvino": OPENVINO_LONGEST, "onnxruntime-genai": "special_tokens_map.json",
                  "npu-library": "compiled.safetensors"}
MANIFEST_TMP = ".phi3-aipc.json.tmp-" + "0" * 8


def published_longest(build) -> str:
    """The longest file name of a catalog `Prebuilt` build (a guess in Microsoft's naming for a
    build PUBLISHED_LONGEST does not list yet)."""
    if (build.repo, build.subfolder) in PUBLISHED_LONGEST:
        return PUBLISHED_LONGEST[build.repo, build.subfolder]
    if not build.subfolder:
        return OPENVINO_LONGEST
    model = build.repo.split("/")[-1].lower().removesuffix("-onnx")
    return f"{model}-{build.subfolder.split('/')[-1]}.onnx.data"


def hub_paths(hub: str) -> list[tuple[str, str]]:
    """(what, Windows path) of the longest file of each catalog checkpoint and prebuilt build in
    the Hugging Face hub cache `hub`:
    models--ORG--NAME\\snapshots\\<commit>\\<subfolder>\\<file>."""
    found = {}
    for model in MODELS.values():
        builds = [(model.id, "", CHECKPOINT_LONGEST)] + [
            (b.repo, b.subfolder, published_longest(b)) for b in model.prebuilt]
        for repo, subfolder, name in builds:
            found["/".join(filter(None, [repo, subfolder]))] = ntpath.join(
                hub, "models--" + repo.replace("/", "--"), "snapshots", "0" * 40,
                *filter(None, subfolder.split("/")), name)
    return list(found.items())


def cache_paths(cache: str) -> list[tuple[str, str]]:
    """(what, Windows path) of the longest file phi3_aipc writes in its cache `cache` for each
    catalog model: an export while it is built (.NAME.tmp-*) or removed (.NAME.discard-*), a
    notebook's export while it is made, the NPU library's compiled model, a compiled-model blob.
    Digests are zeros of their length: 12 hex digits for an export, 8 for a temporary name."""
    tmp, discard, export = ".tmp-" + "0" * 8, ".discard-" + "0" * 8, "int4-" + "0" * 12
    found = []
    for model in MODELS.values():
        slug = re.sub(r"[^A-Za-z0-9._-]+", "--", model.id).strip("-")  # as cache.artifact_dir
        for route in ("openvino", "onnxruntime-genai"):
            found += [(f"{route} export of {model.id}, while it is built", ntpath.join(
                cache, route, slug, f".{export}{tmp}", max(EXPORT_LONGEST[route], MANIFEST_TMP,
                                                          key=len))),
                      (f"{route} export of {model.id}, while it is removed", ntpath.join(
                          cache, route, slug, f".{export}{discard}", EXPORT_LONGEST[route]))]
        for made, route in (("int4-ov", "openvino"), ("int4-dml", "onnxruntime-genai")):
            found.append((f"notebooks' {made} export of {model.id}, while it is made",
                          ntpath.join(cache, "notebooks", f"{slug}-" + "0" * 8,
                                      f"{made}.partial", EXPORT_LONGEST[route])))
    worker = ntpath.join(cache, "npu-library", "0" * 40 + "-" + "0" * 16)  # commit-digest
    found += [("npu-library compiled model, while it is built",
               ntpath.join(worker, f".compiled-int4{tmp}", MANIFEST_TMP)),
              ("npu-library compiled model, while it is removed",
               ntpath.join(worker, f".compiled-int4{discard}", EXPORT_LONGEST["npu-library"])),
              ("the npu-library worker's OpenVINO blob", ntpath.join(
                  cache, "npu-library", "work", "0" * 40 + "-" + "0" * 16, "cache",
                  "9" * 20 + ".blob")),
              # one folder per OpenVINO version and NPU driver (openvino.compile_cache_name)
              ("an OpenVINO compiled-model blob", ntpath.join(
                  cache, "openvino-compiled",
                  "openvino-2026.4.1-22982-e213a147257-releases-2026-4-npu-32.0.100.4512",
                  "9" * 20 + ".blob"))]
    return found


def long_paths_enabled(os_name: str = os.name, registry=None) -> bool | None:
    """Windows' LongPathsEnabled setting (HKLM\\SYSTEM\\CurrentControlSet\\Control\\FileSystem):
    True or False; None off Windows or when it cannot be read. `registry`: winreg (a stand-in
    in tests)."""
    if os_name != "nt":
        return None
    if registry is None:
        import winreg as registry
    try:
        with registry.OpenKey(registry.HKEY_LOCAL_MACHINE, LONG_PATHS_KEY) as key:
            return bool(registry.QueryValueEx(key, "LongPathsEnabled")[0])
    except FileNotFoundError:
        return False  # no value: off, Windows' default
    except OSError:
        return None


def windows_path_advice(os_name: str, long_paths: bool | None, folders: dict[str, str],
                        home: str = "") -> dict:
    """What `doctor` says about paths on Windows, from its facts: `os_name` (os.name),
    `long_paths` (`long_paths_enabled()`), `folders` ({HF_CACHE: the hub cache, PHI3_CACHE: the
    phi3-aipc cache}) and `home` (the user's folder, to say where a non-ASCII character comes
    from). Returns the longest path each folder will hold, the problems and their fixes."""
    report = {"checked": os_name == "nt", "long_paths_enabled": long_paths,
              "limit": MAX_PATH_CHARS, "folders": {}, "problems": [], "fixes": []}
    if os_name != "nt":
        report["detail"] = "not Windows: no 259-character path limit or ANSI folder names here"
        return report
    report["detail"] = {True: "long paths are enabled", False: "long paths are off (Windows' "
                        "default)", None: "the long-path setting could not be read (taken as "
                        "off)"}[long_paths]
    problems, enable, moves = report["problems"], [], []
    for name, folder in folders.items():
        paths = hub_paths(folder) if name == HF_CACHE else cache_paths(folder)
        what, longest = max(paths, key=lambda p: len(p[1]))
        odd = "".join(sorted({c for c in folder if ord(c) > 127}))
        report["folders"][name] = {"path": folder, "longest": len(longest), "longest_for": what,
                                   "non_ascii": odd}
        variable, short = SHORT_FOLDERS[name]
        move = (f"set {variable} to a short ASCII folder such as {short}: `setx {variable} "
                f"{short}` for new terminals, and `$env:{variable} = \"{short}\"` in one already "
                "open; then " + (f"move the hub cache's contents to {short}\\hub (HF_HUB_CACHE, "
                                 "if you set it, wins over HF_HOME)" if name == HF_CACHE else
                                 "move the cache's contents there, or let it fill again"))
        if len(longest) > MAX_PATH_CHARS and not long_paths:
            over = [w for w, p in paths if len(p) > MAX_PATH_CHARS]
            problems.append(
                f"The {name} is {folder}: there, {len(over)} of the catalog's downloads would "
                f"hold a file path longer than Windows' {MAX_PATH_CHARS} characters (the longest "
                f"{len(longest)}, {what}), and with long paths off downloading or loading them "
                "fails: enable long paths, or move the folder (below).")
            enable = [f"enable long paths, once, in a PowerShell run as administrator (then open "
                      f"a new terminal): {ENABLE_LONG_PATHS}"]
            moves.append(move)
        if odd:
            where = f", from your user folder {home}" if home and folder.lower().startswith(
                home.lower()) else ""
            problems.append(f"The {name} is {folder}, with non-ASCII characters ({odd}{where}): "
                            "ONNX Runtime GenAI is reported to fail loading a tokenizer from such "
                            "a folder; move it (below).")
            moves.append(move)
    report["fixes"] = enable + list(dict.fromkeys(moves))
    return report
