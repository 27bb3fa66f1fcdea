"""`phi3-aipc`: the same calls a notebook makes, from a terminal.

Bad input or an unavailable device exits with code 2 and one line on stderr saying what to do;
anything else that goes wrong is a bug in phi3-aipc: exit code 1 and one line saying so.
What it prints is UTF-8, whatever the console's code page (see `utf8_output`).
"""
from __future__ import annotations

import argparse
import codecs
import contextlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from . import bench, catalog, doctor, quality
from .bench.configs import LENGTHS as BENCH_LENGTHS
from .cache import cache_dir, clear_artifacts, folder_size_mb, leftovers, list_artifacts
from .chat import Conversation, build_messages
from .errors import BadInput, Phi3AipcError
from .models import resolve_model
from .processes import tool_log
from .routes import (
    DEFAULT_ROUTE,
    REGISTRY,
    all_routes,
    check_route,
    constraining_routes,
    get_route,
    installed_routes,
    library_caches,
    open_session,
    prepare_artifact,
)
from .routes.plan import PRECISIONS, Option
from .routes.session import GenerationRequest
from .standin import load_chats
from .structured import load_schema

# What `cache clear --route` takes: the routes' artifacts, and notebooks (the exports the
# notebooks made) and quality (the quality command's references).
CACHE_GROUPS = ["stand-in", *REGISTRY, "notebooks", "quality"]

DEBUG_ENV = "PHI3_AIPC_DEBUG"


def main(argv: list[str] | None = None) -> int:
    """Run one command. Exit codes: 0 done, 2 bad input (one line saying what to do), 1 a bug
    in phi3-aipc (one line; PHI3_AIPC_DEBUG=1 shows the traceback), 130 interrupted."""
    with utf8_output():
        return run(argv)


@contextlib.contextmanager
def utf8_output():
    """Within the block, stdout and stderr write UTF-8. On Windows a redirected or piped stdout
    is otherwise the ANSI code page (cp1252), which cannot encode a reply's emoji, CJK or "→":
    the reply would stop midway with UnicodeEncodeError. Characters UTF-8 cannot encode either
    (lone surrogates, from undecodable file names) are replaced, not fatal. Streams that are
    not files (a notebook's) are left alone; the streams are restored afterwards."""
    changed = []
    for stream, errors in ((sys.stdout, "replace"), (sys.stderr, "backslashreplace")):
        try:
            utf8 = codecs.lookup(stream.encoding).name == "utf-8"
            if not (utf8 and stream.errors != "strict"):
                changed.append((stream, stream.encoding, stream.errors))
                stream.reconfigure(encoding="utf-8", errors=errors)
        except (AttributeError, LookupError, TypeError, ValueError, OSError):
            continue  # not a text file (a notebook's stream, a test's capture)
    try:
        yield
    finally:
        for stream, encoding, errors in changed:
            with contextlib.suppress(AttributeError, LookupError, ValueError, OSError):
                stream.reconfigure(encoding=encoding, errors=errors)


