"""Artifacts you can trust: sealed manifests, damage detected and rebuilt, interrupted and
concurrent builds, preflight, and `phi3-aipc cache list|clear`.

Each test uses a cache of its own and the stand-in's folder as a local model; where a test is not
about building, its cache starts with a copy of the session's export (the `built` fixture).
"""
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from phi3_aipc import open_session
from phi3_aipc.cache import MANIFEST, build_once, check_sealed, read_manifest
from phi3_aipc.catalog import weight_count
from phi3_aipc.errors import BadInput, InsufficientResources
from phi3_aipc.processes import end_tree, own_group
from phi3_aipc.standin import load_chats

from .conftest import run_cli
from .portable import cli

CHATS = load_chats()
ORT = ["--backend", "onnxruntime-genai", "--precision", "int4"]


def prepare(model, cache, *route):
    out = run_cli("prepare", *route, "--model", str(model), env={"PHI3_AIPC_CACHE": str(cache)})
    assert out.returncode == 0, out.stderr
    return Path(out.stdout.strip().splitlines()[-1]), out


def artifacts_under(cache, route):
    return [p for p in (cache / route).glob("*/*") if p.is_dir() and not p.name.startswith(".")]


def test_a_finished_artifact_is_sealed(stand_in, tmp_path, built):
    built(tmp_path, *ORT)
    folder, _ = prepare(stand_in, tmp_path, *ORT)
    made = read_manifest(folder)
    assert made["files"]["model.onnx"]["size"] == (folder / "model.onnx").stat().st_size
    assert len(made["files"]["model.onnx"]["sha256"]) == 64 and made["size_mb"] > 1
    assert check_sealed(folder) is None


