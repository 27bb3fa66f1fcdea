"""What each notebook needs: the peak memory of its kernel and all the kernel's children, the disk
it adds and the time it takes, on the default path a user of the real Phi-3-mini takes.

    python scripts/notebook_budget.py                  # the 4-layer bench stand-in (minutes)
    python scripts/notebook_budget.py --layers 32 --free-gb 10 --write-table
                                       # full size: Phi-3-mini-4k's exact shapes, random weights
                                       # (7.6 GB), with 10 GB free, as a 16 GB PC whose Windows
                                       # and browser hold the rest; writes docs/models.md's table
    make budget / make budget-full     # the same two

The default path: the checkpoint in a Hugging Face cache under microsoft/Phi-3-mini-4k-instruct,
the int4 builds under the publishers' prebuilt repository ids, and the fp16 builds notebooks 02
and 03 quantize under theirs (OpenVINO's IR as OpenVINO/Phi-3-mini-4k-instruct-fp16-ov,
Microsoft's ONNX as microsoft/Phi-3-mini-4k-instruct-onnx's cuda/cuda-fp16), all made here once
from the stand-in with the routes' own converters; the hub offline; PHI3_AIPC_PREBUILT=yes (what
`auto` picks where an export does not fit), except for notebooks 02 and 03, which run as `auto`:
they quantize the fp16 builds, as a 16 GB PC does by default. Offline, `hf download --local-dir`
finds nothing in the cache (it returns only a folder that is already there), so the fp16 builds
are also laid out in the notebooks' download folders, as if downloaded: the download lines run,
the transfer is not measured.
Each notebook runs to the end with nbclient, then one
message goes through each chat widget it made (a second turn where the notebook chatted
already; replies of at most CHAT_TOKENS tokens). The resident memory of the kernel's process
tree is sampled every 0.2 s; mapped weight files count, as they do in Task Manager.
`--as-if-gb N` holds the rest of this machine's memory in a separate process, so the notebooks
see (and decide on) what an N GB PC has free; `--free-gb N` holds it until N GB is free, which
also presses the page cache: the mapped weight files' pages are dropped and read again, as on a
PC that has no more. Each cell's peak is recorded, and the cell with the notebook's peak named.
The results go to JSON (`--json`, default <cache>/budget/layers-<N>.json); the exit code is 1
when a notebook failed, its peak exceeded its stated multiple of one model copy (LIMITS below,
the CI-sized check that tests/test_budget.py runs) or, at full size, it held more than the
10 GB promised (PROMISE_GB).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
sys.path.insert(0, str(ROOT))

from phi3_aipc import catalog  # noqa: E402
from phi3_aipc.cache import MANIFEST  # noqa: E402
from phi3_aipc.files import disk_bytes, link_or_copy  # noqa: E402
from phi3_aipc.standin import PHI3_MINI_LAYERS  # noqa: E402

MODEL = catalog.DEFAULT_MODEL
# What notebooks 02 and 03 download to quantize: (repository, its subfolder, the notebook's folder)
FP16 = {"03": ("OpenVINO/Phi-3-mini-4k-instruct-fp16-ov", "", "fp16-ov"),
        "02": ("microsoft/Phi-3-mini-4k-instruct-onnx", "cuda/cuda-fp16", "fp16-onnx")}
QUANTIZED_HERE = tuple(FP16)  # the notebooks that run as `auto`
COMMIT = "0123456789abcdef0123456789abcdef01234567"  # the placed snapshots' revision
# Peak memory of the kernel and its children, in copies of the model's bf16 weights. With the
# real model the promise is 10 GB on a 16 GB PC. On the 4-layer bench stand-in about 0.5 GB of
# Python, torch and OpenVINO come on top (0.4 copies), and loading a checkpoint counts twice for
# a moment (its mapped file and the tensors copied out of it): 1.5-2.0 copies were measured for
# notebooks 00, 02 and 05 across runs. A chat that loads a second copy (fp32) beside the
# notebook's adds 2 copies, which every limit below but 01's and 04's catches.
# Notebook 03 quantizes OpenVINO's fp16 IR with NNCF (the IR stays mapped: at full size 2.4 GB of
# its own beside up to 7.6 GB of mapped file, scripts/quantize_full_size.py) and compares fp16,
# int8 and two int4 builds, loading one at a time. Running the fp16 one holds its mapped file and
# the CPU's converted copy, 2 copies: 3.02 were measured on the bench stand-in with the kernel's;
# where that does not fit (a 16 GB PC with the real model) the notebook leaves the fp16 run out.
# Notebooks 01 and 04 run the NPU library, which loads the whole checkpoint in fp32 before it
# quantizes (its worker peaked at 3.8 copies); in notebook 01 the kernel also kept about 1.5
# copies after deleting its model while the precision tour's and the chat's workers loaded
# theirs (4.9 copies); notebook 04's benchmark peaked at 6.7 copies while the NPU library's
# worker ran beside its parent. Where the fp32 load does not fit (a 16 GB PC with the real
# model), notebook 01 runs the library on the offline stand-in and notebook 04 skips it; neither
# emulates the NPU at full size unless asked. The CI-sized test leaves them out for time.
# Notebook 06 holds Phi-3's OpenVINO and ONNX Runtime int4 models together, then deletes them and
# builds and loads Phi-4-mini's (offline: its small stand-in): 2.21 copies measured, in the build.
LIMITS = {"00": 2.5, "01": 5.5, "02": 2.5, "03": 3.5, "04": 7.5, "05": 2.5, "06": 3.0}
# At full size (the real model's shapes) every notebook promises to hold at most 10 GB that the PC
# cannot drop: its anonymous memory, not the mapped weight files' pages, which a PC short of
# memory drops and reads again (`--free-gb 10` presses them).
PROMISE_GB = 10
CHAT_MESSAGE = "What can an AI PC do with a language model?"
# The reply's length hardly moves the peak (the KV cache of 32 more tokens is small), and the NPU
# library's route makes about a token a second on this CPU: the budget's replies stop at 32.
CHAT_TOKENS = 32
TABLE_START, TABLE_END = "<!-- budget-table -->", "<!-- /budget-table -->"


def tree_rss(pid: int) -> tuple[int, int | None]:
    """Resident bytes of process `pid` and all its descendants, and of those the anonymous ones
    (resident minus file-backed and shared pages: what the PC cannot drop under pressure; None
    where psutil does not tell them apart, as on Windows)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0, None
    total, anon = 0, 0
    for p in procs:
        try:
            info = p.memory_info()
        except psutil.Error:
            continue
        total += info.rss
        shared = getattr(info, "shared", None)
        anon = None if anon is None or shared is None else anon + info.rss - shared
    return total, anon


