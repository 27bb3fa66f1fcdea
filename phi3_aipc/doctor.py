"""`phi3-aipc doctor` and notebook 00: what this PC has, and a verdict per route.

Each route reports what its runtime sees (its `facts`, under its `doctor_key`), tells it in
its own words (`facts_lines`) and judges itself from it; this module only gathers and prints.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import sys
from dataclasses import asdict

from .cache import cache_dir
from .envs import installed_version
from .hardware import (
    HF_CACHE,
    PHI3_CACHE,
    cpu_model,
    long_paths_enabled,
    memory_gb,
    windows_path_advice,
)
from .routes import all_routes


def doctor() -> dict:
    """Everything `phi3-aipc doctor --json` prints (docs/cli.md documents the keys)."""
    import psutil
    from huggingface_hub import constants

    routes = all_routes()
    versions = {p: installed_version(p) for r in routes for p in r.packages}
    cpu = cpu_model()
    cache = cache_dir()
    report = {
        "os": {"system": platform.system(), "release": platform.release(),
               "machine": platform.machine()},
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "cpu": {"model": cpu, "is_core_ultra": "core(tm) ultra" in cpu.lower()
                or "core ultra" in cpu.lower(),
                "cores": psutil.cpu_count(logical=False), "threads": os.cpu_count()},
        "memory_gb": memory_gb(),
        "disk": {"path": str(cache), "free_gb": round(shutil.disk_usage(cache).free / 2**30, 1)},
        "packages": versions,
        "paths": windows_path_advice(os.name, long_paths_enabled(),
                                     {HF_CACHE: constants.HF_HUB_CACHE, PHI3_CACHE: str(cache)},
                                     home=os.path.expanduser("~")),
        "routes": {},
    }
    for route in routes:
        facts = route.facts()
        if route.doctor_key:
            report[route.doctor_key] = facts
        verdict = route.verdict(facts, versions)
        if verdict is not None:
            report["routes"][route.name] = asdict(verdict)
    return report


def format_report(report: dict) -> str:
    """The doctor report as text for a terminal or a notebook."""
    cpu = report["cpu"]
    lines = [
        f"OS      {report['os']['system']} {report['os']['release']} ({report['os']['machine']})",
        f"Python  {report['python']['version']}  {report['python']['executable']}",
        f"CPU     {cpu['model']} ({cpu['cores']} cores, {cpu['threads']} threads)"
        f"{'  Core Ultra: yes' if cpu['is_core_ultra'] else '  (not a Core Ultra)'}",
        f"Memory  {report['memory_gb']['total']} GB, {report['memory_gb']['available']} GB free",
        f"Disk    {report['disk']['free_gb']} GB free at {report['disk']['path']}",
        "", "Packages",
    ]
    lines += [f"  {name:32} {ver or '-'}" for name, ver in report["packages"].items()]
    for route in all_routes():  # what each route's runtime sees, in the route's own words
        if route.doctor_key in report:
            lines += route.facts_lines(report[route.doctor_key])
    lines += paths_lines(report.get("paths"))
    lines += ["", "Routes"]
    for name, r in report["routes"].items():
        lines.append(f"  {name:18} {r['verdict']:9} {r['detail']}")
        if r["fix"]:
            lines.append(f"  {'':18} fix: {r['fix']}")
    return "\n".join(lines)


def paths_lines(paths: dict | None) -> list[str]:
    """The Windows path check (`windows_path_advice`) as text: its figures, problems, fixes."""
    if not paths:
        return []
    lines = ["", f"Paths   {paths['detail']}"]
    for name, folder in paths["folders"].items():
        lines.append(f"  {name:18} {folder['path']}: longest file path {folder['longest']} "
                     f"characters (limit {paths['limit']}), for {folder['longest_for']}")
    lines += [f"  problem: {p}" for p in paths["problems"]]
    lines += [f"  fix: {f}" for f in paths["fixes"]]
    return lines


if __name__ == "__main__":
    print(json.dumps(doctor(), indent=2))
