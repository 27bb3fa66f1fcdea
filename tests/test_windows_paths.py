r"""Windows paths: the longest file path each catalog download and each cache folder makes,
held against Windows' 259 characters, and what `phi3-aipc doctor` says when one passes it.

Computed for Windows' layout on any OS: a user folder of 20 characters (the longest local
account name), Hugging Face's default cache C:\Users\<user>\.cache\huggingface\hub, and
phi3-aipc's default cache, platformdirs' %LOCALAPPDATA%\phi3-aipc\Cache. What only Windows can
show (the registry, a failing load) is not run here: `long_paths_enabled` reads a stand-in
registry.
"""
import ntpath
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from phi3_aipc import cache
from phi3_aipc.catalog import MODELS
from phi3_aipc.hardware import (
    ENABLE_LONG_PATHS,
    HF_CACHE,
    MAX_PATH_CHARS,
    PHI3_CACHE,
    PUBLISHED_LONGEST,
    SHORT_FOLDERS,
    cache_paths,
    hub_paths,
    long_paths_enabled,
    windows_path_advice,
)

USER = "u" * 20
HOME = rf"C:\Users\{USER}"
HF_DEFAULT = HOME + r"\.cache\huggingface\hub"
CACHE_DEFAULT = HOME + r"\AppData\Local\phi3-aipc\Cache"
HF_SHORT = ntpath.join(SHORT_FOLDERS[HF_CACHE][1], "hub")  # HF_HOME=C:\hf: C:\hf\hub
DEFAULT = {HF_CACHE: HF_DEFAULT, PHI3_CACHE: CACHE_DEFAULT}

# The downloads whose longest file passes 259 characters in Hugging Face's default cache for a
# 20-character user name, and that length: Microsoft's ONNX CPU builds, which repeat the model's
# and the folder's names in their file names (phi3-mini-4k-instruct-cpu-int4-rtn-block-32-acc-
# level-4.onnx.data). Each fits for user names up to 20 - (length - 259) characters: 14, 10, 13.
TOO_LONG_BY_DEFAULT = {
    "microsoft/Phi-3-mini-4k-instruct-onnx/cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4": 265,
    "microsoft/Phi-3-mini-128k-instruct-onnx/cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4":
        269,
    "microsoft/Phi-3.5-mini-instruct-onnx/cpu_and_mobile/cpu-int4-awq-block-128-acc-level-4": 266,
}


def lengths(paths: list[tuple[str, str]]) -> dict[str, int]:
    return {what: len(path) for what, path in paths}


def test_every_catalog_download_is_measured():
    """Each catalog checkpoint and prebuilt build has its path measured; each ONNX build's
    longest file name is listed from its model page (OpenVINO builds share one layout)."""
    measured = lengths(hub_paths(HF_DEFAULT))
    for model in MODELS.values():
        assert model.id in measured
        for build in model.prebuilt:
            assert "/".join(filter(None, [build.repo, build.subfolder])) in measured
            if build.subfolder:
                assert (build.repo, build.subfolder) in PUBLISHED_LONGEST, \
                    f"list the longest file name of {build.repo}/{build.subfolder}"


def test_three_onnx_cpu_builds_pass_259_in_the_default_cache():
    """Honest figures: the default layout is too deep for three catalog builds."""
    measured = lengths(hub_paths(HF_DEFAULT))
    over = {what: n for what, n in measured.items() if n > MAX_PATH_CHARS}
    assert over == TOO_LONG_BY_DEFAULT
    # The case: Phi-3-mini-4k's CPU build passes 259 from a 15-character user name on.
    build = "microsoft/Phi-3-mini-4k-instruct-onnx/cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4"
    for user, n in ((14, 259), (15, 260)):
        hub = rf"C:\Users\{'u' * user}\.cache\huggingface\hub"
        assert lengths(hub_paths(hub))[build] == n
        assert (n <= MAX_PATH_CHARS) == (user == 14)  # Windows' limit: 259 characters


def test_with_hf_home_c_hf_every_download_fits():
    """The doctor's fix: HF_HOME=C:\\hf puts the hub cache at C:\\hf\\hub, where all fit."""
    measured = lengths(hub_paths(HF_SHORT))
    assert max(measured.values()) == 226 <= MAX_PATH_CHARS
    # huggingface_hub keeps its hub cache in HF_HOME's `hub` folder (this OS's separator here).
    out = subprocess.run([sys.executable, "-c", "from huggingface_hub import constants; "
                          "print(constants.HF_HUB_CACHE)"], capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if "HUB_CACHE" not in k}
                         | {"HF_HOME": "/short"}, check=True)
    assert out.stdout.strip() == os.path.join("/short", "hub")