class Sampler(threading.Thread):
    """Samples the kernel's process tree while a notebook runs: `peak` and `anon_peak` in bytes,
    and `peaks`, each code cell's (resident, anonymous) peak in bytes by its index in the
    notebook (a cell shorter than one sample has none)."""

    def __init__(self, client) -> None:
        super().__init__(daemon=True)
        self.client, self.done = client, threading.Event()
        self.peak, self.anon_peak, self.peaks, self.current = 0, None, {}, None
        client.on_cell_start = self.cell_started  # only this thread writes the peaks

    def cell_started(self, cell, cell_index) -> None:
        if cell.cell_type == "code":
            self.current = cell_index

    def run(self) -> None:
        pid = None
        while not self.done.wait(0.2):
            if pid is None:
                km = getattr(self.client, "km", None)
                process = getattr(getattr(km, "provisioner", None), "process", None)
                pid = getattr(process, "pid", None)
                continue
            rss, anon = tree_rss(pid)
            self.peak = max(self.peak, rss)
            if anon is not None:
                self.anon_peak = max(self.anon_peak or 0, anon)
            if self.current is not None:
                cell = self.peaks.setdefault(self.current, [0, None])
                cell[0] = max(cell[0], rss)
                if anon is not None:
                    cell[1] = max(cell[1] or 0, anon)


CHAT_CELL = f"""\
# (added by scripts/notebook_budget.py) one message through each chat widget made above
from phi3_aipc.widgets import ChatWidget as _ChatWidget
_chats = {{id(v): v for v in [*globals().values(), *Out.values()] if isinstance(v, _ChatWidget)}}
for _chat in _chats.values():
    _chat.max_new_tokens = min(_chat.max_new_tokens, {CHAT_TOKENS})
    _chat.send({CHAT_MESSAGE!r})
    _reply = _chat.wait()
    print("BUDGET-CHAT", len(_chat.history) // 2, "turns |", _reply.summary())
print("BUDGET-CHATS", len(_chats))
"""


