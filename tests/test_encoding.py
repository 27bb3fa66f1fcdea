"""UTF-8 out, always, on Windows too.

On Windows a redirected or piped stdout is the ANSI code page (cp1252) unless Python runs in
UTF-8 mode, and a reply's "→", "✓", emoji or CJK stop a print midway with UnicodeEncodeError.
`PYTHONIOENCODING=cp1252` with a pipe does the same on Linux: these tests run the CLI, and the
child processes of notebook 01's kernel, that way.

Also notebook 01's install cell on Windows (issue #30, part 6): it checks before it installs,
and never installs the library's old packages into another kernel than .venv-npu's.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import NPU_SKIPPED
from .portable import link_files

ROOT = Path(__file__).resolve().parents[1]
TEXT = "→ ✓ 日本 🙂"
NAME = "日本 Renée"
# The CLI with the echo route of tests/fake_route.py registered (it repeats the prompt: the
# cheapest honest way to print a reply), and the NPU library's check replaced: it imports the
# library in its own process, 9 s here, for one line of the doctor's report.
ENTRY = """
import sys
from phi3_aipc.routes import REGISTRY
from phi3_aipc.routes.npu_library import NPULibraryRoute
REGISTRY["echo"] = "tests.fake_route:EchoRoute"
NPULibraryRoute.facts = lambda self: {"installed": False}
from phi3_aipc.cli import main
sys.exit(main(sys.argv[1:]))
"""


def cli_cp1252(*args: str, cache: Path) -> subprocess.CompletedProcess:
    """The CLI with its stdout and stderr piped, as Windows has them without UTF-8 mode."""
    env = {**os.environ, "PYTHONIOENCODING": "cp1252", "PHI3_AIPC_CACHE": str(cache)}
    env.pop("PYTHONUTF8", None)
    return subprocess.run([sys.executable, "-c", ENTRY, *args], cwd=ROOT, env=env,
                          capture_output=True, timeout=300)


@pytest.fixture
def places(stand_in, tmp_path):
    """A cache and a model folder named "日本 Renée", the model the stand-in's files, and in
    the cache an artifact made from that model."""
    cache, model = tmp_path / NAME, tmp_path / "models" / NAME
    model.mkdir(parents=True)
    link_files(stand_in, model)
    artifact = cache / "openvino" / "--Ren-e" / "int4-0123456789ab"
    artifact.mkdir(parents=True)
    (artifact / "phi3-aipc.json").write_text(json.dumps(
        {"route": "openvino", "model": str(model), "precision": "int4"}), encoding="utf-8")
    return cache, model


def utf8(out: bytes) -> str:
    return out.decode("utf-8")  # strict: what the CLI writes is UTF-8


def test_a_reply_in_json_through_a_cp1252_pipe(places):
    cache, model = places
    out = cli_cp1252("generate", "--route", "echo", "--model", str(model), "--json",
                     "--prompt", TEXT, cache=cache)
    assert out.returncode == 0, utf8(out.stderr)
    result = json.loads(utf8(out.stdout))
    assert result["text"] == TEXT and result["model"] == str(model)


def test_a_streamed_reply_through_a_cp1252_pipe(places):
    cache, model = places
    out = cli_cp1252("generate", "--route", "echo", "--model", str(model), "--prompt", TEXT,
                     cache=cache)
    assert out.returncode == 0, utf8(out.stderr)
    text = utf8(out.stdout)
    assert f"[echo | cpu | fp32 | {model}]" in text and f"\n{TEXT}\n" in text


def test_cache_list_through_a_cp1252_pipe(places):
    cache, model = places
    out = cli_cp1252("cache", "list", cache=cache)
    assert out.returncode == 0, utf8(out.stderr)
    text = utf8(out.stdout)
    assert f"Cache: {cache}" in text and str(model) in text and "1 cached folders" in text


def test_doctor_through_a_cp1252_pipe(places):
    cache, _ = places
    out = cli_cp1252("doctor", cache=cache)
    assert out.returncode == 0, utf8(out.stderr)
    assert f"free at {cache}" in utf8(out.stdout)


def test_an_error_names_the_folder_as_it_is_through_a_cp1252_pipe(places):
    """stderr did not fail before (backslashreplace), but wrote \\u65e5 for 日."""
    cache, model = places
    out = cli_cp1252("generate", "--model", str(model / "missing"), "--prompt", "hi",
                     cache=cache)
    err = utf8(out.stderr)
    assert out.returncode == 2 and err.count("\n") == 1 and str(model / "missing") in err


# Notebook 01's children. Its kernel reads what a `!` line's process prints in its own
# encoding (IPython's DEFAULT_ENCODING: the ANSI code page on Windows, cp1252 here under
# PYTHONIOENCODING), and what a %%script cell prints as UTF-8.
NOTEBOOK = ROOT / "notebooks" / "01_npu_acceleration_library.ipynb"


def notebook_cells() -> list[str]:
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


class Kernel:
    """A kernel of the kernelspec `name`, with `env`; `run(code)` returns what it printed."""

    def __init__(self, name: str, env: dict) -> None:
        from jupyter_client.manager import start_new_kernel

        self.manager, self.client = start_new_kernel(kernel_name=name, env=env,
                                                     cwd=str(NOTEBOOK.parent))

    def run(self, code: str) -> str:
        self.client.execute(code)
        out = []
        while True:
            msg = self.client.get_iopub_msg(timeout=120)
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out.append(content["text"])
            elif kind == "error":
                out.append(f"{content['ename']}: {content['evalue']}\n")
            elif kind == "status" and content["execution_state"] == "idle":
                return "".join(out)

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


@pytest.mark.skipif(NPU_SKIPPED, reason="no NPU-library environment")
def test_notebook_01_children_print_through_a_cp1252_kernel(stand_in):
    """The notebook's own cells up to its first child (its install check and its set-up; not
    the library's NPU check, 9 s here, which the children do not depend on), then a `!` line
    and the %%script cell's own lines up to its use of the model, printing the text."""
    cells = notebook_cells()
    install = next(c for c in cells if "%pip install" in c)
    setup = next(c for c in cells if "os.chdir(work_dir)" in c)
    script = next(c for c in cells if c.startswith("%%script"))
    prologue = script[:script.index("\nnpu_dir = ")]
    env = {**os.environ, "PYTHONIOENCODING": "cp1252"}
    env.pop("PYTHONUTF8", None)
    kernel = Kernel("phi3-aipc-npu", env)
    try:
        for cell in (install, setup):
            out = kernel.run(cell)
            assert "Error" not in out, out
        main = kernel.run("from phi3_aipc.envs import main_python; print(main_python())")
        kernel.run(f"main = {main.strip()!r}")
        shell = kernel.run(f'!"{{sys.executable}}" -c "print({TEXT + " " + NAME!r})"')
        scripted = kernel.run(f"{prologue}\nprint({TEXT + ' ' + NAME!r})\n")
    finally:
        kernel.close()
    # The `!` line's process prints what the kernel can read (Renée), the rest replaced; the
    # %%script cell's, all of it.
    assert (shell.strip(), scripted.strip()) == ("? ? ?? ? ?? Renée", f"{TEXT} {NAME}")