def test_a_truncated_weight_file_is_detected_and_rebuilt(stand_in, tmp_path, built):
    built(tmp_path, *ORT)
    folder, _ = prepare(stand_in, tmp_path, *ORT)
    weights = folder / "model.onnx.data"
    size = weights.stat().st_size
    with open(weights, "r+b") as f:
        f.truncate(size // 2)
    assert "model.onnx.data has" in check_sealed(folder)
    again, out = prepare(stand_in, tmp_path, *ORT)
    assert again == folder and "is damaged (model.onnx.data has" in out.stderr
    assert weights.stat().st_size == size and check_sealed(folder) is None
    session = open_session("onnxruntime-genai", "int4", "cpu", model=str(folder))
    assert session.generate(CHATS[2]["messages"], greedy=True).text == CHATS[2]["reply"]


def test_a_changed_file_with_the_same_size_is_detected(stand_in, tmp_path, built):
    built(tmp_path, *ORT)
    folder, _ = prepare(stand_in, tmp_path, *ORT)
    config = folder / "genai_config.json"
    text = config.read_text()
    config.write_text(text.replace('"do_sample": false', '"do_sample": true '))
    assert check_sealed(folder) == "genai_config.json changed since it was made"
    with pytest.raises(BadInput, match="is damaged: genai_config.json changed"):
        open_session("onnxruntime-genai", "int4", "cpu", model=str(folder))


def small_sealed_folder(where):
    """A sealed folder of two files, made the way every artifact is (build_once)."""
    def build(tmp):
        (tmp / "weights.bin").write_bytes(bytes(range(256)) * 64)
        (tmp / "config.json").write_text('{"layers": 4}')
    return build_once(where / "artifact", build)


def change_keeping_times(path):
    """A same-size change with the modification time set back, as `touch -d` or a copy tool
    can do: only the content tells."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_size == st.st_size


def test_a_change_with_its_time_set_back_is_detected(tmp_path):
    folder = small_sealed_folder(tmp_path)
    change_keeping_times(folder / "weights.bin")
    assert check_sealed(folder) == "weights.bin changed since it was made"


def test_a_copied_folder_is_checked_in_full_once(tmp_path, capsys):
    folder = small_sealed_folder(tmp_path / "made-here")
    copy = tmp_path / "usb-stick" / "artifact"
    shutil.copytree(folder, copy)  # copy2: file times kept, as cp -p, rsync -a or a zip
    assert check_sealed(copy) is None
    assert f"Checking every file of {copy}" in capsys.readouterr().err
    assert read_manifest(copy)["made_in"]["folder"] == str(copy.resolve())  # adopted
    assert check_sealed(copy) is None and capsys.readouterr().err == ""  # once only
    tampered = tmp_path / "share" / "artifact"
    shutil.copytree(folder, tampered)
    manifest = tampered / MANIFEST
    made = json.loads(manifest.read_text())
    change_keeping_times(tampered / "weights.bin")
    for name, entry in made["files"].items():  # the tamperer fixes the times in the manifest too
        st = (tampered / name).stat()
        entry.update(mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns)
    manifest.write_text(json.dumps(made))
    assert check_sealed(tampered) == "weights.bin changed since it was made"


def test_an_export_killed_halfway_recovers(stand_in, tmp_path):
    cmd = [cli(), "prepare", "--backend", "openvino", "--model", str(stand_in)]
    env = {**os.environ, "PHI3_AIPC_CACHE": str(tmp_path)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            **own_group())
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until optimum-cli has started writing
        if any(p.is_dir() and any(p.iterdir()) for p in tmp_path.glob("openvino/*/.int4-*.tmp-*")):
            break
        time.sleep(0.2)
    else:
        pytest.fail("the export never started writing")
    end_tree(proc)  # at once, with optimum-cli, as a power cut would
    assert artifacts_under(tmp_path, "openvino") == []  # nothing that looks finished
    assert list(tmp_path.glob("openvino/*/.int4-*.tmp-*"))  # only the half-written folder
    folder, _ = prepare(stand_in, tmp_path, "--backend", "openvino")
    assert list(tmp_path.glob("openvino/*/.int4-*.tmp-*")) == []
    session = open_session("openvino", "int4", model=str(folder))
    assert session.generate(CHATS[1]["messages"], greedy=True).text == CHATS[1]["reply"]


def test_two_concurrent_prepares_make_one_artifact(stand_in, tmp_path):
    cmd = [cli(), "prepare", *ORT, "--model", str(stand_in)]
    env = {**os.environ, "PHI3_AIPC_CACHE": str(tmp_path)}
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    folders = {out.strip().splitlines()[-1] for out, _ in outs}
    assert len(folders) == 1
    assert sum("Building" in err for _, err in outs) == 1  # one built, the other waited
    assert len(artifacts_under(tmp_path, "onnxruntime-genai")) == 1
    assert check_sealed(Path(folders.pop())) is None


class Tight:
    available = 10**8


def test_preflight_refuses_with_numbers_and_the_override(stand_in, tmp_path, monkeypatch):
    monkeypatch.setenv("PHI3_AIPC_CACHE", str(tmp_path))
    monkeypatch.setattr(psutil, "virtual_memory", lambda: Tight())
    with pytest.raises(InsufficientResources) as err:
        open_session("onnxruntime-genai", "int4", "cpu", model=str(stand_in))
    message = str(err.value)
    assert "GB of memory" in message and "0.1 GB of memory" in message
    assert "--skip-preflight" in message
    assert artifacts_under(tmp_path, "onnxruntime-genai") == []
    session = open_session("onnxruntime-genai", "int4", "cpu", model=str(stand_in),
                           prepare_options={"skip_preflight": True})
    assert session.generate(CHATS[2]["messages"], greedy=True).text == CHATS[2]["reply"]


def test_phi3_mini_weight_count():
    config = {"hidden_size": 3072, "num_hidden_layers": 32, "num_attention_heads": 32,
              "num_key_value_heads": 32, "intermediate_size": 8192, "vocab_size": 32064}
    assert 3.8e9 < weight_count(config) < 3.85e9  # Phi-3-mini: 3.8 billion


def test_cache_list_and_clear(stand_in, tmp_path, built):
    env = {"PHI3_AIPC_CACHE": str(tmp_path)}
    fp32 = ["--backend", "onnxruntime-genai", "--precision", "fp32"]
    built(tmp_path, *ORT)
    built(tmp_path, *fp32)
    prepare(stand_in, tmp_path, *ORT)
    prepare(stand_in, tmp_path, *fp32)
    listed = run_cli("cache", "list", "--json", env=env)
    entries = json.loads(listed.stdout)
    assert sorted((e["route"], e["precision"]) for e in entries) == [
        ("onnxruntime-genai", "fp32"), ("onnxruntime-genai", "int4")]  # one each, none rebuilt
    assert all(e["size_mb"] > 1 for e in entries)
    text = run_cli("cache", "list", env=env).stdout
    assert "2 cached folders" in text and " MB" in text
    bad = run_cli("cache", "clear", "--route", "llama", env=env)
    assert bad.returncode == 2 and "Unknown route 'llama'" in bad.stderr
    kept = run_cli("cache", "clear", "--route", "openvino", env=env)
    assert "0 cached folders removed" in kept.stdout
    assert len(json.loads(run_cli("cache", "list", "--json", env=env).stdout)) == 2
    cleared = run_cli("cache", "clear", "--route", "onnxruntime-genai", env=env)
    assert "2 cached folders removed" in cleared.stdout
    assert json.loads(run_cli("cache", "list", "--json", env=env).stdout) == []
    # the notebooks' own exports (and an interrupted one) are listed and cleared too
    for name in ("int4-ov", "int4-cpu.partial"):
        made = tmp_path / "notebooks" / "stand-in-0123abcd" / name
        made.mkdir(parents=True)
        (made / "openvino_model.bin").write_bytes(b"\0" * 2_000_000)
    entries = json.loads(run_cli("cache", "list", "--json", env=env).stdout)
    assert sorted(e["options"]["contents"].split(" ")[0] for e in entries
                  if e["route"] == "notebooks") == ["int4-cpu.partial", "int4-ov"]
    assert all(e["size_mb"] >= 1.9 for e in entries)
    cleared = run_cli("cache", "clear", "--route", "notebooks", env=env)
    assert "2 cached folders removed" in cleared.stdout
    assert json.loads(run_cli("cache", "list", "--json", env=env).stdout) == []
    # the quality command's references: one entry for the folder, cleared on their own
    (tmp_path / "quality").mkdir()
    for name in ("stand-in-fp32-1.npz", "stand-in-fp32-2.npz"):
        (tmp_path / "quality" / name).write_bytes(b"\0" * 1_000_000)
    entries = json.loads(run_cli("cache", "list", "--json", env=env).stdout)
    assert [(e["route"], e["options"]["contents"].split(" ")[0]) for e in entries] == \
        [("quality", "2")] and entries[0]["size_mb"] >= 1.9
    cleared = run_cli("cache", "clear", "--route", "quality", env=env)
    assert "1 cached folders removed" in cleared.stdout and not (tmp_path / "quality").exists()
