#!/usr/bin/env python3
"""Chat with Phi-3 (or Phi-3.5, Phi-4-mini) through ONNX Runtime GenAI.

    python onnxruntime_genai_chat.py MODEL_DIR [DEVICE] [--json-schema FILE]

MODEL_DIR is an ONNX Runtime GenAI model (`python -m onnxruntime_genai.models.builder -i
microsoft/Phi-3-mini-4k-instruct -o MODEL_DIR -p int4 -e dml`, or Microsoft's prebuilt
`microsoft/Phi-3-mini-4k-instruct-onnx`), DEVICE the execution provider: cpu (the default) or dml
(DirectML: the integrated GPU, with onnxruntime-genai-directml on Windows). Type a message and
press Enter; an empty line or the end of input ends the chat. With --json-schema every reply is
JSON that follows the schema in FILE (constrained decoding with LLGuidance, `set_guidance`).

It needs only onnxruntime-genai: copy it into your own project.
"""
import argparse
import json
import sys

import onnxruntime_genai as og

# Providers whose generator takes more tokens after it has generated ("continuous decoding",
# Generator::AppendTokens in onnxruntime-genai's src/generators.cpp). DirectML is not one: there
# every reply needs a new generator, fed the whole conversation.
CONTINUOUS = {"cpu", "cuda", "webgpu", "openvino"}


def main() -> None:
    parser = argparse.ArgumentParser(description="Chat with an ONNX Runtime GenAI model.")
    parser.add_argument("model_dir", help="a folder with genai_config.json")
    parser.add_argument("device", nargs="?", default="cpu", help="cpu (default) or dml")
    parser.add_argument("--json-schema", metavar="FILE", help="answer in JSON following FILE")
    parser.add_argument("--system", default="You are a helpful AI assistant.",
                        help="the system prompt")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    args = parser.parse_args()
    sys.stdout.reconfigure(encoding="utf-8")  # model text, whatever the console's code page

    guidance = None
    if args.json_schema:
        try:
            with open(args.json_schema, encoding="utf-8") as f:
                schema = json.load(f)
        except (OSError, ValueError) as err:
            parser.error(f"--json-schema {args.json_schema}: {err}")
        # LLGuidance allows any whitespace between JSON tokens unless told otherwise: compact
        # JSON, so that a model fond of spaces cannot fill the reply with them.
        schema.setdefault("x-guidance", {"whitespace_flexible": False})
        guidance = json.dumps(schema)

    config = og.Config(args.model_dir)
    config.clear_providers()  # the CPU provider is always there
    if args.device != "cpu":
        config.append_provider(args.device)
    model = og.Model(config)
    tokenizer = og.Tokenizer(model)
    continuous = args.device in CONTINUOUS

    stops = set(tokenizer.eos_token_ids)
    messages = [{"role": "system", "content": args.system}]
    generator, last = None, None
    while True:
        try:
            prompt = input("question:\n")
        except EOFError:
            break
        if not prompt:
            break
        messages.append({"role": "user", "content": prompt})
        if continuous and last in stops:
            # The live generator holds the conversation: it takes the stop token that closed
            # the last reply, then only the new turn.
            generator.append_tokens([last])
            new = [messages[-1]]
        else:  # the first turn, DirectML, or a reply cut short: a new generator
            params = og.GeneratorParams(model)
            params.set_search_options(max_length=model_context(args.model_dir), do_sample=False)
            if guidance:
                params.set_guidance("json_schema", guidance)
            generator, new = og.Generator(model, params), messages
        text = tokenizer.apply_chat_template(json.dumps(new), add_generation_prompt=True)
        generator.append_tokens(tokenizer.encode(text))
        stream, reply = tokenizer.create_stream(), []
        while not generator.is_done() and len(reply) < args.max_new_tokens:
            generator.generate_next_token()
            last = int(generator.get_next_tokens()[0])
            if last not in stops:
                reply.append(stream.decode(last))
                print(reply[-1], end="", flush=True)
        messages.append({"role": "assistant", "content": "".join(reply).strip()})
        print("\n----------")


def model_context(model_dir: str) -> int:
    """The longest sequence the model takes (genai_config.json's context_length)."""
    with open(f"{model_dir}/genai_config.json", encoding="utf-8") as f:
        return json.load(f)["model"]["context_length"]


if __name__ == "__main__":
    main()