def test_the_phi3_aipc_cache_fits_by_default(monkeypatch):
    """phi3-aipc's own cache: platformdirs puts it at %LOCALAPPDATA%\\phi3-aipc\\Cache, and its
    longest file (the NPU library's manifest while it is written) is 186 characters there."""
    import platformdirs.windows as windows

    monkeypatch.setattr(windows, "get_win_folder", lambda name: HOME + r"\AppData\Local")
    monkeypatch.setattr(windows, "os", types.SimpleNamespace(path=ntpath))
    assert windows.Windows(appname="phi3-aipc", appauthor=False).user_cache_dir == CACHE_DEFAULT
    measured = lengths(cache_paths(CACHE_DEFAULT))
    assert max(measured.values()) == 186 <= MAX_PATH_CHARS
    assert max(n for what, n in measured.items() if "onnxruntime-genai export" in what) == 174


def tail(path: str, root: str) -> list[str]:
    return ntpath.relpath(path, root).split("\\")


def test_the_measured_cache_layout_is_cache_pys(tmp_path, monkeypatch):
    """The folders and temporary names `cache_paths` measures are the ones cache.py, exports.py
    and the NPU route make (same names, or same lengths where a digest varies)."""
    from phi3_aipc.exports import export_dir
    from phi3_aipc.models import ModelSource
    from phi3_aipc.routes.npu_library import worker_folder

    monkeypatch.setenv("PHI3_AIPC_CACHE", str(tmp_path))
    model = MODELS["microsoft/Phi-3-mini-128k-instruct"]
    measured = dict(cache_paths(CACHE_DEFAULT))
    route = "onnxruntime-genai"
    final = cache.artifact_dir(route, model.id, f"{model.id}@{'a' * 40}", "int4", {})
    renamed = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (renamed.append((Path(a), Path(b))),
                                                     real_replace(a, b)))
    cache.build_once(final, lambda tmp: (tmp / "special_tokens_map.json").write_text("{}"))
    cache.discard(final)
    assert len(renamed) == 3  # the manifest written, the build renamed, then removed
    (manifest_tmp, _), (building, _), (_, removed) = renamed
    made = final.relative_to(tmp_path).parts
    built = tail(measured[f"{route} export of {model.id}, while it is built"], CACHE_DEFAULT)
    gone = tail(measured[f"{route} export of {model.id}, while it is removed"], CACHE_DEFAULT)
    assert list(made[:2]) == built[:2] == gone[:2]
    assert [len(building.name), len(manifest_tmp.name)] == [len(p) for p in built[2:]]
    assert building.name.startswith(f".{final.name}.tmp-") and removed.name.startswith(
        f".{final.name}.discard-")
    assert len(removed.name) == len(gone[2])
    assert manifest_tmp.parent == building and manifest_tmp.name.startswith(".phi3-aipc.json.tmp-")

    snapshot = tmp_path / "hub" / ("a" * 40)
    snapshot.mkdir(parents=True)
    notebooks = export_dir(ModelSource(model.id, snapshot, "hub")).relative_to(tmp_path).parts
    mine = tail(measured[f"notebooks' int4-dml export of {model.id}, while it is made"],
                CACHE_DEFAULT)
    assert [notebooks[0], len(notebooks[1])] == [mine[0], len(mine[1])]
    worker = worker_folder(snapshot).relative_to(tmp_path).parts
    npu = tail(measured["npu-library compiled model, while it is built"], CACHE_DEFAULT)
    assert [worker[0], len(worker[1])] == [npu[0], len(npu[1])]