# Notebook 01's install cell, run as IPython runs it, with Windows' sys.platform, a kernel's
# sys.prefix and the installed versions of a double; %pip is recorded, not run.
PINS = {"intel-npu-acceleration-library": "1.4.0", "numpy": "1.26.4",
        "neural-compressor": "3.7.1", "setuptools": "80.10.2"}


def run_install_cell(monkeypatch, prefix: str, versions: dict, after_pip: dict | None = None):
    from importlib import metadata

    from IPython.core.inputtransformer2 import TransformerManager

    code = TransformerManager().transform_cell(next(c for c in notebook_cells()
                                                    if "%pip install" in c))
    installed = dict(versions)
    pip = []

    def version(name):
        if name not in installed:
            raise metadata.PackageNotFoundError(name)
        return installed[name]

    class Shell:
        def run_line_magic(self, magic, line):
            pip.append(f"%{magic} {line}")
            installed.update(after_pip or {})

    monkeypatch.setattr(metadata, "version", version)
    monkeypatch.setattr(sys, "prefix", prefix)
    monkeypatch.setattr(sys, "platform", "win32")
    exec(compile(code, "install-cell", "exec"), {"get_ipython": Shell, "__name__": "cell"})
    return pip


def test_notebook_01_refuses_to_install_into_another_kernel(monkeypatch, capsys):
    main = {"numpy": "2.2.6", "setuptools": "80.9.0"}  # .venv: no library, numpy 2
    with pytest.raises(RuntimeError) as err:
        run_install_cell(monkeypatch, str(ROOT / ".venv"), main)
    assert "Choose the kernel 'Python (phi3-aipc NPU library)'" in str(err.value)
    assert "downgrade" in str(err.value) and capsys.readouterr().out == ""


def test_notebook_01_installs_only_what_is_missing_then_asks_for_a_restart(monkeypatch,
                                                                           capsys):
    npu_env = str(ROOT / ".venv-npu")
    assert run_install_cell(monkeypatch, npu_env, PINS) == []  # all there: nothing to do
    assert capsys.readouterr().out == ""
    pip = run_install_cell(monkeypatch, npu_env, {**PINS, "numpy": "2.1.0"},
                           after_pip={"numpy": "1.26.4"})
    assert len(pip) == 1 and '"numpy<2"' in pip[0]
    assert capsys.readouterr().out.startswith("Installed numpy<2. Now restart the kernel")
