"""Fuzzing with Hypothesis: nothing from outside crashes phi3_aipc.

Whatever a user types (command-line options, sampling settings, chats) or a folder holds (a
manifest, config.json, tokenizer.json), the answer is a result or one clear error (BadInput and
its kin, exit code 2), never an internal error (exit code 1) or a traceback. The crashes these
found are fixed, and their examples are kept in tests/test_cli_errors.py and test_chat.py.

Profiles: "ci" (the default, a few minutes in all) and "fuzz" (`make fuzz`: many more
examples). Failing examples are kept in tests/.hypothesis-db and replayed first next time.
"""
import json
import math
import os
import shutil
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.database import DirectoryBasedExampleDatabase  # noqa: E402

from phi3_aipc.backends.session import GenerationRequest  # noqa: E402
from phi3_aipc.cache import MANIFEST, check_sealed, read_manifest  # noqa: E402
from phi3_aipc.chat import check_messages  # noqa: E402
from phi3_aipc.cli import main  # noqa: E402
from phi3_aipc.errors import Phi3AipcError  # noqa: E402
from phi3_aipc.models import check_phi3_folder  # noqa: E402

from .strategies import json_values, numbers  # noqa: E402

DB = DirectoryBasedExampleDatabase(str(Path(__file__).parent / ".hypothesis-db"))
COMMON = dict(database=DB, deadline=None, derandomize=False,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow])
settings.register_profile("ci", max_examples=40, **COMMON)
settings.register_profile("fuzz", max_examples=2000, **COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def slow(ci_examples: int) -> int:
    """Fewer examples for a test that takes seconds each: CI's few, or ten times as many."""
    return ci_examples * (10 if settings().max_examples > 40 else 1)



@given(temperature=numbers, top_p=numbers, seed=numbers | st.none(),
       max_new_tokens=numbers, greedy=st.booleans())
def test_any_generation_settings_are_checked_or_refused(temperature, top_p, seed,
                                                        max_new_tokens, greedy):
    request = GenerationRequest(max_new_tokens=max_new_tokens, greedy=greedy,
                                temperature=temperature, top_p=top_p, seed=seed)
    try:
        request.check()
    except Phi3AipcError:
        return
    assert isinstance(request.max_new_tokens, int) and request.max_new_tokens >= 1
    if not greedy:
        assert 0.01 <= request.temperature <= 100 and 0 < request.top_p <= 1
    assert request.seed is None or 0 <= request.seed < 2**32


@given(json_values)
def test_any_chat_is_checked_or_refused(messages):
    try:
        checked = check_messages(messages)
    except Phi3AipcError:
        return
    assert checked[-1]["role"] == "user"
    assert all(isinstance(turn["content"], str) for turn in checked)


@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_any_manifest_is_read_or_called_damaged(tmp_path_factory, manifest):
    folder = tmp_path_factory.mktemp("artifact")
    (folder / "weights.bin").write_bytes(b"0" * 16)
    (folder / MANIFEST).write_bytes(manifest)
    made = read_manifest(folder)
    assert isinstance(made, dict)
    problem = check_sealed(folder)
    assert problem is None or isinstance(problem, str)


@pytest.fixture(scope="module")
def checkpoint(stand_in, tmp_path_factory):
    """The stand-in's files, to be given a fuzzed config.json or tokenizer.json."""
    folder = tmp_path_factory.mktemp("checkpoint")
    for f in stand_in.iterdir():
        if f.is_file():
            shutil.copy(f, folder / f.name)
    return folder


SHAPE_KEYS = ["hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "vocab_size", "num_key_value_heads", "head_dim", "tie_word_embeddings",
              "model_type"]


@given(changes=st.dictionaries(st.sampled_from(SHAPE_KEYS), json_values, min_size=1,
                               max_size=3),
       tokenizer=st.none() | st.binary(max_size=50))
def test_any_config_is_accepted_only_if_it_describes_the_weights(checkpoint, changes, tokenizer):
    original = (checkpoint / "config.json").read_text()
    original_tokenizer = (checkpoint / "tokenizer.json").read_bytes()
    try:
        (checkpoint / "config.json").write_text(json.dumps({**json.loads(original), **changes}))
        if tokenizer is not None:
            (checkpoint / "tokenizer.json").write_bytes(tokenizer)
        try:
            check_phi3_folder(checkpoint)
        except Phi3AipcError:
            return
        config = json.loads((checkpoint / "config.json").read_text())
        assert all(isinstance(config[k], int) and config[k] >= 1
                   for k in SHAPE_KEYS[:5])
    finally:
        (checkpoint / "config.json").write_text(original)
        (checkpoint / "tokenizer.json").write_bytes(original_tokenizer)


OPTIONS = {
    "--temperature": numbers, "--top-p": numbers, "--seed": numbers,
    "--max-new-tokens": numbers, "--route": st.sampled_from(
        ["transformers", "openvino", "onnxruntime-genai", "llama", ""]),  # npu-library: slow
    "--device": st.sampled_from(["cpu", "CPU", "NPU", "GPU.1", "dml", "", "TPU"]),
    "--precision": st.sampled_from(["int4", "int8", "fp16", "fp32", "int3", ""]),
    "--model": st.sampled_from(["stand-in", "", "./no/such", "nobody/nothing", "phi-4-mini"]),
    "--group-size": numbers, "--block-size": numbers, "--prompt": st.text(max_size=30),
}


@settings(max_examples=slow(25))
@given(st.dictionaries(st.sampled_from(sorted(OPTIONS)), st.just(None), max_size=5).flatmap(
    lambda keys: st.fixed_dictionaries({k: OPTIONS[k] for k in keys})))
def test_the_command_line_never_fails_with_a_bug(stand_in, capsys, monkeypatch, options):
    """In-process `generate` with fuzzed options, the hub unreachable (a closed port): the
    exit code is 0 or 2 (a one-line error), never 1 (a bug) or a traceback."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    argv = ["generate", "--greedy", "--max-new-tokens", "4"]
    for key, value in options.items():
        if isinstance(value, float) and not math.isfinite(value):
            value = str(value)
        argv += [key, str(value)]
    if "--prompt" not in options:
        argv += ["--prompt", "hi"]
    if "--model" not in options:
        argv += ["--model", "stand-in"]
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's own refusals
        code = exit.code
    err = capsys.readouterr().err
    assert code in (0, 2), (argv, err)
    assert "Traceback" not in err and "internal error" not in err, (argv, err)


# Text the environment can hold (no NUL, no lone surrogates), and text anyone could type.
env_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                   max_size=24)
typed = env_text | st.binary(max_size=12).map(lambda b: b.decode("latin-1").replace("\x00", ""))


def exit_code(argv, capsys):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit:  # argparse's own refusals
        code = exit.code
    err = capsys.readouterr().err
    assert code in (0, 2), (argv, err)
    assert "Traceback" not in err and "internal error" not in err, (argv, err)
    if code == 2:
        assert err.strip(), argv  # a refusal says why


@given(cache=st.sampled_from(["", "~", "a-file", "deep/er/still", "odd ü 'x' $HOME", "tab\tname",
                              " "]) | env_text.filter(lambda t: ".." not in t),
       prebuilt=env_text | st.sampled_from(["auto", "YES", " no ", "1"]),
       model=env_text | st.sampled_from(["stand-in", "microsoft/Phi-3-mini-4k-instruct"]),
       offline=env_text, debug=env_text,
       command=st.sampled_from([["cache", "list"], ["cache", "list", "--json"], ["models"]]))
def test_any_environment_is_taken_or_refused(tmp_path_factory, monkeypatch, capsys, cache,
                                             prebuilt, model, offline, debug, command):
    """Every variable the package reads, generated, for the commands that read the cache (a
    cache location relative to a folder of the test's own, which holds a file 'a-file')."""
    home = tmp_path_factory.mktemp("home")
    (home / "a-file").write_text("not a folder")
    monkeypatch.chdir(home)
    monkeypatch.setenv("HOME", str(home))
    for name, value in {"PHI3_AIPC_CACHE": f"./{cache}" if cache.strip() else cache,
                        "PHI3_AIPC_PREBUILT": prebuilt, "PHI3_AIPC_MODEL": model,
                        "HF_HUB_OFFLINE": offline, "PHI3_AIPC_DEBUG": debug}.items():
        monkeypatch.setenv(name, value)
    exit_code(command, capsys)


class Measured(BaseException):  # past the CLI's last line of defence (Exception)
    """Raised by a stand-in for the work itself: the input got past every check."""


BENCH_OPTIONS = {
    "--route": st.sampled_from(["transformers", "openvino", "npu-library", "x"]) | typed,
    "--precision": st.sampled_from(["int4", "fp32", "int3"]) | typed,
    "--device": st.sampled_from(["cpu", "NPU", "GPU"]) | typed,
    "--reps": numbers, "--new-tokens": numbers,
    "--lengths": st.sampled_from(["32,256", "0", "1,,2", "-5", "4096"]) | typed,
    "--json": st.sampled_from(["out.json", "no/such/dir/x.json", ".", ""]) | typed,
    "--csv": st.sampled_from(["out.csv", "/", "a-dir"]) | typed,
    "--model": st.sampled_from(["stand-in", "bench-stand-in:2", "bench-stand-in:x",
                                "nobody/nothing"]) | typed,
}
PREPARE_OPTIONS = {
    "--backend": st.sampled_from(["transformers", "openvino", "onnxruntime-genai",
                                  "npu-library", "llama"]) | typed,
    "--precision": st.sampled_from(["int4", "int8", "fp16", "fp32", "int3"]) | typed,
    "--device": st.sampled_from(["cpu", "NPU", "GPU.1", "dml", "winml"]) | typed,
    "--model": st.sampled_from(["stand-in", "./no/such", "nobody/nothing"]) | typed,
    "--group-size": numbers, "--block-size": numbers, "--ratio": numbers,
}


def argv_of(command, options):
    argv = list(command)
    for key, value in options.items():
        argv += [key, str(value) if not isinstance(value, float) or math.isfinite(value)
                 else str(value)]
    return argv


QUALITY_OPTIONS = {**PREPARE_OPTIONS, "--tokens": numbers, "--window": numbers}


@settings(max_examples=slow(30))
@given(which=st.sampled_from(["bench", "prepare", "quality", "cache", "doctor"]),
       data=st.data())
def test_every_command_refuses_bad_input_in_one_line(stand_in, tmp_path_factory, monkeypatch,
                                                     capsys, which, data):
    """bench, prepare, quality, cache and doctor with generated options: a refusal in one line
    (exit 2)
    or the work itself, which a stand-in replaces here (that is not what is tested: the
    checks before it are)."""
    import huggingface_hub.constants

    from phi3_aipc import bench, quality
    from phi3_aipc.backends import REGISTRY, get_route

    work = tmp_path_factory.mktemp("work")
    (work / "a-dir").mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")

    def measured(*args, **kwargs):
        raise Measured
    monkeypatch.setattr(bench, "run", measured)
    monkeypatch.setattr(quality, "reference", measured)
    for name in REGISTRY:
        monkeypatch.setattr(type(get_route(name)), "prepare", measured)
    if which == "cache":
        monkeypatch.setenv("PHI3_AIPC_CACHE", str(work / "cache"))
        argv = data.draw(st.sampled_from([["cache", "list"], ["cache", "clear"],
                                          ["cache", "clear", "--route"], ["cache"]]))
        argv += data.draw(st.lists(typed, max_size=2))
    elif which == "doctor":
        argv = ["doctor", *data.draw(st.lists(st.sampled_from(["--json", "-v"]) | typed,
                                              max_size=2))]
    else:
        table = {"bench": BENCH_OPTIONS, "prepare": PREPARE_OPTIONS,
                 "quality": QUALITY_OPTIONS}[which]
        keys = data.draw(st.lists(st.sampled_from(sorted(table)), unique=True, max_size=4))
        argv = argv_of([which], {k: data.draw(table[k]) for k in keys})
    try:
        exit_code(argv, capsys)
    except Measured:
        pass  # every check passed: the (replaced) work began