def run_notebook(path: Path, timeout: int) -> dict:
    """Run one notebook and its chat message, measuring it."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    from phi3_aipc.cache import cache_dir

    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(CHAT_CELL))
    disk = [cache_dir(), Path(os.environ["HF_HOME"])]
    before = disk_bytes(*disk)  # the placed files are links: each file counts once
    import psutil

    free_gb = round(psutil.virtual_memory().available / 1e9, 1)  # what the notebook starts with
    client = NotebookClient(nb, timeout=timeout, resources={"metadata": {"path": str(NOTEBOOKS)}})
    sampler = Sampler(client)
    sampler.start()
    start, error = time.perf_counter(), None
    try:
        client.execute()
    except CellExecutionError as err:
        error = str(err).strip().splitlines()[-1][:300]
    except Exception as err:  # a timeout, a dead kernel: recorded, the next notebook runs
        error = f"{type(err).__name__}: {err}"[:300]
    wall = time.perf_counter() - start
    sampler.done.set()
    sampler.join()
    out = "".join(o.get("text", "") for o in nb.cells[-1].get("outputs", []))
    chats = re.findall(r"BUDGET-CHAT (.*)", out)
    peaks = sampler.peaks
    top = max(peaks, key=lambda i: peaks[i][0], default=None)
    top_anon = max((i for i in peaks if peaks[i][1] is not None), key=lambda i: peaks[i][1],
                   default=None)
    anon = sampler.anon_peak
    return {"peak_gb": round(sampler.peak / 1e9, 2),
            "peak_anon_gb": None if anon is None else round(anon / 1e9, 2),
            "peak_cell": where(nb.cells, top), "peak_anon_cell": where(nb.cells, top_anon),
            "cells": [[i, round(r / 1e9, 2), None if a is None else round(a / 1e9, 2)]
                      for i, (r, a) in sorted(peaks.items())],
            "free_at_start_gb": free_gb, "wall_s": round(wall, 1),
            "disk_added_gb": round((disk_bytes(*disk) - before) / 1e9, 2),
            "chats": chats, "error": error}


def where(cells: list, index: int | None) -> str | None:
    """Cell `index` named by its section (the heading above it), for the table's note."""
    if index is None:
        return None
    if index == len(cells) - 1:
        return f"cell {index}, the budget's chat message"
    heading = next((c.source.strip().splitlines()[0].lstrip("# ") for c in reversed(cells[:index])
                    if c.cell_type == "markdown" and c.source.startswith("#")), "the opening")
    return f"cell {index}, section {heading}"


def place(hub: Path, repo: str, subfolder: str, files: Path, skip: str = "") -> None:
    """Lay out `files` as huggingface_hub caches `repo` (at `subfolder`), as links (hard links
    or copies where Windows allows no symbolic links)."""
    root = hub / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(COMMIT)
    place_files(files, root / "snapshots" / COMMIT / subfolder, skip)


def place_files(files: Path, target: Path, skip: str = "") -> None:
    target.mkdir(parents=True, exist_ok=True)
    for f in files.iterdir():
        if f.is_file() and f.name != skip and not (target / f.name).exists():
            link_or_copy(f.resolve(), target / f.name)


def set_up(layers: int, work: Path, names: list[str]) -> tuple[Path, float, float | None,
                                                                dict[str, Path]]:
    """The stand-in, what the notebooks `names` (prefixes such as "03") download, made from it,
    and a Hugging Face home that holds them under the real ids: the prebuilt int4 builds (not
    needed when only notebooks 01 and 03 run at full size: 01 then emulates no NPU, 03 quantizes),
    and the fp16 builds notebooks 02 and 03 quantize. Returns (HF home, one model copy in GB, the
    prebuilt download in GB or None, the fp16 builds by notebook)."""
    from phi3_aipc.routes import prepare
    from phi3_aipc.standin import bench_name, ensure_bench_stand_in

    stand_in = ensure_bench_stand_in(layers)
    model = bench_name(layers)
    copy_gb = sum(f.stat().st_size for f in stand_in.glob("*.safetensors")) / 1e9
    home = work / "hf-home"
    place(home / "hub", MODEL, "", stand_in)
    fp16 = {}
    if "03" in names:
        fp16["03"] = made_by_quantize_script("fp16-ir", layers) or \
            prepare("openvino", "fp16", "CPU", model)
    if "02" in names:
        fp16["02"] = made_by_quantize_script("fp16-onnx", layers) or fp16_onnx(stand_in)
    for name, folder in fp16.items():
        repo, subfolder, _ = FP16[name]
        place(home / "hub", repo, subfolder, folder, skip=MANIFEST)
    if layers == PHI3_MINI_LAYERS and not set(names) - {"01", "03"}:
        return home, copy_gb, None, fp16
    builds = {("openvino", "CPU"): prepare("openvino", "int4", "CPU", model),
              ("openvino", "NPU"): prepare("openvino", "int4", "CPU", model, preset="npu"),
              ("onnxruntime-genai", "cpu"): prepare("onnxruntime-genai", "int4", "cpu", model)}
    entry = catalog.known(MODEL)
    for (route, device), folder in builds.items():
        build = next(b for b in entry.prebuilt_for(route) if device in b.devices)
        place(home / "hub", build.repo, build.subfolder, folder)
    download_gb = disk_bytes(builds[("openvino", "CPU")].resolve()) / 1e9
    return home, copy_gb, download_gb, fp16


