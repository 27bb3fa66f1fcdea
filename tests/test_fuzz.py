"""Fuzzing with Hypothesis: nothing from outside crashes phi3_aipc.

Whatever a user types (command-line options, sampling settings, chats, environment variables)
or a folder holds (a manifest, config.json, tokenizer.json), the answer is a result or one clear
error (BadInput and its kin: exit code 2 and exactly one line on stderr), never an internal error
(exit code 1) or a traceback. The crashes these found are fixed, and their examples are kept in
tests/test_cli_errors.py and test_chat.py.

Profiles (HYPOTHESIS_PROFILE):
- "ci", the default (`make test`): derandomized, so every run tries the same examples (a
  failure repeats by itself, and the run costs the same each time); 40 examples per test, and
  CLI_EXAMPLES (25) per command for the tests that run a command in-process. Hypothesis allows
  no example database with derandomize, so CI neither reads nor writes one.
- "fuzz" (`make fuzz`): random, 2,000 examples per test (ten times CI's for the commands);
  failing examples are kept in tests/.hypothesis-db (gitignored) and replayed first by the next
  local fuzz run. Pin what it finds as a test of its own so that CI runs it too.

No example trains or exports a model: every command runs in a cache of its own that already
holds the session's stand-in (hard links to it), or, for `generate`, in the session's cache,
where it may only load the exports made once beforehand (each route's default); any other
export, and the measuring and converting the commands would do, is replaced once the input has
passed every check (that is what is fuzzed). Training the stand-in or making an export in an
example fails the test.
"""
import json
import math
import os
import shutil
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.database import DirectoryBasedExampleDatabase  # noqa: E402

from phi3_aipc.cache import (  # noqa: E402
    MANIFEST,
    cache_dir,
    check_sealed,
    made_in,
    read_manifest,
    seal,
)
from phi3_aipc.chat import check_messages  # noqa: E402
from phi3_aipc.cli import main  # noqa: E402
from phi3_aipc.errors import BadInput, Phi3AipcError  # noqa: E402
from phi3_aipc.files import link_or_copy  # noqa: E402
from phi3_aipc.models import check_phi3_folder  # noqa: E402
from phi3_aipc.routes.session import GenerationRequest  # noqa: E402

from .strategies import json_values, numbers  # noqa: E402

DB = DirectoryBasedExampleDatabase(str(Path(__file__).parent / ".hypothesis-db"))
COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                    HealthCheck.too_slow])
CI_EXAMPLES = 40
CLI_EXAMPLES = 25  # per command in CI: each example runs a command in-process
settings.register_profile("ci", max_examples=CI_EXAMPLES, derandomize=True, database=None,
                          **COMMON)