def run(argv: list[str] | None) -> int:
    try:
        args = parser().parse_args(argv)
        if args.func in (cmd_generate, cmd_demo, cmd_prepare, cmd_bench, cmd_quality):
            from transformers.utils import logging

            logging.set_verbosity_error()  # our own messages say what matters, once
        return args.func(args)
    except Phi3AipcError as err:
        print(f"phi3-aipc: error: {one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nphi3-aipc: interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader has gone (`phi3-aipc models | head -3`): nothing wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's own recipe
        return 0
    except Exception as err:  # the last line of defence: whatever slipped through is a bug
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        print(f"phi3-aipc: internal error (a bug in phi3-aipc): {type(err).__name__}: "
              f"{one_line(err, 300)} Run again with {DEBUG_ENV}=1 to see the traceback, and "
              "please report it.", file=sys.stderr)
        return 1


def one_line(text: object, limit: int = 2000) -> str:
    """A message on one line (paths and library messages can hold line breaks), cut short."""
    line = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
    return line if len(line) <= limit else line[:limit] + " ..."


class Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line like ours (its usage is one --help away)."""

    def error(self, message: str):
        self.exit(2, f"phi3-aipc: error: {one_line(message)} (see: {self.prog} --help)\n")


def add_option(group, option: Option) -> None:
    """A route's option as a CLI flag; flags stay None unless given (the route's default)."""
    if option.type is bool:
        if option.off:
            both = group.add_mutually_exclusive_group()
            both.add_argument(option.flag, dest=option.name, action="store_const", const=True,
                              help=option.help)
            both.add_argument(option.off, dest=option.name, action="store_const", const=False,
                              help=option.off_help)
        else:
            group.add_argument(option.flag, dest=option.name, action="store_true",
                               default=None, help=option.help)
        return
    group.add_argument(option.flag, dest=option.name, type=option.type, help=option.help,
                       choices=option.choices or None)


def route_args(cmd: argparse.ArgumentParser, stages: tuple[str, ...],
               route_required: bool = False) -> None:
    """--route, --precision, --model, and every route's own options of these stages."""
    if route_required:
        cmd.add_argument("--route", "--backend", dest="route", required=True, metavar="R",
                         help=f"route: {', '.join(REGISTRY)} (--backend is the same)")
    else:
        cmd.add_argument("--route", "--backend", dest="route", default=DEFAULT_ROUTE,
                         metavar="R", help=f"route: {', '.join(REGISTRY)} (default: "
                         f"{DEFAULT_ROUTE}; --backend is the same)")
    cmd.add_argument("--precision", metavar="P",
                     help=f"{', '.join(PRECISIONS)} (default: the route's own)")
    cmd.add_argument("--model", metavar="M", help=f"hub id (known: {catalog.describe()}), "
                     f"local folder, 'stand-in', or 'stand-in:<short name>' (a catalog "
                     f"model's architecture, small: stand-in:phi-4-mini) (default: "
                     f"$PHI3_AIPC_MODEL or "
                     f"{catalog.DEFAULT_MODEL})")
    cmd.add_argument("--device", metavar="D", help="the device it runs on (default: the "
                     "route's own)")
    routes = all_routes()
    owners: dict[Option, list[str]] = {}
    for route in routes:
        for option in route.options:
            if option.stage in stages:
                owners.setdefault(option, []).append(route.name)
    shared = [o for o, names in owners.items() if len(names) > 1]
    if shared:
        names = sorted({n for o in shared for n in owners[o]})
        group = cmd.add_argument_group(f"settings of the {' and '.join(names)} routes")
        for option in shared:
            add_option(group, option)
    for route in routes:
        own = [o for o in route.options if owners.get(o) == [route.name]]
        if own:
            group = cmd.add_argument_group(f"settings of the {route.name} route")
            for option in own:
                add_option(group, option)


def given(args: argparse.Namespace, stage: str) -> dict:
    """The options of the chosen route the user set (None: not given; --asym gives sym=False).
    Options of other routes that were given are passed on too, so that the route refuses
    them by name."""
    names = {o.name for r in all_routes() for o in r.options if o.stage == stage}
    return {n: v for n in sorted(names) if (v := getattr(args, n, None)) is not None}


# Every command: its name ("cache list": an action of a command), its help, the function that
# adds its flags (defined beside the command), and the command itself. Filled by `@command`.
COMMANDS: dict[str, tuple[str, Callable, Callable]] = {}
GROUPS = {"cache": "list or clear prepared models in the phi3-aipc cache"}


def command(name: str, help: str, flags: Callable = lambda cmd: None) -> Callable:
    """Register a `cmd_` function as `phi3-aipc NAME`, with the function that adds its flags."""
    def register(func: Callable) -> Callable:
        COMMANDS[name] = (help, flags, func)
        return func
    return register


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="phi3-aipc", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(required=True, metavar="COMMAND")
    actions: dict[str, argparse._SubParsersAction] = {}
    for name, (help, flags, func) in COMMANDS.items():
        group, _, action = name.partition(" ")
        if action and group not in actions:
            actions[group] = sub.add_parser(group, help=GROUPS[group]).add_subparsers(
                required=True, metavar="ACTION")
        cmd = actions[group].add_parser(action, help=help) if action else \
            sub.add_parser(name, help=help)
        flags(cmd)
        cmd.set_defaults(func=func)
    return p


def json_flag(cmd: argparse.ArgumentParser, help: str = "print the report as JSON") -> None:
    cmd.add_argument("--json", action="store_true", help=help)


@command("doctor", "what this PC has, and a verdict per route", json_flag)
def cmd_doctor(args: argparse.Namespace) -> int:
    report = doctor.doctor()
    print(json.dumps(report, indent=2) if args.json else doctor.format_report(report))
    return 0


@command("models", "the models the suite knows, and their prebuilt builds per route",
         lambda cmd: json_flag(cmd, "print the catalog as JSON"))