def test_doctor_advises_when_long_paths_are_off():
    advice = windows_path_advice("nt", False, DEFAULT, home=HOME)
    assert advice["folders"][HF_CACHE]["longest"] == 269
    assert advice["folders"][PHI3_CACHE]["longest"] == 186
    [problem] = advice["problems"]
    assert "3 of the catalog's downloads" in problem and "269" in problem
    assert "microsoft/Phi-3-mini-128k-instruct-onnx" in problem
    enable, move = advice["fixes"]
    assert ENABLE_LONG_PATHS in enable and "administrator" in enable
    assert r"HKLM:\SYSTEM\CurrentControlSet\Control\FileSystem" in ENABLE_LONG_PATHS
    assert "-Name LongPathsEnabled -Value 1 -PropertyType DWORD" in ENABLE_LONG_PATHS
    assert r"setx HF_HOME C:\hf" in move and r'$env:HF_HOME = "C:\hf"' in move
    # The setting unreadable is taken as off; enabled, or the advised folder, and all is well.
    assert windows_path_advice("nt", None, DEFAULT)["problems"] == [problem]
    assert windows_path_advice("nt", True, DEFAULT)["problems"] == []
    short = windows_path_advice("nt", False, {**DEFAULT, HF_CACHE: HF_SHORT})
    assert short["problems"] == short["fixes"] == []
    assert short["folders"][HF_CACHE]["longest"] == 226


def test_a_deep_phi3_aipc_cache_is_reported_too():
    deep = HOME + r"\Documents\workshops\2025\phi3-aipc\handouts\copied from the USB stick" \
                  r"\workshop-cache\and deeper still\than anyone would go"
    advice = windows_path_advice("nt", False, {**DEFAULT, HF_CACHE: HF_SHORT, PHI3_CACHE: deep})
    [problem] = advice["problems"]
    assert problem.startswith("The phi3-aipc cache is") and "PHI3_AIPC_CACHE" in advice["fixes"][1]


def test_non_ascii_folders_are_reported_with_the_way_out():
    home = r"C:\Users\Renée"
    folders = {HF_CACHE: home + r"\.cache\huggingface\hub",
               PHI3_CACHE: home + r"\AppData\Local\phi3-aipc\Cache"}
    advice = windows_path_advice("nt", True, folders, home=home)
    assert len(advice["problems"]) == 2
    for problem in advice["problems"]:
        assert "(é, from your user folder C:\\Users\\Renée)" in problem
        assert "ONNX Runtime GenAI is reported to fail loading a tokenizer" in problem
    assert [f.split(" ")[1] for f in advice["fixes"]] == ["HF_HOME", "PHI3_AIPC_CACHE"]
    assert advice["folders"][PHI3_CACHE]["non_ascii"] == "é"
    moved = windows_path_advice("nt", True, {HF_CACHE: HF_SHORT, PHI3_CACHE: r"C:\phi3-aipc"},
                                home=home)
    assert moved["problems"] == []


def test_elsewhere_it_says_not_windows():
    advice = windows_path_advice("posix", None, DEFAULT)
    assert not advice["checked"] and advice["detail"].startswith("not Windows")
    assert advice["problems"] == advice["fixes"] == [] and advice["folders"] == {}
    assert long_paths_enabled("posix") is None


class Registry:
    """A stand-in for winreg: HKLM's FileSystem key with `value` (an exception is raised)."""

    HKEY_LOCAL_MACHINE = "HKLM"

    def __init__(self, value):
        self.value, self.opened = value, []

    def OpenKey(self, root, path):  # noqa: N802 (winreg's names)
        self.opened.append((root, path))
        if isinstance(self.value, Exception):
            raise self.value
        return open(os.devnull)  # a context manager, as winreg's key is

    def QueryValueEx(self, key, name):  # noqa: N802
        assert name == "LongPathsEnabled"
        return self.value, 4  # REG_DWORD


@pytest.mark.parametrize("value, expected", [
    (1, True), (0, False), (FileNotFoundError(2, "not there"), False),
    (PermissionError(5, "denied"), None)])
def test_the_long_path_setting_is_read_from_the_registry(value, expected):
    registry = Registry(value)
    assert long_paths_enabled("nt", registry) is expected
    assert registry.opened == [("HKLM", r"SYSTEM\CurrentControlSet\Control\FileSystem")]


def test_doctor_reports_paths_on_this_os():
    """doctor() puts the check under "paths"; here (not Windows) it says so plainly."""
    from phi3_aipc.doctor import paths_lines

    here = windows_path_advice(os.name, long_paths_enabled(), DEFAULT)
    if os.name != "nt":
        assert paths_lines(here) == ["", f"Paths   {here['detail']}"]
    text = "\n".join(paths_lines(windows_path_advice("nt", False, DEFAULT, home=HOME)))
    assert re.search(r"Hugging Face cache +C:\\Users\\u{20}\\\.cache\\huggingface\\hub: longest "
                     r"file path 269 characters \(limit 259\)", text)
    assert "\n  problem: The Hugging Face cache" in text and "\n  fix: enable long" in text