settings.register_profile("fuzz", max_examples=2000, derandomize=False, database=DB, **COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def slow(ci_examples: int = CLI_EXAMPLES) -> int:
    """Fewer examples for a test that takes a second or more each: CI's, or ten times as many."""
    return ci_examples * (10 if settings().max_examples > CI_EXAMPLES else 1)


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


def json_text(value) -> str:
    """A JSON value as text, NaN included, to compare two values (NaN is not equal to itself)."""
    return json.dumps(value, sort_keys=True)


# A folder's manifest: arbitrary bytes, any JSON value, or None for the one seal() writes.
@given(manifest=st.none() | st.binary(max_size=200)
       | json_values.map(lambda v: json.dumps(v).encode()))
# Garbage that is a JSON object and names the manifest's own keys, so that it gets past the
# first checks: no files listed, and an empty, null or non-text reason.
@example(manifest=b'{"files": {}}')
@example(manifest=b'{"damaged": null}')
@example(manifest=b'{"damaged": ""}')
@example(manifest=b'{"damaged": 5}')
@example(manifest=b'{"files": {"weights.bin": {"size": 16}}}')
def test_any_manifest_is_read_or_called_damaged(tmp_path_factory, manifest):
    """A manifest is read as the JSON object it holds, or as {"damaged": why}; and only the
    manifest seal() wrote for the folder's files passes check_sealed: any other is reported
    damaged with a reason (text), never taken for a sound folder (None) or an empty reason."""
    folder = tmp_path_factory.mktemp("artifact")
    (folder / "weights.bin").write_bytes(b"0" * 16)
    if manifest is None:
        seal(folder)
    else:
        (folder / MANIFEST).write_bytes(manifest)
    written = (folder / MANIFEST).read_text(encoding="utf-8", errors="replace")
    try:
        parsed = json.loads(written)
    except ValueError:
        parsed = None
    made = read_manifest(folder)
    assert isinstance(made, dict), made
    if isinstance(parsed, dict):
        assert json_text(made) == json_text(parsed), (manifest, made)  # read as it is
    else:
        assert list(made) == ["damaged"] and isinstance(made["damaged"], str) \
            and made["damaged"].strip(), (manifest, made)
    problem = check_sealed(folder)
    if manifest is None:
        assert problem is None, problem
    else:
        assert isinstance(problem, str) and problem.strip(), \
            f"the manifest {manifest!r} of a folder holding weights.bin passed as {problem!r}"


def tensor_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape in the folder's *.safetensors files (read by the safetensors
    library, not by phi3_aipc)."""
    from safetensors import safe_open

    shapes = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(f, "np") as weights:
            shapes.update({k: tuple(weights.get_slice(k).get_shape()) for k in weights.keys()})
    return shapes


def not_described(config: dict, shapes: dict[str, tuple[int, ...]]) -> str | None:
    """None if a Phi-3 `config` describes exactly the tensors `shapes` (names and shapes), else
    the first difference. The oracle is transformers itself, not a second copy of the package's
    formulas: Phi3ForCausalLM built from the config on the meta device (no memory), its
    state_dict's names and shapes; a config transformers cannot build describes nothing."""
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    try:
        with torch.device("meta"):
            model = Phi3ForCausalLM(Phi3Config(**config))
    except Exception as err:  # noqa: BLE001 (any refusal of transformers' is the answer)
        return f"transformers cannot build it: {type(err).__name__}: {err}"
    built = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    if config.get("tie_word_embeddings"):  # saved once, as the embedding
        built.pop("lm_head.weight", None)
    for name in sorted(built.keys() | shapes.keys()):
        if built.get(name) != shapes.get(name):
            return f"{name}: transformers builds {built.get(name)}, the weights hold " \
                   f"{shapes.get(name)}"
    return None


@pytest.fixture(scope="module")
def checkpoint(stand_in, tmp_path_factory):
    """The stand-in's files (copies: config.json and tokenizer.json are rewritten in place),
    to be given a fuzzed config.json or tokenizer.json."""
    folder = tmp_path_factory.mktemp("checkpoint")
    for f in stand_in.iterdir():
        if f.is_file():
            shutil.copy(f, folder / f.name)
    assert not_described(json.loads((folder / "config.json").read_text()),
                         tensor_shapes(folder)) is None  # the oracle takes the real one
    return folder


SHAPE_KEYS = ["hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "vocab_size", "num_key_value_heads", "head_dim", "tie_word_embeddings",
              "model_type"]


@given(changes=st.dictionaries(st.sampled_from(SHAPE_KEYS), json_values | st.integers(1, 600),
                               min_size=1, max_size=3),
       tokenizer=st.none() | st.binary(max_size=50))
def test_any_config_is_accepted_only_if_it_describes_the_weights(checkpoint, changes, tokenizer):
    """A config.json is accepted only if it describes the tensors the weight files hold: every
    shape its sizes imply (hidden, intermediate, layers, heads, key/value heads, head width,
    vocabulary, tied embeddings) is the shape stored, by name."""
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
        problem = not_described(config, tensor_shapes(checkpoint))
        assert problem is None, f"accepted {changes}, which does not describe the weights: " \
                                f"{problem}"
    finally:
        (checkpoint / "config.json").write_text(original)
        (checkpoint / "tokenizer.json").write_bytes(original_tokenizer)


# --- the command line ---------------------------------------------------------------------

class Measured(BaseException):  # past the CLI's last line of defence (Exception)
    """Raised by a stand-in for the work itself: the input got past every check."""


class Built(BaseException):
    """Raised instead of training the stand-in (every example's cache already holds it) or
    making an export (only those made beforehand are loaded)."""


def seeded_cache(root: Path, stand_in: Path) -> Path:
    """`root` as a cache that already holds the session's stand-in where the package looks for
    it (<cache>/stand-in/<recipe>): links to its files (`link_or_copy`: a symbolic link leaves
    the shared files' status times alone, where a hard link changed them and made every later
    check of the shared stand-in checksum it again), and its manifest as made here, so that it
    is neither trained nor checked again."""
    folder = root / "stand-in" / stand_in.name
    folder.mkdir(parents=True)  # a new one: never the shared files themselves
    for f in stand_in.iterdir():
        if f.is_file() and f.name != MANIFEST:
            link_or_copy(f, folder / f.name)
    made = {**read_manifest(stand_in), "made_in": made_in(folder)}
    (folder / MANIFEST).write_text(json.dumps(made, indent=2), encoding="utf-8")
    assert check_sealed(folder) is None
    return root


