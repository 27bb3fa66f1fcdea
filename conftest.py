"""Test-wide settings: every test and notebook runs on the offline stand-in, in a cache of its own.

Both are environment variables, so the notebooks' kernels (started by nbval) inherit them.
Jupyter looks for kernels in this environment first, so nbval starts each notebook in the kernel
it declares: "python3" is this environment's, "phi3-aipc-npu" the NPU library's (both
registered by scripts/bootstrap.py), whatever other kernels the machine has.
"""
import functools
import os
import signal
import sys
import warnings
from pathlib import Path

import pytest

os.environ.setdefault("PHI3_AIPC_MODEL", "stand-in")
os.environ.setdefault("PHI3_AIPC_CACHE", str(Path(__file__).parent / ".cache" / "test"))
# Without the NPU-library environment (macOS, or PHI3_AIPC_SKIP_NPU=1) its notebook cannot run.
NPU_SKIPPED = bool(os.environ.get("PHI3_AIPC_SKIP_NPU")) or sys.platform == "darwin"
collect_ignore = ["notebooks/01_npu_acceleration_library.ipynb"] if NPU_SKIPPED else []
os.environ["JUPYTER_PATH"] = os.pathsep.join(
    filter(None, [str(Path(sys.prefix) / "share" / "jupyter"), os.environ.get("JUPYTER_PATH")]))


def pytest_sessionstart(session):
    """With two workers, the notebooks' shared exports (`<cache>/notebooks/...`: notebooks 01-03
    and 05, the docs and browser tests) are made once, here, before the workers start: the
    notebooks' own export cells check for the folder and rename a `.partial` into place, and two
    workers doing that at once would trip over each other."""
    config = session.config
    controller = getattr(config.option, "numprocesses", None) and \
        not hasattr(config, "workerinput")
    if controller and any(Path(a).parts[:1] == ("notebooks",) for a in config.args):
        import subprocess

        print("Making the notebooks' shared exports before the workers start ...", flush=True)
        subprocess.run([sys.executable, "-c", "from phi3_aipc.exports import onnx_int4, "
                        "openvino_int4; openvino_int4(); onnx_int4()"], check=True)


def pytest_collection_modifyitems(items):
    """The long ones first. `make test` runs two workers (pytest-xdist, a file or notebook per
    worker, handed out in this order as workers free up): starting the minutes-long files first
    (the notebooks, and the tests marked slow, binder, browser or windows_pins) keeps one worker
    from ending the run alone with a long file. Notebooks count as slow (test-quick skips them)."""
    long = ("slow", "binder", "browser", "windows_pins")
    files = {}  # each file's items, in pytest's order (which groups parametrized fixtures)
    for item in items:
        if getattr(item, "cell", None) is not None:
            item.add_marker(pytest.mark.slow)
        files.setdefault(item.path, []).append(item)
    first = sorted(files, key=lambda f: not any(i.get_closest_marker(m) for i in files[f]
                                                for m in long))
    items[:] = [item for f in first for item in files[f]]


@functools.cache
def lesson_checks():
    """scripts/lesson_checks.py, the one definition of what each lesson must print (the docs
    build runs the same checks)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "lesson_checks", Path(__file__).parent / "scripts" / "lesson_checks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _sigint_left_as_it_was(request):
    """A test that leaves another SIGINT handler breaks later interrupt tests in its worker
    (`_thread.interrupt_main` calls whatever handler is there): name it in the warnings."""
    before = signal.getsignal(signal.SIGINT)
    yield
    after = signal.getsignal(signal.SIGINT)
    if after is not before:
        warnings.warn(f"{request.node.nodeid} left SIGINT's handler as {after!r} (it was "
                      f"{before!r})", stacklevel=1)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """nbval runs each notebook cell; a cell tagged `check:...` (a lesson's reply, a chat's second
    turn, notebook 04's tables, a Stop) must also print what the lesson says, not merely not
    raise. Only on the memorized stand-in, whose replies are known."""
    result = yield
    cell = getattr(item, "cell", None)
    tags = cell.get("metadata", {}).get("tags", []) if cell is not None else []
    if any(t.startswith("check:") for t in tags) and \
            os.environ.get("PHI3_AIPC_MODEL") == "stand-in":
        import nbformat

        from phi3_aipc import installed_routes

        checks = lesson_checks()
        ran = nbformat.v4.new_notebook()
        # As nbval collected them: the checks read the streamed pieces joined (text_of), so the
        # docs build's coalesce, which joins them for display, would change nothing here.
        ran.cells = [nbformat.from_dict({**cell, "outputs": item.test_outputs or []})]
        problems = checks.check(Path(str(item.fspath)).stem, ran,
                                [r.name for r in installed_routes()])
        if problems:
            pytest.fail("; ".join(problems), pytrace=False)
    return result
