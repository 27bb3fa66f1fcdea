"""No notebook emulates the NPU at full size unless asked (issue #32).

Without an NPU, notebooks 01 and 03 run OpenVINO's NPU pipeline emulated on the CPU only for a
small model (the stand-ins, so CI still runs it) or when the learner sets `EMULATE_NPU = True`:
at Phi-3-mini's size the emulation holds about 9 GB and takes most of 15-20 minutes. These tests
run the notebooks' own NPU cells, as IPython would run them, with a full-size model on a PC
without an NPU: what they would load, download or run is replaced by a double that fails the
test if it is reached when it should not be, and records that it was reached when asked.
"""
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from IPython.core.inputtransformer2 import TransformerManager

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
FULL_SIZE_INT4_GB = 2.02  # scripts/quantize_full_size.py: NNCF's channel-wise int4 at full size
FULL_SIZE_BF16 = 7.64e9  # the checkpoint's safetensors, bytes


class Reached(Exception):
    """A double was called: the notebook went on to load, download or run."""


def cells(name: str) -> list[str]:
    nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text(encoding="utf-8"))
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def cell_with(name: str, text: str) -> str:
    found = [c for c in cells(name) if text in c]
    assert len(found) == 1, f"{name}: {len(found)} code cells hold {text!r}"
    return found[0]


def run_cell(source: str, namespace: dict, emulate: bool) -> None:
    if emulate:
        assert "EMULATE_NPU = False" in source
        source = source.replace("EMULATE_NPU = False", "EMULATE_NPU = True")
    exec(TransformerManager().transform_cell(source), namespace)


def reach(*_args, **_kwargs):
    raise Reached


class Anything:
    """Any attribute, call or item of it is a double that raises Reached when called."""

    def __getattr__(self, name):
        return reach


def ipython() -> SimpleNamespace:
    return SimpleNamespace(system=reach, run_line_magic=reach, run_cell_magic=reach)


@pytest.mark.parametrize("emulate", [False, True])
def test_notebook_03_emulates_the_npu_at_full_size_only_when_asked(tmp_path, capsys, emulate):
    gate = cell_with("03_openvino", "EMULATE_NPU = False")
    later = [c for c in cells("03_openvino") if "if run_npu:" in c]
    assert len(later) == 2, "the rt_info check and the prompt-limit demo are guarded too"
    int4_dir, fp16_dir = tmp_path / "int4-g128-ov", tmp_path / "fp16-ov"
    namespace = {"get_ipython": ipython, "pipe": object(), "work_dir": tmp_path, "prebuilt": None,
                 "int4_dir": int4_dir, "fp16_dir": fp16_dir, "Path": Path,
                 "core": SimpleNamespace(available_devices=["CPU"], read_model=reach),
                 "size_gb": lambda folder: FULL_SIZE_INT4_GB if folder == int4_dir else 0,
                 "nncf": Anything(), "ov": Anything(), "ov_genai": Anything()}
    if not emulate:
        run_cell(gate, namespace, emulate)
        assert namespace["run_npu"] is False
        assert "Set EMULATE_NPU = True" in capsys.readouterr().out
        for source in later:  # nothing is loaded, compiled or generated
            run_cell(source, namespace, emulate)
        assert not (tmp_path / "int4-ov").exists()
    else:
        with pytest.raises(Reached):  # asked: it makes the NPU's build, to emulate with it
            run_cell(gate, namespace, emulate)
        assert namespace["run_npu"] is True


@pytest.mark.parametrize("emulate", [False, True])
def test_notebook_01_emulates_the_npu_at_full_size_only_when_asked(tmp_path, capsys, monkeypatch,
                                                                  emulate):
    import phi3_aipc.exports

    gate = cell_with("01_npu_acceleration_library", "EMULATE_NPU = False")
    monkeypatch.setattr(phi3_aipc.exports, "export_dir", lambda source, name="": tmp_path / name)
    monkeypatch.setattr(os, "environ", dict(os.environ))  # the cell sets two variables
    namespace = {"get_ipython": ipython, "stored": FULL_SIZE_BF16, "npu_available": lambda: False,
                 "work_dir": tmp_path, "source": object(), "os": os}
    if not emulate:
        run_cell(gate, namespace, emulate)
        assert namespace["run_npu"] is False and os.environ["NPU_MODEL_DIR"] == ""
        assert "Set EMULATE_NPU = True" in capsys.readouterr().out
    else:
        with pytest.raises(Reached):  # asked: it fetches the NPU's build, to emulate with it
            run_cell(gate, namespace, emulate)
        assert namespace["run_npu"] is True


def test_notebook_01s_npu_script_skips_without_a_build():
    """The %%script cell (OpenVINO GenAI in the main environment) loads nothing when the cell
    before it skipped: it says so and ends at once."""
    script = cell_with("01_npu_acceleration_library", "%%script")
    body = script.split("\n", 1)[1]
    done = subprocess.run([sys.executable, "-c", body], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "NPU_MODEL_DIR": "",
                                            "NPU_CACHE_DIR": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Skipped" in done.stdout and "EMULATED" not in done.stdout