@pytest.fixture
def no_hub(monkeypatch, tmp_path_factory):
    """The model hub unreachable (a closed port) and an empty Hugging Face cache."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE",
                        str(tmp_path_factory.mktemp("hf-cache")))


@pytest.fixture
def nothing_built(monkeypatch):
    """Training the stand-in or making an export fails the test (an export already made is
    found as before); the bench and variant stand-ins (models asked for by name, built in
    seconds) count as the work itself."""
    from phi3_aipc import cache, standin
    from phi3_aipc.routes import base

    def trained(out, *args, **kwargs):
        raise Built(f"an example would train the stand-in in {out}")

    def measured(*args, **kwargs):
        raise Measured

    def found(final, build, adopt=None):
        if not final.is_dir() or check_sealed(final) is not None:
            raise Built(f"an example would export {final}")
        return cache.build_once(final, build, adopt)
    monkeypatch.setattr(standin, "build", trained)
    monkeypatch.setattr(standin, "build_bench", measured)
    monkeypatch.setattr(standin, "build_variant", measured)
    monkeypatch.setattr(base, "build_once", found)  # every route's export goes through it


def exit_code(argv, capsys) -> tuple[int, str]:
    """Run a command in-process: its exit code (0 or 2, checked) and stderr. A refusal (2) is
    exactly one non-empty line, `phi3-aipc: error: ...`."""
    capsys.readouterr()  # what an earlier example left
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit:  # argparse's own refusals, and --help
        code = exit.code
    err = capsys.readouterr().err
    event(f"{argv[0]}: exit {code}")
    assert code in (0, 2), (argv, err)
    assert "Traceback" not in err and "internal error" not in err, (argv, err)
    if code == 2:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("phi3-aipc: error: ") \
            and lines[0].removeprefix("phi3-aipc: error: ").strip(), (argv, err)
    return code, err


OPTIONS = {
    "--temperature": numbers, "--top-p": numbers, "--seed": numbers,
    "--max-new-tokens": numbers, "--route": st.sampled_from(
        ["transformers", "openvino", "onnxruntime-genai", "llama", ""]),  # npu-library: slow
    "--device": st.sampled_from(["cpu", "CPU", "NPU", "GPU.1", "dml", "", "TPU"]),
    "--precision": st.sampled_from(["int4", "int8", "fp16", "fp32", "int3", ""]),
    "--model": st.sampled_from(["stand-in", "", "./no/such", "nobody/nothing", "phi-4-mini"]),
    "--group-size": numbers, "--block-size": numbers, "--prompt": st.text(max_size=30),
}
EXPORTED = ("openvino", "onnxruntime-genai")  # the routes that export


@pytest.fixture(scope="module")
def default_exports(stand_in):
    """Each exporting route's default export of the stand-in, in the session's cache: made once
    here (the suite's own tests use them too), before any example runs."""
    from phi3_aipc.routes import get_route, prepare

    return {prepare(name, model="stand-in", progress=False)
            for name in EXPORTED if get_route(name).is_installed()}


@settings(max_examples=slow())
@given(options=st.dictionaries(st.sampled_from(sorted(OPTIONS)), st.just(None),
                               max_size=5).flatmap(
    lambda keys: st.fixed_dictionaries({k: OPTIONS[k] for k in keys})))
@example(options={"--route": "openvino", "--group-size": 32})  # exports of their own: not made
@example(options={"--route": "onnxruntime-genai", "--block-size": 16})
@example(options={"--route": "openvino"})  # the default exports: loaded, and a reply
@example(options={"--route": "onnxruntime-genai", "--prompt": "Hi"})
def test_the_command_line_never_fails_with_a_bug(default_exports, no_hub, nothing_built,
                                                 capsys, monkeypatch, options):
    """In-process `generate` with fuzzed options, the hub unreachable: the exit code is 0 or 2
    (one line), never 1 (a bug) or a traceback. It runs in the session's cache and loads only
    the exports made beforehand: a request for any other export is stopped there (Measured),
    so no example exports and every run does the same work."""
    from phi3_aipc.routes import REGISTRY, get_route

    for name in REGISTRY:
        route = type(get_route(name))

        def prepare(self, plan, source, real=route.prepare):
            if self.name == "transformers" or self.export_folder(plan, source) in \
                    default_exports:
                return real(self, plan, source)
            raise Measured
        monkeypatch.setattr(route, "prepare", prepare)
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
        exit_code(argv, capsys)
    except Measured:
        event("generate: an export not made here")  # every check passed: it would begin


@pytest.fixture
def measured_work(monkeypatch, no_hub, nothing_built):
    """What the commands do once every input is taken (measure, export, check the PC) raises
    Measured instead."""
    from phi3_aipc import bench, doctor, quality
    from phi3_aipc.routes import REGISTRY, get_route

    def measured(*args, **kwargs):
        raise Measured
    monkeypatch.setattr(bench, "run", measured)
    monkeypatch.setattr(quality, "reference", measured)
    monkeypatch.setattr(doctor, "doctor", measured)
    for name in REGISTRY:
        monkeypatch.setattr(type(get_route(name)), "prepare", measured)


# Text the environment can hold (no NUL, no lone surrogates), and text anyone could type.
env_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                   max_size=24)
typed = env_text | st.binary(max_size=12).map(lambda b: b.decode("latin-1").replace("\x00", ""))