def cmd_models(args: argparse.Namespace) -> int:
    rows = [{"id": m.id, "stand_in": f"stand-in:{m.short}", "context_window": m.context_window,
             "parameters_b": m.parameters_b, "layers": m.layers,
             "bf16_gb": round(m.bf16_gb, 2), "export_ram_gb": round(m.export_ram_gb, 1),
             "note": m.note, "checked": list(m.checked), "npu": m.npu_advice(),
             "prebuilt": [p.__dict__ for p in m.prebuilt]}
            for m in catalog.MODELS.values()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        default = "  (default)" if r["id"] == catalog.DEFAULT_MODEL else ""
        print(f"{r['id']}{default}\n  {r['parameters_b']}B parameters, {r['layers']} layers, "
              f"{r['context_window']}-token window; {r['bf16_gb']:.1f} GB in bf16, about "
              f"{r['export_ram_gb']:.0f} GB of memory to export; {r['note']}")
        print(f"  checked here on stand-ins of its architecture ({r['stand_in']}): "
              f"{'; '.join(r['checked'])}")
        for p in r["prebuilt"]:
            where = "/".join(filter(None, [p["repo"], p["subfolder"]]))
            print(f"  prebuilt {p['route']:18} {p['precision']} for {', '.join(p['devices'])}: "
                  f"{where}" + (f" ({p['settings']})" if p["settings"] else ""))
        print(f"  NPU: {r['npu']}")
    return 0


@command("prepare", "convert/quantize a model for a route; prints the artifact folder last",
         lambda cmd: route_args(cmd, ("prepare",)))
def cmd_prepare(args: argparse.Namespace) -> int:
    route = get_route(args.route)
    plan = route.plan(args.precision, args.device, given(args, "prepare"),
                      route.load_options_to_prepare(args.device))
    _, artifact = prepare_artifact(plan, args.model)
    print(artifact)
    return 0


def request_of(args: argparse.Namespace) -> GenerationRequest:
    return GenerationRequest(max_new_tokens=args.max_new_tokens, greedy=args.greedy,
                             ignore_eos=args.ignore_eos, temperature=args.temperature,
                             top_p=args.top_p, seed=args.seed,
                             json_schema=load_schema(args.json_schema) if args.json_schema
                             else None).check()


def generate_flags(cmd: argparse.ArgumentParser) -> None:
    route_args(cmd, ("prepare", "load"))
    cmd.add_argument("--prompt", required=True, metavar="TEXT")
    cmd.add_argument("--system", metavar="TEXT", help="system prompt")
    cmd.add_argument("--max-new-tokens", type=int, default=256, metavar="N")
    cmd.add_argument("--greedy", action="store_true", help="always pick the likeliest token")
    cmd.add_argument("--ignore-eos", action="store_true",
                     help="do not stop at stop tokens: generate exactly N tokens")
    cmd.add_argument("--temperature", type=float, default=0.7)
    cmd.add_argument("--top-p", type=float, default=0.9)
    cmd.add_argument("--seed", type=int, help="seed for sampling")
    cmd.add_argument("--json-schema", metavar="FILE",
                     help="reply in JSON that follows the JSON schema in FILE (constrained "
                     f"decoding; routes and devices: {constraining_routes()})")
    json_flag(cmd, "print one JSON object")


@command("generate", "reply to one prompt", generate_flags)
def cmd_generate(args: argparse.Namespace) -> int:
    build_messages(args.prompt)  # an empty prompt is refused before anything loads
    request = request_of(args)
    if request.json_schema is not None:  # before anything is exported or loaded
        check_route(args.route, args.device)
    conversation = Conversation(args.system, args.max_new_tokens)
    with open_session(args.route, args.precision, args.device, args.model,
                      prepare_options=given(args, "prepare"),
                      load_options=given(args, "load")) as session:
        messages, _ = conversation.ask(session, args.prompt)  # it fits, or a clear refusal
        stream = None if args.json else lambda text: print(text, end="", flush=True)
        if not args.json:
            print(f"[{session.route} | {session.device} | {session.precision} | "
                  f"{session.model}]")
            if session.device_note:
                print(f"[{session.device_note}]")
        result = session.generate(messages, request, streamer=stream)
    if args.json:
        print(result.to_json())
    else:
        print(f"\n\n{metrics_line(result)}")
    return 0


def metrics_line(result) -> str:
    m = result.metrics
    return (f"{result.summary()} | load {m.load_s:.1f} s | "
            f"process peak RSS {m.peak_rss_mb:.0f} MB")


@command("cache list", "what the cache holds, with sizes", json_flag)
def cmd_cache_list(args: argparse.Namespace) -> int:
    entries = list_artifacts(library_caches())
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    print(f"Cache: {cache_dir()}")
    for e in entries:
        options = " ".join(f"{k}={v}" for k, v in e["options"].items()
                           if k not in ("recipe", "contents")) or e["options"].get("contents", "")
        print(f"  {e['route']:18} {e['precision']:5} {e['size_mb']:9.1f} MB  {e['model']}  "
              f"{options}\n  {'':18} {e['path']}")
    total = sum(e["size_mb"] for e in entries)
    print(f"{len(entries)} cached folders, {total:.1f} MB")
    left = leftovers(cache_dir())
    if left:
        print(f"and {len(left)} leftover folders of interrupted builds or removals, "
              f"{sum(folder_size_mb(f) for f in left):.1f} MB (hidden; `phi3-aipc cache clear` "
              "removes them)")
    return 0


@command("cache clear", "remove prepared models (all, or one route's)",
         lambda cmd: cmd.add_argument("--route", "--backend", dest="route", metavar="R",
                                      help=f"only this route's ({', '.join(CACHE_GROUPS)})"))
def cmd_cache_clear(args: argparse.Namespace) -> int:
    if args.route and args.route not in CACHE_GROUPS:
        raise BadInput(f"Unknown route {args.route!r}; routes: {', '.join(CACHE_GROUPS)}.")
    cleared = clear_artifacts(args.route, library_caches())
    for path in cleared.removed:
        print(f"removed {path}")
    print(f"{len(cleared.removed)} cached folders removed"
          + (f" (route {args.route})" if args.route else ""))
    if cleared.leftovers:
        print(f"and {cleared.leftovers} leftover folders of interrupted builds or removals "
              f"({cleared.leftovers_mb:.1f} MB)")
    for line in cleared.refused:  # in use (Windows): the rest is removed, each said in a line
        print(f"phi3-aipc: error: {one_line(line)}", file=sys.stderr)
    return 2 if cleared.refused else 0


def check_output_file(flag: str, path) -> None:
    """Refuse an output file that cannot be written, naming the flag."""
    if not path:
        return
    target = Path(path).expanduser()
    folder = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise BadInput(f"{flag} {path} is a folder; give a file name.")
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise BadInput(f"{flag} {path}: the folder {folder} does not exist or is not writable.")
    if target.exists() and not os.access(target, os.W_OK):
        raise BadInput(f"{flag} {path} is not writable.")


def bench_flags(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--model", metavar="M", help="as for generate; 'bench-stand-in[:LAYERS]' "
                     "has Phi-3-mini's layer shapes with random weights (default 4 layers)")
    cmd.add_argument("--route", "--backend", dest="route", action="append", metavar="R",
                     help="only this route (repeat for more; default: every installed route)")
    cmd.add_argument("--precision", action="append", metavar="P",
                     help="only this precision (repeatable; 'default': each route's own; "
                     "default: every one)")
    cmd.add_argument("--device", action="append", metavar="D", help="only this device "
                     "(repeatable; 'emulated' for an emulated device; default: every one)")
    cmd.add_argument("--reps", type=int, default=3, metavar="N",
                     help="timed runs per prompt length, each on a different prompt, after "
                     "one warm-up (default 3)")
    cmd.add_argument("--new-tokens", type=int, default=64, metavar="N",
                     help="tokens generated per run, end-of-sequence ignored (default 64)")
    cmd.add_argument("--lengths", default=",".join(map(str, BENCH_LENGTHS)), metavar="L,L",
                     help="prompt lengths in tokens (default %(default)s)")
    cmd.add_argument("--json", metavar="FILE", help="write the full report as JSON")
    cmd.add_argument("--csv", metavar="FILE", help="write one row per route and length")


@command("bench", "measure every route this PC can run: load time, time to first token, "
         "tokens/s, memory", bench_flags)
def cmd_bench(args: argparse.Namespace) -> int:
    try:
        lengths = tuple(int(n) for n in args.lengths.split(","))
    except ValueError:
        raise BadInput(f"--lengths takes token counts separated by commas, e.g. 32,256; got "
                       f"{args.lengths!r}.") from None
    if not lengths or min(lengths) < 1:
        raise BadInput(f"--lengths takes positive token counts; got {args.lengths!r}.")
    for flag, path in (("--json", args.json), ("--csv", args.csv)):
        check_output_file(flag, path)  # before minutes of measuring, not after
    configs = bench.available_configs(args.route, args.precision, args.device,
                                      max_prompt_len=max(lengths))
    report = bench.run(configs, args.model, reps=args.reps, new_tokens=args.new_tokens,
                       lengths=lengths,  # asked for by name, the emulated NPU always runs
                       emulate_any_size="emulated" in [d.lower() for d in args.device or []])
    bench.write(report, args.json, args.csv)
    print(bench.summary(report))
    return 0


def quality_flags(cmd: argparse.ArgumentParser) -> None:
    route_args(cmd, ("prepare", "load"), route_required=True)  # not the reference itself
    cmd.add_argument("--tokens", type=int, default=quality.TOKENS, metavar="N",
                     help="positions of the text to read (default %(default)s)")
    cmd.add_argument("--window", type=int, default=quality.WINDOW, metavar="N",
                     help="tokens per window, each read from an empty context (default "
                     "%(default)s)")
    json_flag(cmd, "print one JSON object")


@command("quality", "what a precision costs: next-token agreement with the fp32 reference on a "
         "bundled text (top-1, KL, perplexity)", quality_flags)
def cmd_quality(args: argparse.Namespace) -> int:
    result = quality.measure(args.route, args.precision, args.device, args.model, args.tokens,
                             args.window, progress=not args.json,
                             prepare_options=given(args, "prepare"),
                             load_options=given(args, "load"))
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['model']}: {result['positions']} positions of {result['text']} against "
              f"{result['reference']}")
        print(quality.summary(result))
    return 0