def made_by_quantize_script(name: str, layers: int) -> Path | None:
    """scripts/quantize_full_size.py's fp16 build of the full-size stand-in, if it made one:
    the same files, so the disk holds them once."""
    from phi3_aipc.cache import cache_dir

    folder = cache_dir() / "quantize-full-size" / name
    made = any((folder / f).is_file() for f in ("openvino_model.xml", "genai_config.json"))
    return folder if layers == PHI3_MINI_LAYERS and made else None


def fp16_onnx(stand_in: Path) -> Path:
    """Microsoft's fp16 ONNX layout (the builder's `-p fp16 -e cuda`) of the stand-in, once."""
    from phi3_aipc.cache import build_once, cache_dir

    def build(tmp: Path) -> None:
        subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i",
                        str(stand_in), "-o", str(tmp), "-p", "fp16", "-e", "cuda", "-c",
                        str(tmp / ".builder-cache")], check=True, stdout=subprocess.DEVNULL)
        shutil.rmtree(tmp / ".builder-cache", ignore_errors=True)

    return build_once(cache_dir() / "budget" / f"fp16-onnx-{stand_in.name}", build)


def as_downloaded(name: str, fp16: Path) -> None:
    """Notebook `name`'s `hf download ... --local-dir` folder, filled as a download would fill it
    (offline, hf download returns an existing folder and finds nothing in the cache)."""
    _, subfolder, local = FP16[name]
    # Asked in a child process: it reads HF_HOME as set for the notebooks (main sets it after
    # huggingface_hub was imported here, which reads it once)
    where = ("import sys; from phi3_aipc.exports import export_dir; from phi3_aipc.models import "
             "resolve_model; print(export_dir(resolve_model(sys.argv[1], progress=False, "
             "weights=False), sys.argv[2]))")
    folder = Path(subprocess.run([sys.executable, "-c", where, MODEL, local], check=True,
                                 capture_output=True, text=True).stdout.strip())
    target = Path(f"{folder}.partial") / subfolder
    if folder.exists() or target.exists():
        return
    filling = target.with_name(f"{target.name}.filling")  # a whole copy, or none, is the target
    shutil.rmtree(filling, ignore_errors=True)  # left by a run stopped halfway (a full disk)
    filling.mkdir(parents=True)
    for f in fp16.iterdir():  # onnx refuses external data behind a symbolic or hard link
        if f.is_file() and f.name != MANIFEST:  # a download has no manifest of ours
            if ".onnx" in f.name:
                shutil.copy2(f, filling / f.name)
            else:
                link_or_copy(f.resolve(), filling / f.name)
    filling.rename(target)


def hold_memory(as_if_gb: float) -> subprocess.Popen | None:
    """A process that holds this machine's memory beyond `as_if_gb` (there is no swap to
    push it out), so that what is free looks like an `as_if_gb` PC; None if nothing to hold."""
    import psutil

    return hold(psutil.virtual_memory().total - as_if_gb * 2**30,
                f"the notebooks see a {as_if_gb:g} GB PC")


def hold_free(free_gb: float) -> subprocess.Popen | None:
    """A process that holds what is available beyond `free_gb`: the notebooks see that much
    free, and the page cache (the mapped weight files) is pressed as on a PC that has no more."""
    import psutil

    return hold(psutil.virtual_memory().available - free_gb * 1e9,
                f"the notebooks see {free_gb:g} GB free")


