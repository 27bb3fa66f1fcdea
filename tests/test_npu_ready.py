"""NPU readiness: an OpenVINO export's weight compression is read from the model itself (NNCF's
runtime info in openvino_model.xml) before it is compiled for the NPU, emulated here on the CPU,
so a folder without this suite's manifest (a published build, a learner's own optimum-cli
export) is checked too. Also: the catalog's NPU builds, and the compile caches' folder names.

The stand-in's exports are made once (in the shared test cache, so once per cache) and copied
here without their manifest. About 20 s once they exist (each export adds about 30 s the first
time).
"""
import json
import shutil

import pytest

from phi3_aipc import catalog, open_session
from phi3_aipc.cache import MANIFEST
from phi3_aipc.errors import BadInput
from phi3_aipc.models import resolve_model
from phi3_aipc.routes import prepare
from phi3_aipc.standin import load_chats

from .conftest import run_cli

pytest.importorskip("openvino_genai")
from phi3_aipc.routes import openvino as ov_route  # noqa: E402

CHATS = load_chats()
WORKS = "--weight-format int4 --sym --group-size -1 --ratio 1.0"


@pytest.fixture(scope="module")
def unmarked(stand_in, tmp_path_factory):
    """Exports of the stand-in as the route makes them, copied without phi3-aipc.json: what a
    published build or a learner's own optimum-cli export looks like to the route."""
    source = resolve_model("stand-in")
    made = {"sym": prepare("openvino", "int4", model=source),
            "asym": prepare("openvino", "int4", model=source, sym=False),
            "group64": prepare("openvino", "int4", model=source, group_size=64)}
    root = tmp_path_factory.mktemp("unmarked")
    for name, folder in made.items():
        shutil.copytree(folder, root / name, ignore=shutil.ignore_patterns(MANIFEST))
    return {name: root / name for name in made}


@pytest.fixture
def no_compile(monkeypatch):
    """Fails the test if anything is compiled through LLMPipeline."""
    import openvino_genai

    def refuse(*args, **kwargs):
        raise AssertionError("LLMPipeline was created: the model would have been compiled")

    monkeypatch.setattr(openvino_genai, "LLMPipeline", refuse)


def emulated_npu(folder):
    return open_session("openvino", "int4", "NPU", model=str(folder), progress=False,
                        load_options={"emulate_npu": True})


def test_the_settings_are_read_from_the_model_itself(unmarked):
    assert not (unmarked["asym"] / MANIFEST).exists()
    read = {name: ov_route.weight_compression(folder) for name, folder in unmarked.items()}
    assert {k: read["sym"][k] for k in ("mode", "group_size", "ratio")} == \
        {"mode": "int4_sym", "group_size": -1, "ratio": 1.0}
    assert read["asym"]["mode"] == "int4_asym"
    assert read["group64"]["mode"] == "int4_sym" and read["group64"]["group_size"] == 64
    assert read["sym"]["source"] == "as NNCF's record in its openvino_model.xml says"


def test_an_asymmetric_export_without_our_manifest_is_refused_before_compiling(unmarked,
                                                                               no_compile):
    """Before this check, this export compiled and generated on the emulated NPU (the route
    only read its own manifest, and the copy has none)."""
    with pytest.raises(BadInput) as refused:
        emulated_npu(unmarked["asym"])
    message = str(refused.value)
    assert "\n" not in message
    assert "int4_asym" in message and "asymmetric" in message and WORKS in message


def test_a_group_64_export_is_refused(unmarked, no_compile):
    with pytest.raises(BadInput, match="groups of 64") as refused:
        emulated_npu(unmarked["group64"])
    assert WORKS in str(refused.value)


def test_a_symmetric_channel_wise_export_without_our_manifest_runs(unmarked):
    with emulated_npu(unmarked["sym"]) as session:
        assert session.device == "NPU (emulated on CPU)"
        assert session.generate(CHATS[0]["messages"], greedy=True).text == CHATS[0]["reply"]


def test_the_cli_refuses_in_one_line(unmarked):
    out = run_cli("generate", "--model", str(unmarked["asym"]), "--backend", "openvino",
                  "--device", "NPU", "--emulate-npu", "--prompt", "hi")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and WORKS in out.stderr


@pytest.mark.parametrize("settings,architecture,problem", [
    ({"mode": "int4_sym", "group_size": -1, "ratio": 1.0}, None, None),
    ({"mode": "int4_sym", "group_size": 128, "ratio": 1.0}, "3720", None),
    ({"mode": "int4_asym", "group_size": -1, "ratio": 1.0}, "4000", "asymmetric"),
    ({"mode": "int4_sym", "group_size": 64, "ratio": 1.0}, None, "groups of 64"),
    ({"mode": "int4_sym", "group_size": -1, "ratio": 0.8}, None, "80% of its layers"),
    # NF4: NPUs of Lunar Lake (architecture 4000) and newer; not Meteor or Arrow Lake (3720),
    # and not an NPU that cannot be asked (the emulated one)
    ({"mode": "nf4", "group_size": -1, "ratio": 1.0}, "4000", None),
    ({"mode": "nf4", "group_size": -1, "ratio": 1.0}, "5010", None),
    ({"mode": "nf4", "group_size": -1, "ratio": 1.0}, "3720", "reports architecture 3720"),
    ({"mode": "nf4", "group_size": -1, "ratio": 1.0}, None, "no NPU to ask"),
    ({"mode": "nf4", "group_size": 128, "ratio": 1.0}, "4000", "NF4 must be channel-wise"),
    ({"mode": "mxfp4", "group_size": 32, "ratio": 1.0}, None, "mxfp4"),
    # not 4-bit: not this check's business
    ({"mode": "int8_asym", "group_size": -1, "ratio": 1.0}, None, None),
])
def test_what_the_npu_takes(settings, architecture, problem):
    found = ov_route.npu_problem(settings, architecture)
    assert found is None if problem is None else problem in found


