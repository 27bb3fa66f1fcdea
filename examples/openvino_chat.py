#!/usr/bin/env python3
"""Chat with Phi-3 (or Phi-3.5, Phi-4-mini) through OpenVINO GenAI.

    python openvino_chat.py MODEL_DIR [DEVICE] [--json-schema FILE]

MODEL_DIR is an OpenVINO export (`optimum-cli export openvino --model
microsoft/Phi-3-mini-4k-instruct --task text-generation-with-past --weight-format int4 --sym
--group-size -1 --ratio 1.0 MODEL_DIR`), DEVICE is CPU (the default), GPU or NPU. Type a message
and press Enter; an empty line or the end of input ends the chat. With --json-schema every reply
is JSON that follows the schema in FILE (OpenVINO GenAI's structured output: the schema decides
which tokens the model may pick next).

It needs only openvino-genai: copy it into your own project.
"""
import argparse
import json
import sys

import openvino_genai as ov_genai


def streamer(subword: str) -> ov_genai.StreamingStatus:
    print(subword, end="", flush=True)
    return ov_genai.StreamingStatus.RUNNING


def main() -> None:
    parser = argparse.ArgumentParser(description="Chat with a model exported for OpenVINO.")
    parser.add_argument("model_dir", help="an optimum-cli export openvino folder")
    parser.add_argument("device", nargs="?", default="CPU", help="CPU (default), GPU or NPU")
    parser.add_argument("--json-schema", metavar="FILE", help="answer in JSON following FILE")
    parser.add_argument("--system", default="You are a helpful AI assistant.",
                        help="the system prompt")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    args = parser.parse_args()
    sys.stdout.reconfigure(encoding="utf-8")  # model text, whatever the console's code page

    config = ov_genai.GenerationConfig()
    config.max_new_tokens = args.max_new_tokens
    if args.json_schema:
        try:
            with open(args.json_schema, encoding="utf-8") as f:
                schema = json.load(f)
        except (OSError, ValueError) as err:
            parser.error(f"--json-schema {args.json_schema}: {err}")
        config.structured_output_config = ov_genai.StructuredOutputConfig(
            json_schema=json.dumps(schema))

    pipe = ov_genai.LLMPipeline(args.model_dir, args.device)
    # The whole conversation; the model's own chat template turns it into the prompt.
    history = ov_genai.ChatHistory([{"role": "system", "content": args.system}])
    while True:
        try:
            prompt = input("question:\n")
        except EOFError:
            break
        if not prompt:
            break
        history.append({"role": "user", "content": prompt})
        result = pipe.generate(history, config, streamer)
        history.append({"role": "assistant", "content": result.texts[0]})
        print("\n----------")


if __name__ == "__main__":
    main()