def hold(extra: float, says: str) -> subprocess.Popen | None:
    if extra <= 0:
        print(f"holding nothing: this machine has less free already, so NOT {says}", flush=True)
        return None
    code = ("import sys; held = bytearray(b'\\x01') * int(sys.argv[1]); print('held', "
            "flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code, str(int(extra))], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()
    print(f"holding {extra / 2**30:.1f} GiB: {says}", flush=True)
    return proc


def check(results: dict) -> list[str]:
    """Notebooks that failed or exceeded their stated peak."""
    problems = []
    copy = results["model_copy_gb"]
    for name, r in results["notebooks"].items():
        limit = LIMITS.get(name[:2])
        if r["error"]:
            problems.append(f"{name} failed: {r['error']}")
        elif limit and r["peak_gb"] > limit * copy:
            problems.append(f"{name} peaked at {r['peak_gb']} GB, more than {limit} copies of the "
                            f"model ({limit * copy:.2f} GB)")
        anon = r["peak_gb"] if r.get("peak_anon_gb") is None else r["peak_anon_gb"]
        if results["layers"] == PHI3_MINI_LAYERS and anon > PROMISE_GB:
            problems.append(f"{name} held {anon} GB that the PC cannot drop, more than the "
                            f"{PROMISE_GB} GB promised at full size ({r.get('peak_anon_cell')})")
        if r["error"] is None and not r["chats"] and name[:2] in ("00", "02", "03", "05"):
            problems.append(f"{name}: its chat widget was not found or did not answer")
    return problems


TABLE_HEAD = ["| Notebook | Peak memory (kernel and children) | Disk it adds | Time | Measured | "
              "Note |", "|---|---|---|---|---|---|"]


def pc(results: dict) -> str:
    """What the notebooks saw: a PC of N GB, or N GB free."""
    if results.get("free_gb"):
        return f"a PC with {results['free_gb']:g} GB free"
    return f"a {results['as_if_gb'] or '?'} GB PC"


def table(results: dict, kept: dict[str, str] | None = None) -> str:
    """The budget table (docs/models.md); `kept`: rows of notebooks not measured this time."""
    lines = ["Measured with the full-size stand-in "
             f"(Phi-3-mini-4k's shapes, random weights; one model copy = "
             f"{results['model_copy_gb']:.1f} GB in bf16) as {pc(results)}, on the default path "
             "(the prebuilt int4 builds; notebooks 02 and 03 quantize the published fp16 builds), "
             "with one chat message per widget. Peak memory counts the mapped weight files' "
             "pages; in brackets, what the PC cannot drop (anonymous memory):",
             "", *TABLE_HEAD]
    rows = dict(kept or {})
    for name, r in results["notebooks"].items():
        note = r["error"] or (f"peak: {r['peak_cell']}" if r.get("peak_cell") else "")
        anon = f" ({r['peak_anon_gb']:.1f} GB)" if r.get("peak_anon_gb") is not None else ""
        rows[name] = (f"| {name} | {r['peak_gb']:.1f} GB{anon} | {r['disk_added_gb']:.1f} GB | "
                      f"{r['wall_s'] / 60:.1f} min | {results['date']}, {results['machine']} | "
                      f"{note} |")
    lines += [rows[name] for name in sorted(rows)]
    lines.append("")
    lines.append(f"Downloads: the prebuilt int4 build is about {results['download_gb'] or 2.0:.1f} "
                 "GB (the OpenVINO one; the ONNX one is similar); the fp16 builds notebooks 02 "
                 f"and 03 quantize, {results['model_copy_gb']:.1f} GB each; the checkpoint, for "
                 f"the notebooks that use it, {results['model_copy_gb']:.1f} GB.")
    return "\n".join(lines)


TABLE_PAGE = ROOT / "docs" / "models.md"  # the page that holds the table, between the markers


def table_page_text() -> str:
    """The table page's text; refused before a run (not after an hour of it) without markers."""
    text = TABLE_PAGE.read_text(encoding="utf-8")
    if TABLE_START not in text or TABLE_END not in text:
        raise SystemExit(f"{TABLE_PAGE} has no {TABLE_START} ... {TABLE_END} "
                         "markers to write the table between.")
    return text


def write_table(results: dict) -> None:
    text = table_page_text()
    head, rest = text.split(TABLE_START, 1)
    old, tail = rest.split(TABLE_END, 1)
    # The rows of notebooks not run this time stay, with the date they were measured.
    kept = {line.split("|")[1].strip(): line for line in old.splitlines()
            if line.startswith("| 0") and len(line.split("|")) == len(TABLE_HEAD[1].split("|"))}
    TABLE_PAGE.write_text(f"{head}{TABLE_START}\n{table(results, kept)}\n{TABLE_END}{tail}",
                          encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--layers", type=int, default=4,
                      help="the bench stand-in's layers: 4 (default, CI-sized) or 32 (full size)")
    held = args.add_mutually_exclusive_group()
    held.add_argument("--as-if-gb", type=float, default=None,
                      help="hold this machine's memory beyond N GB while the notebooks run")
    held.add_argument("--free-gb", type=float, default=None,
                      help="hold what is available beyond N GB while the notebooks run (the "
                      "full-size budget: 10, a 16 GB PC whose Windows and browser hold the rest)")
    args.add_argument("--json", help="where to write the results")
    args.add_argument("--write-table", "--readme", dest="write_table", action="store_true",
                      help="write the table in docs/models.md (--readme: its old name)")
    args.add_argument("--timeout", type=int, default=3600, help="per cell, in seconds")
    args.add_argument("names", nargs="*", help="only these notebooks (e.g. 00 03_openvino), or "
                      "notebook files (run in notebooks/ like the others)")
    opts = args.parse_args(argv)
    if opts.write_table:
        table_page_text()  # no markers: said now, not after the run

    from phi3_aipc.cache import cache_dir
    from phi3_aipc.hardware import cpu_model, memory_gb

    work = cache_dir() / "budget" / f"layers-{opts.layers}"
    work.mkdir(parents=True, exist_ok=True)
    out = Path(opts.json) if opts.json else work.parent / f"layers-{opts.layers}.json"
    print(f"setting up the {opts.layers}-layer stand-in and its prebuilt builds ...", flush=True)
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    if opts.names:  # names or prefixes of the notebooks, or notebook files (run in notebooks/)
        paths = [Path(n) for n in opts.names if n.endswith(".ipynb") and Path(n).is_file()] + \
            [p for p in paths if any(p.stem.startswith(n) for n in opts.names)]
    home, copy_gb, download_gb, fp16 = set_up(opts.layers, work, [p.stem[:2] for p in paths])
    env_bin = str(Path(sys.executable).parent)  # optimum-cli, as in an activated environment
    os.environ.update({"PATH": os.pathsep.join([env_bin, os.environ.get("PATH", "")]),
                       "PHI3_AIPC_MODEL": MODEL, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1",
                       "PHI3_AIPC_PREBUILT": "yes",
                       "PHI3_AIPC_CACHE": str(work / "cache")})
    results = {"date": date.today().isoformat(), "machine": f"{cpu_model()}, "
               f"{memory_gb()['total']} GB", "layers": opts.layers, "as_if_gb": opts.as_if_gb,
               "free_gb": opts.free_gb,
               "model_copy_gb": round(copy_gb, 2),
               "download_gb": None if download_gb is None else round(download_gb, 2),
               "limits": LIMITS, "notebooks": {}}
    held = hold_memory(opts.as_if_gb) if opts.as_if_gb else \
        hold_free(opts.free_gb) if opts.free_gb else None
    try:
        for path in paths:
            print(f"running {path.name} ...", flush=True)
            # notebooks 02 and 03 quantize by default on a 16 GB PC: their `auto`, not the
            # prebuilt build
            auto = path.stem[:2] in QUANTIZED_HERE
            os.environ["PHI3_AIPC_PREBUILT"] = "auto" if auto else "yes"
            if auto:
                as_downloaded(path.stem[:2], fp16[path.stem[:2]])
            r = run_notebook(path, opts.timeout)
            if held is not None and held.poll() is not None:
                r["error"] = (r["error"] or "") + " (the memory holder was killed: the machine " \
                    "ran out of memory)"
            results["notebooks"][path.stem] = r
            print(f"  peak {r['peak_gb']} GB ({r['peak_gb'] / copy_gb:.2f} copies; "
                  f"anonymous {r['peak_anon_gb']} GB; {r['peak_cell']}), disk "
                  f"+{r['disk_added_gb']} GB, {r['wall_s']:.0f} s"
                  + "".join(f"\n  chat: {c}" for c in r["chats"])
                  + (f"\n  FAILED: {r['error']}" if r["error"] else ""), flush=True)
            out.write_text(json.dumps(results, indent=2), encoding="utf-8")  # kept if stopped
    finally:
        if held is not None:
            held.kill()
    print(f"results: {out}")
    if opts.write_table:
        write_table(results)
        print(f"table written in {TABLE_PAGE}")
    problems = check(results)
    for problem in problems:
        print(f"OVER BUDGET: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