def test_optimum_intel_1x_openvino_config_is_read_when_the_ir_has_no_record():
    """Older optimum-intel wrote the settings to openvino_config.json (2.x's CLI writes only
    `quant_method`; NNCF's runtime info in the IR is read first)."""
    old = {"quantization_config": {"bits": 4, "sym": False, "group_size": 128, "ratio": 0.8,
                                   "dtype": "int4", "quant_method": "default"}}
    assert ov_route.settings_from_config(old) == {"mode": "int4_asym", "group_size": 128,
                                                  "ratio": 0.8}
    nf4 = {"quantization_config": {"bits": 4, "sym": True, "group_size": -1,
                                   "weight_format": "nf4"}}
    assert ov_route.settings_from_config(nf4)["mode"] == "nf4"
    default_group = {"quantization_config": {"bits": 4, "sym": True}}
    assert ov_route.settings_from_config(default_group)["group_size"] == 128  # optimum's default
    new = {"quantization_config": {"default_config": {"quant_method": "default"},
                                   "quantization_configs": {}}}
    assert ov_route.settings_from_config(new) is None


def test_the_compile_cache_is_keyed_by_openvino_and_the_npu_driver(monkeypatch, tmp_path):
    name = ov_route.compile_cache_name
    first = name("2026.4.1-22982-e213a147257-releases/2026/4", "1688")
    assert "/" not in first and "2026.4.1" in first and "1688" in first
    assert name("2026.5.0-23000-abcdef-releases/2026/5", "1688") != first  # OpenVINO upgraded
    assert name("2026.4.1-22982-e213a147257-releases/2026/4", "1720") != first  # new driver
    assert name("2026.4.1", "none") != name("2026.4.1", "emulated")
    # the route's own folder: "none" without an NPU (as here; an AI PC's NPU is hidden for
    # this), or "emulated" for the emulated NPU
    monkeypatch.setenv("PHI3_AIPC_CACHE", str(tmp_path))
    monkeypatch.setattr(ov_route, "available_devices", lambda: ["CPU"])
    import openvino

    here = ov_route.compiled_cache()
    assert here.parent == tmp_path / "openvino-compiled"
    assert here.name == name(openvino.get_version(), "none")
    assert ov_route.compiled_cache(emulated=True).name == name(openvino.get_version(),
                                                               "emulated")
    monkeypatch.setattr(ov_route, "available_devices", lambda: ["CPU", "NPU"])
    monkeypatch.setattr(ov_route, "npu_property", lambda name: {"NPU_DRIVER_VERSION": 1688}[name])
    assert ov_route.compiled_cache().name == name(openvino.get_version(), "1688")
    # `phi3-aipc cache` lists and clears the parent, all versions at once
    assert ov_route.OpenVINORoute().library_caches()[0][0] == tmp_path / "openvino-compiled"


def test_every_catalog_model_has_an_npu_build_or_says_how_to_make_one():
    builds = {m.id: m.npu_build() for m in catalog.MODELS.values()}
    assert builds["microsoft/Phi-3-mini-4k-instruct"].repo == \
        "OpenVINO/Phi-3-mini-4k-instruct-int4-cw-ov"
    assert builds["microsoft/Phi-3.5-mini-instruct"].repo == \
        "OpenVINO/Phi-3.5-mini-instruct-int4-cw-ov"
    assert builds["microsoft/Phi-3-mini-128k-instruct"] is None
    assert builds["microsoft/Phi-4-mini-instruct"] is None
    for model in catalog.MODELS.values():
        advice = model.npu_advice()
        if builds[model.id]:
            assert builds[model.id].repo in advice and "channel-wise" in advice
        else:
            assert model.npu_note and model.npu_note in advice
            assert f"--model {model.id} " in advice and WORKS in advice


def test_the_refusal_names_the_models_npu_build_when_the_catalog_has_one():
    settings = {"mode": "int4_asym", "group_size": 64, "ratio": 1.0, "source": "x"}
    phi4 = ov_route.not_ready_message("OpenVINO/Phi-4-mini-instruct-int4-ov", settings,
                                      "asymmetric int4 (int4_asym)")
    assert "--model microsoft/Phi-4-mini-instruct " in phi4 and "no NPU-ready build" in phi4
    mini = ov_route.not_ready_message("microsoft/Phi-3-mini-4k-instruct", settings,
                                      "asymmetric int4 (int4_asym)")
    assert "OpenVINO/Phi-3-mini-4k-instruct-int4-cw-ov" in mini and "--prebuilt" in mini
    assert json.dumps(mini).count("\\n") == 0
