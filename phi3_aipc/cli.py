"""`phi3-aipc`: the same calls a notebook makes, from a terminal.

Bad input or an unavailable device exits with code 2 and one line on stderr saying what to do.
"""
from __future__ import annotations

import argparse
import json
import sys

from .backends import REGISTRY, get_backend, installed_backends, open_session
from .backends.base import PRECISIONS
from .chat import build_messages
from .errors import Phi3AipcError
from .models import resolve_model
from .standin import load_chats


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except Phi3AipcError as err:
        print(f"phi3-aipc: error: {err}", file=sys.stderr)
        return 2


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="phi3-aipc", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    doctor = sub.add_parser("doctor", help="what this PC has, and a verdict per route")
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    doctor.set_defaults(func=cmd_doctor)

    def route_args(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument("--backend", default="transformers", metavar="B",
                         help=f"route: {', '.join(REGISTRY)} (default: transformers)")
        cmd.add_argument("--precision", metavar="P",
                         help=f"{', '.join(PRECISIONS)} (default: the route's own)")
        cmd.add_argument("--model", metavar="M", help="hub id, local folder or 'stand-in' "
                         "(default: $PHI3_AIPC_MODEL or microsoft/Phi-3-mini-4k-instruct)")

    prepare = sub.add_parser("prepare", help="convert/quantize a model for a route; prints "
                             "the artifact folder last")
    route_args(prepare)
    prepare.set_defaults(func=cmd_prepare)

    gen = sub.add_parser("generate", help="reply to one prompt")
    route_args(gen)
    gen.add_argument("--device", metavar="D", help="device (default: the route's own)")
    gen.add_argument("--prompt", required=True, metavar="TEXT")
    gen.add_argument("--system", metavar="TEXT", help="system prompt")
    gen.add_argument("--max-new-tokens", type=int, default=256, metavar="N")
    gen.add_argument("--greedy", action="store_true", help="always pick the likeliest token")
    gen.add_argument("--ignore-eos", action="store_true",
                     help="do not stop at stop tokens: generate exactly N tokens")
    gen.add_argument("--temperature", type=float, default=0.7)
    gen.add_argument("--top-p", type=float, default=0.9)
    gen.add_argument("--seed", type=int, help="seed for sampling")
    gen.add_argument("--json", action="store_true", help="print one JSON object")
    gen.set_defaults(func=cmd_generate)

    demo = sub.add_parser("demo", help="run every installed route once on the default model")
    demo.add_argument("--model", metavar="M", help="as for generate")
    demo.add_argument("--max-new-tokens", type=int, default=64, metavar="N")
    demo.set_defaults(func=cmd_demo)
    return p


def cmd_doctor(args: argparse.Namespace) -> int:
    from .hardware import doctor, format_report

    report = doctor()
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    route = get_backend(args.backend)
    precision, _ = route.check(args.precision, None)
    artifact = route.prepare(resolve_model(args.model), precision)
    print(artifact)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    messages = build_messages(args.prompt, args.system)
    session = open_session(args.backend, args.precision, args.device, args.model)
    stream = None if args.json else lambda text: print(text, end="", flush=True)
    if not args.json:
        print(f"[{session.backend} | {session.device} | {session.precision} | {session.model}]")
        if session.device_note:
            print(f"[{session.device_note}]")
    result = session.generate(messages, max_new_tokens=args.max_new_tokens, greedy=args.greedy,
                              ignore_eos=args.ignore_eos, streamer=stream,
                              temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    if args.json:
        print(result.to_json())
    else:
        print(f"\n\n{metrics_line(result)}")
    return 0


def metrics_line(result) -> str:
    m = result.metrics
    return (f"{result.summary()} | load {m.load_s:.1f} s | peak RSS {m.peak_rss_mb:.0f} MB")


def cmd_demo(args: argparse.Namespace) -> int:
    chat = load_chats()[0]  # the reference material's system prompt and question
    source = resolve_model(args.model)
    routes = installed_backends()
    print(f"Model: {source.name} ({source.path})")
    print(f"Prompt: {chat['messages'][-1]['content']!r}; routes installed: "
          f"{', '.join(r.name for r in routes)}\n")
    for route in routes:
        session = open_session(route.name, model=source)
        result = session.generate(chat["messages"], max_new_tokens=args.max_new_tokens,
                                  greedy=True)
        note = f" ({session.device_note})" if session.device_note else ""
        print(f"== {route.name}: device {result.device}{note}, precision {result.precision}")
        print(result.text)
        print(metrics_line(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