HUB_MODEL = "microsoft/Phi-3-mini-4k-instruct"
# Every variable the package reads, what it is fuzzed with, and the commands that read it (the
# model is not given, so that PHI3_AIPC_MODEL names it).
ENVIRONMENT = {
    "PHI3_AIPC_CACHE": (
        st.sampled_from(["", "~", "a-file", "deep/er/still", "odd ü 'x' $HOME", "tab\tname",
                         " "]) | env_text.filter(lambda t: ".." not in t),
        [["cache", "list"], ["cache", "list", "--json"], ["cache", "clear"], ["prepare"]]),
    "PHI3_AIPC_MODEL": (
        env_text | st.sampled_from(["stand-in", HUB_MODEL, "phi-3.5-mini", "bench-stand-in:2",
                                    "./a-dir", "a-file"]),
        [["prepare"], ["generate", "--prompt", "hi"],
         ["quality", "--route", "transformers", "--tokens", "8"]]),
    "PHI3_AIPC_PREBUILT": (
        env_text | st.sampled_from(["auto", "YES", " no ", "No", "1", "", "true"]),
        [["prepare", "--route", "openvino"], ["prepare", "--route", "onnxruntime-genai"],
         ["generate", "--route", "openvino", "--prompt", "hi"]]),
    "HF_HUB_OFFLINE": (  # read when a hub model is not in the cache (PHI3_AIPC_MODEL is one)
        env_text | st.sampled_from(["1", "true", "YES", "On", "0", "false", "", " 1"]),
        [["prepare"], ["generate", "--prompt", "hi"]]),
    "PHI3_AIPC_DEBUG": (  # read when a command fails with a bug (one is planted)
        env_text | st.sampled_from(["1", "0", ""]),
        [["cache", "list"], ["prepare"], ["generate", "--prompt", "hi"],
         ["quality", "--route", "transformers", "--tokens", "8"]]),
}
PREBUILT_CHOICES = ("auto", "yes", "no")  # phi3_aipc.exports, any case and spacing; "" is auto
HUB_TRUE = {"1", "ON", "YES", "TRUE"}  # what huggingface_hub takes for HF_HUB_OFFLINE=true


