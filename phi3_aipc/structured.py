"""Replies constrained to a JSON schema: `phi3-aipc generate --json-schema FILE`.

OpenVINO GenAI compiles a JSON schema into a grammar (xgrammar, `StructuredOutputConfig`) and
ONNX Runtime GenAI does so with LLGuidance (`GeneratorParams.set_guidance`); at every step the
library masks the tokens that would leave the grammar. Which route can do that on which device
is the route's own answer (`Route.constrained_devices`; routes/registry.py refuses a route or
device that cannot constrain, before anything is exported or loaded). This module only reads
the schema once, at the door, and turns a library's refusal of a schema into one line: it sits
below the routes and imports none of them.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from .errors import BadInput

FLAG = "--json-schema"
# LLGuidance allows any whitespace between JSON tokens unless told otherwise; a model that likes
# whitespace then pads the reply until max_new_tokens (Phi-4-mini's random stand-in does).
COMPACT = {"whitespace_flexible": False}


def load_schema(path: str | Path) -> str:
    """The JSON schema in the file `path`, as JSON text; BadInput says what is wrong with it."""
    where = f"{FLAG} {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"{where}: there is no such file.") from None
    except IsADirectoryError:
        raise BadInput(f"{where} is a folder; give the JSON file that holds the schema.") from None
    except UnicodeDecodeError:
        raise BadInput(f"{where} is not UTF-8 text; save the schema as UTF-8 JSON.") from None
    except OSError as err:
        raise BadInput(f"{where} cannot be read: {err.strerror or err}.") from None
    except ValueError:  # a path with a NUL character
        raise BadInput(f"{FLAG}: {path!r} is not a usable file name.") from None
    return check_schema(text, where)


def check_schema(text: str, where: str = "The JSON schema") -> str:
    """`text` if it is JSON holding an object (a schema); BadInput otherwise."""
    if not isinstance(text, str):
        raise BadInput(f"{where} must be JSON text; got {type(text).__name__}.")
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as err:
        raise BadInput(f"{where} is not JSON: {err.msg} (line {err.lineno}, column "
                       f"{err.colno}).") from None
    except RecursionError:
        raise BadInput(f"{where} is nested too deeply to read.") from None
    if not isinstance(schema, dict):
        kind = {list: "an array", str: "a string", bool: "true or false", type(None): "null"}
        raise BadInput(f"{where} must hold a JSON schema, an object such as "
                       f'{{"type": "object", "properties": {{...}}}}; it holds '
                       f"{kind.get(type(schema), 'a number')}.")
    return text


def for_llguidance(text: str) -> str:
    """The schema as LLGuidance takes it: compact JSON unless the schema says otherwise."""
    schema = json.loads(text)
    schema.setdefault("x-guidance", COMPACT)
    return json.dumps(schema)


# How the libraries say that a schema cannot be compiled: xgrammar (OpenVINO GenAI) names its
# converter's source file, LLGuidance (ONNX Runtime GenAI) says "Error creating grammar".
GRAMMAR_ERRORS = ("json_schema_converter", "Error creating grammar")


def refused_schema(err: Exception) -> BadInput | None:
    """A library's refusal of the schema as one line, or None for any other error."""
    text = str(err).strip()
    if not any(mark in text for mark in GRAMMAR_ERRORS):
        return None
    line = text.splitlines()[0] if text else ""
    line = re.sub(r"^\[[\d:.]+\] \S+?:\d+: ", "", line)  # xgrammar's time and source line
    line = line.replace("Error creating grammar: ", "")
    return BadInput(f"The JSON schema cannot be compiled into a grammar: {line}")