def demo_flags(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--model", metavar="M", help="as for generate")
    cmd.add_argument("--max-new-tokens", type=int, default=64, metavar="N")
    cmd.add_argument("--verbose", action="store_true", help="show the converters' and "
                     "libraries' own output instead of keeping it in a log file")


@command("demo", "run every installed route once on the default model", demo_flags)
def cmd_demo(args: argparse.Namespace) -> int:
    """Every installed route once: a progress line each, then one table. What the converters
    and libraries print goes to a log file (all of it on screen with --verbose)."""
    chat = load_chats()[0]  # the reference material's system prompt and question
    request = GenerationRequest(max_new_tokens=args.max_new_tokens, greedy=True).check()
    source = resolve_model(args.model)
    routes = installed_routes()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log = None if args.verbose else cache_dir() / "logs" / f"demo-{stamp}.log"
    print(f"Model: {source.name} ({source.path})")
    print(f"Prompt: {chat['messages'][-1]['content']!r}; routes installed: "
          f"{', '.join(r.name for r in routes)}")
    if log:
        log.parent.mkdir(parents=True, exist_ok=True)
        print(f"Exports and library messages go to {log} (--verbose shows them here).")
    print()
    rows, notes = [], []
    for i, route in enumerate(routes, 1):
        print(f"[{i}/{len(routes)}] {route.name}: preparing, loading and generating ...",
              end="", flush=True)
        start = time.perf_counter()
        try:
            with tool_log(log), open_session(route.name, model=source) as session:
                result = session.generate(chat["messages"], request)
        except Phi3AipcError as err:  # one route that cannot run here must not hide the others
            print(" skipped")
            notes.append(f"{route.name}: skipped. {err}")
            show_log_tail(log)
            continue
        print(f" done in {time.perf_counter() - start:.1f} s")
        rows.append(result)
        if result.device_note:
            notes.append(f"{route.name}: {result.device_note}")
    print()
    print(demo_table(rows))
    for note in notes:
        print(f"- {note}")
    return 0


def demo_table(results: list) -> str:
    head = ["route", "device", "precision", "reply", "TTFT ms", "tokens/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        m = r.metrics
        reply = " ".join(r.text.split()).replace("|", "/")
        lines.append(f"| {r.route} | {r.device} | {r.precision} | {reply} | "
                     f"{m.ttft_ms:.0f} | {m.tokens_per_s or 0:.1f} |")
    return "\n".join(lines)


def show_log_tail(log: Path | None, lines: int = 30) -> None:
    """After a failed step, what the tools printed last (the log has it all)."""
    if log and log.is_file():
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        if tail:
            print(f"  last lines of {log}:", file=sys.stderr)
            for line in tail:
                print(f"    {line}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