@pytest.mark.parametrize("variable", sorted(ENVIRONMENT))
@settings(max_examples=slow())
@given(data=st.data())
def test_any_environment_is_taken_or_refused(stand_in, measured_work, tmp_path_factory,
                                             monkeypatch, capsys, variable, data):
    """Every variable the package reads, generated, for the commands that read it (a spy on
    os.environ.get checks that they do), the others set to usable values: the model "stand-in"
    (a hub model for HF_HUB_OFFLINE), a cache of the test's own holding the stand-in. The cache
    location is relative to a folder of the test's own, which holds a file 'a-file'.
    PHI3_AIPC_PREBUILT and HF_HUB_OFFLINE are checked against what they mean, and
    PHI3_AIPC_DEBUG with a planted bug: exit code 1 and the traceback only when it is set."""
    from phi3_aipc import cli, quality
    from phi3_aipc.routes import REGISTRY, get_route

    values, commands = ENVIRONMENT[variable]
    value = data.draw(values, label=variable)
    argv = data.draw(st.sampled_from(commands), label="command")
    home = tmp_path_factory.mktemp("home")
    (home / "a-file").write_text("not a folder")
    (home / "a-dir").mkdir()
    env = {"PHI3_AIPC_CACHE": "./cache", "PHI3_AIPC_MODEL": "stand-in",
           "PHI3_AIPC_PREBUILT": None, "HF_HUB_OFFLINE": None, "PHI3_AIPC_DEBUG": None}
    if variable == "HF_HUB_OFFLINE":
        env["PHI3_AIPC_MODEL"] = HUB_MODEL
    env[variable] = value
    if variable == "PHI3_AIPC_CACHE" and value.strip():
        env[variable] = f"./{value}"
    with monkeypatch.context() as mp:  # undone after each example
        mp.chdir(home)
        mp.setenv("HOME", str(home))
        mp.delenv("XDG_CACHE_HOME", raising=False)  # "" means the user's cache: under HOME
        for name, setting in env.items():
            if setting is None:
                mp.delenv(name, raising=False)
            else:
                mp.setenv(name, setting)
        try:
            cache = cache_dir()
        except BadInput:
            cache = None  # the command must refuse it too
        else:
            assert cache == home or home in cache.parents, cache  # never the user's own
            seeded_cache(cache, stand_in)
        if variable == "PHI3_AIPC_DEBUG":  # a bug where the work would begin
            def bug(*args, **kwargs):
                raise RuntimeError("a bug planted by the test")

            def listed_then_bug(*args, **kwargs):
                raise RuntimeError(f"a bug planted by the test after {len(real(*args))} rows")
            real = cli.list_artifacts
            mp.setattr(cli, "list_artifacts", listed_then_bug)
            mp.setattr(quality, "reference", bug)
            for name in REGISTRY:
                mp.setattr(type(get_route(name)), "prepare", bug)
        read = set()  # what os.environ.get is asked (not a copy of the whole environment)

        def spied(environ, key, default=None, get=type(os.environ).get):
            if key in ENVIRONMENT:
                read.add(key)
            return get(environ, key, default)
        mp.setattr(type(os.environ), "get", spied)
        capsys.readouterr()
        try:
            code = main(argv)
        except Measured:
            code = None  # every check passed: the work began
        mp.undo()  # the spy first: asserting and pytest read the environment too
        err = capsys.readouterr().err
    event(f"{' '.join(argv[:2])}: " + ("the work began" if code is None else f"exit {code}"))
    assert variable in read, f"{argv} does not read {variable}"
    lines = err.splitlines()
    if variable == "PHI3_AIPC_DEBUG":
        assert code == 1 and lines and lines[-1].startswith("phi3-aipc: internal error"), err
        assert ("Traceback" in err) == bool(value), (value, err)
        assert len(lines) == 1 or value, err
        return
    assert code in (None, 0, 2), (argv, env, err)
    assert "Traceback" not in err and "internal error" not in err, (argv, env, err)
    if code == 2:
        assert len(lines) == 1 and lines[0].startswith("phi3-aipc: error: "), (argv, env, err)
    if cache is None:
        assert code == 2 and "PHI3_AIPC_CACHE" in err, (env, err)
    if variable == "PHI3_AIPC_PREBUILT":
        taken = value.strip().lower() in ("", *PREBUILT_CHOICES)
        assert (code != 2) == taken, (value, err)
        assert taken or variable in err, (value, err)
    if variable == "HF_HUB_OFFLINE":  # the hub model is not in the (empty) cache
        assert code == 2, err
        offline = value.upper() in HUB_TRUE
        assert ("HF_HUB_OFFLINE" in err) == offline and \
            ("Cannot reach the model hub" in err) != offline, (value, err)


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


@pytest.mark.parametrize("which", ["bench", "prepare", "quality", "cache", "doctor"])
@settings(max_examples=slow())
@given(data=st.data())
def test_every_command_refuses_bad_input_in_one_line(stand_in, measured_work, tmp_path_factory,
                                                     monkeypatch, capsys, which, data):
    """bench, prepare, quality, cache and doctor with generated options, each in a cache of its
    own that holds the stand-in: a refusal in one line (exit 2) or the work itself, which a
    stand-in replaces here (that is not what is tested: the checks before it are)."""
    work = tmp_path_factory.mktemp("work")
    (work / "a-dir").mkdir()
    if which == "cache":
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
    with monkeypatch.context() as mp:  # undone after each example
        mp.chdir(work)
        mp.setenv("PHI3_AIPC_CACHE", str(seeded_cache(work / "cache", stand_in)))
        try:
            exit_code(argv, capsys)
        except Measured:
            event(f"{which}: the work began")  # every check passed (it is replaced)
