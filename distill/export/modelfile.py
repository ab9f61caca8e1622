"""Ollama Modelfiles: a strict parser and a formatter that round-trips what the parser returns.

The parsed form is a plain dict, in the order a Modelfile is usually written:

    {"from": "gguf/router-student.gguf",        # required; a path (relative to the Modelfile) or a model name
     "adapters": [],                            # ADAPTER lines
     "template": "{{ if .System }}...",         # TEMPLATE (Go template) or None
     "system": "You route requests...",         # SYSTEM or None
     "parameters": {"temperature": 0.0, "stop": ["<|im_end|>"], "num_ctx": 512},  # typed; stop is a list
     "messages": [{"role": "user", "content": "..."}],                            # MESSAGE lines
     "license": []}                             # LICENSE blocks

`format_modelfile(parse_modelfile_text(text))` parses back to the same dict. Errors name the file and line.

    python -m distill modelfile --student models/router_student_mlx --gguf gguf/router-student.gguf --out ollama/RouterStudent.Modelfile
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

from ..errors import DistillError, cli, fail
from ..fileio import atomic_writer
from ..prompting import chat_messages, render_chat
from ..student import StudentSpec, as_spec

# Ollama 0.12.11's request options (api.Options + api.Runner) and their Go kinds: what a Modelfile's PARAMETER
# and a request's `options` may name (one table for the exporter's parser and the stand-in Ollama). Older names
# (numa, mirostat*, tfs_z, ...) were dropped from Ollama; a Modelfile naming them is refused.
OLLAMA_OPTION_KINDS: dict[str, str] = {
    "num_keep": "integer", "seed": "integer", "num_predict": "integer", "top_k": "integer", "top_p": "float32",
    "min_p": "float32", "typical_p": "float32", "repeat_last_n": "integer", "temperature": "float32",
    "repeat_penalty": "float32", "presence_penalty": "float32", "frequency_penalty": "float32", "stop": "array",
    "num_ctx": "integer", "num_batch": "integer", "num_gpu": "integer", "main_gpu": "integer",
    "use_mmap": "boolean", "num_thread": "integer",
}
_PYTHON_TYPES = {"integer": int, "float32": float, "boolean": bool, "array": str}
# PARAMETER's value type per name (`stop` may repeat, each value a string; the rest appear once).
PARAMETER_TYPES: dict[str, type] = {name: _PYTHON_TYPES[kind] for name, kind in OLLAMA_OPTION_KINDS.items()}
LIST_PARAMETERS = {"stop"}
INSTRUCTIONS = ("FROM", "ADAPTER", "TEMPLATE", "SYSTEM", "PARAMETER", "MESSAGE", "LICENSE")
MESSAGE_ROLES = ("system", "user", "assistant")


def empty_modelfile() -> dict[str, Any]:
    return {"from": None, "adapters": [], "template": None, "system": None, "parameters": {}, "messages": [],
            "license": []}


def parse_modelfile(path: str | Path) -> dict[str, Any]:
    """Parse a Modelfile on disk; raise DistillError naming file and line on anything Ollama would refuse."""
    path = Path(path)
    if not path.is_file():
        fail(path, "Modelfile not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        fail(path, "not UTF-8 text")
    return parse_modelfile_text(text, where=str(path))


def parse_modelfile_text(text: str, where: str = "<Modelfile>") -> dict[str, Any]:
    doc = empty_modelfile()
    for line_no, instruction, value in _statements(text, where):
        at = f"line {line_no}"
        if instruction == "FROM":
            if doc["from"] is not None:
                fail(where, "FROM given twice", at)
            doc["from"] = _non_empty(value, where, at, "FROM")
        elif instruction == "ADAPTER":
            doc["adapters"].append(_non_empty(value, where, at, "ADAPTER"))
        elif instruction in ("TEMPLATE", "SYSTEM"):
            key = instruction.lower()
            if doc[key] is not None:
                fail(where, f"{instruction} given twice", at)
            doc[key] = value
        elif instruction == "PARAMETER":
            _add_parameter(doc["parameters"], value, where, at)
        elif instruction == "MESSAGE":
            role, content = value
            if role not in MESSAGE_ROLES:
                fail(where, f"MESSAGE role must be one of {', '.join(MESSAGE_ROLES)}, got {role!r}", at)
            doc["messages"].append({"role": role, "content": content})
        elif instruction == "LICENSE":
            doc["license"].append(value)
    if doc["from"] is None:
        fail(where, "missing FROM (the GGUF file or base model)", "FROM")
    return doc


def _statements(text: str, where: str):
    """Yield (line number, INSTRUCTION, value) with quotes resolved; triple-quoted values may span lines."""
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line_no, line = i + 1, lines[i]
        i += 1
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        word, _, rest = stripped.partition(" ")
        if "\t" in word:
            word, _, tail = word.partition("\t")
            rest = tail + " " + rest
        instruction = word.upper()
        if instruction not in INSTRUCTIONS:
            fail(where, f"unknown instruction {word!r} (expected one of {', '.join(INSTRUCTIONS)})", f"line {line_no}")
        rest = rest.strip()
        if instruction == "PARAMETER":
            yield line_no, instruction, rest
            continue
        role = None
        if instruction == "MESSAGE":
            role, _, rest = rest.partition(" ")
            rest = rest.strip()
        if rest.startswith('"""'):
            body = rest[3:]
            chunks = []
            while '"""' not in body:
                chunks.append(body)
                if i >= len(lines):
                    fail(where, f'{instruction}: unclosed """', f"line {line_no}")
                body = lines[i]
                i += 1
            inside, _, after = body.partition('"""')
            chunks.append(inside)
            if after.strip():
                fail(where, f'{instruction}: text after closing """', f"line {i}")
            value = "\n".join(chunks)
        else:
            value = _unquote(rest, where, f"line {line_no}")
        yield line_no, instruction, (role, value) if instruction == "MESSAGE" else value


def _unquote(value: str, where: str, at: str) -> str:
    if value.startswith('"""'):
        if not value.endswith('"""') or len(value) < 6:
            fail(where, 'unclosed """', at)
        return value[3:-3]
    if value.startswith('"'):
        if len(value) < 2 or not value.endswith('"'):
            fail(where, f"unclosed quote in {value!r}", at)
        return re.sub(r'\\(["\\])', r"\1", value[1:-1])
    return value


def _non_empty(value: str, where: str, at: str, name: str) -> str:
    if not value.strip():
        fail(where, f"{name} needs a value", at)
    return value


def _add_parameter(params: dict, text: str, where: str, at: str) -> None:
    name, _, raw = text.partition(" ")
    name = name.lower()
    raw = raw.strip()
    if name not in PARAMETER_TYPES:
        fail(where, f"unknown parameter {name!r}", at)
    if not raw:
        fail(where, f"PARAMETER {name} needs a value", at)
    value = _typed(name, _unquote(raw, where, at), where, at)
    if name in LIST_PARAMETERS:
        params.setdefault(name, []).append(value)
    elif name in params:
        fail(where, f"PARAMETER {name} given twice", at)
    else:
        params[name] = value


def _typed(name: str, raw: str, where: str, at: str) -> Any:
    kind = PARAMETER_TYPES[name]
    try:
        if kind is bool:
            if raw.lower() not in ("true", "false"):
                raise ValueError
            return raw.lower() == "true"
        return kind(raw)
    except ValueError:
        fail(where, f"PARAMETER {name}: {raw!r} is not a valid {kind.__name__}", at)


def resolve_from(doc: dict[str, Any], modelfile: str | Path) -> Path:
    """FROM as a path: `~` expanded, relative paths taken from the Modelfile's directory (as Ollama does)."""
    target = Path(doc["from"]).expanduser()
    return target if target.is_absolute() else Path(modelfile).resolve().parent / target


# ---- formatting ------------------------------------------------------------------------------------------


def format_modelfile(doc: dict[str, Any]) -> str:
    """The Modelfile text for a parsed dict; parse_modelfile_text() of the result gives the dict back."""
    if not doc.get("from"):
        fail("<Modelfile>", "missing FROM", "from")
    out = [f"FROM {_quote_line(doc['from'], 'from')}"]
    out += [f"ADAPTER {_quote_line(a, 'adapters')}" for a in doc.get("adapters", [])]
    if doc.get("template") is not None:
        out.append(f"TEMPLATE {_quote_block(doc['template'], 'template')}")
    if doc.get("system") is not None:
        out.append(f"SYSTEM {_quote_block(doc['system'], 'system')}")
    for name, value in doc.get("parameters", {}).items():
        if name not in PARAMETER_TYPES:
            fail("<Modelfile>", f"unknown parameter {name!r}", "parameters")
        for item in value if name in LIST_PARAMETERS else [value]:
            out.append(f"PARAMETER {name} {_format_value(item, name)}")
    for message in doc.get("messages", []):
        out.append(f"MESSAGE {message['role']} {_quote_block(message['content'], 'messages')}")
    out += [f"LICENSE {_quote_block(text, 'license')}" for text in doc.get("license", [])]
    return "\n".join(out) + "\n"


def _format_value(value: Any, name: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # `PARAMETER temperature 0`, as people write it; parses back to 0.0
    if isinstance(value, str):  # always quoted, the way stop strings are written by hand
        if "\n" in value:
            fail("<Modelfile>", "must be one line", f"parameters.{name}")
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


def _quote_line(value: str, field: str) -> str:
    if "\n" in value:
        fail("<Modelfile>", "must be one line", field)
    if value != value.strip() or value.startswith('"') or any(c in value for c in ' "\\'):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def _quote_block(value: str, field: str) -> str:
    if '"""' not in value and not value.endswith('"'):
        return f'"""{value}"""'
    if "\n" not in value:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    fail("<Modelfile>", 'a multi-line value cannot contain """ or end with a quote', field)


# ---- writing a student's Modelfile (distill.export) ----------------------------------------------------
# The TEMPLATE is derived from the student's own HF chat template, so Ollama builds the very prompt the
# student saw in training: render it with sentinel contents, cut at the sentinels, wrap the pieces in Go.

# Private-use characters: no template escapes, trims or case-maps them.
_SENTINEL_SYSTEM = "\ue000SYSTEM\ue001"
_SENTINEL_USER = "\ue000USER\ue001"
DEFAULT_NUM_CTX = 512


def go_template(chat_template: str, *, bos_token: str = "", eos_token: str = "", add_bos: bool = False,
                where: str = "chat_template") -> str:
    """`{{ if .System }}<pre>{{ .System }}<post>{{ end }}{{ if .Prompt }}<pre>{{ .Prompt }}<post>{{ end }}<gen>`.

    A template that starts with the BOS text loses it when the runtime adds BOS itself (add_bos), so the
    token is not doubled.
    """
    S, U = _SENTINEL_SYSTEM, _SENTINEL_USER

    def render(system, user, gen):
        try:
            return render_chat(chat_template, chat_messages(system, user), add_generation_prompt=gen,
                               bos_token=bos_token, eos_token=eos_token)
        except Exception as err:  # jinja errors and raise_exception() in the template
            fail(where, f"the chat template does not render a system + user turn: {err}")

    with_prompt, without = render(S, U, True), render(S, U, False)
    closing = _closing_eos(with_prompt, without, eos_token)
    if closing:  # Phi-3.5: a finished conversation ends in EOS; the prompt for a reply does not
        plain = render

        def render(system, user, gen):
            text = plain(system, user, gen)
            return text[:-len(closing)] if not gen and text.endswith(closing) else text

        without = without[:-len(closing)]
    if not with_prompt.startswith(without) or without.count(S) != 1 or without.count(U) != 1:
        fail(where, "cannot derive a TEMPLATE: the chat template does not place system and user text once each")
    generation = with_prompt[len(without):]
    at_s, at_u = without.index(S), without.index(U)
    if at_u < at_s:
        fail(where, "cannot derive a TEMPLATE: the user turn comes before the system turn")
    pre_system, between, post_user = without[:at_s], without[at_s + len(S):at_u], without[at_u + len(U):]
    post_system, pre_user = _split_between(render, pre_system, between)
    if add_bos and bos_token and pre_system.startswith(bos_token):
        pre_system = pre_system[len(bos_token):]
    pieces = (pre_system, post_system, pre_user, post_user, generation)
    if any("{{" in piece for piece in pieces):
        fail(where, "the rendered chat template contains '{{', which a Go template would read as an action")
    return ("{{ if .System }}" + pre_system + "{{ .System }}" + post_system + "{{ end }}"
            "{{ if .Prompt }}" + pre_user + "{{ .Prompt }}" + post_user + "{{ end }}" + generation)


def _closing_eos(with_prompt: str, without: str, eos_token: str) -> str:
    """EOS that a template appends only when no generation prompt is asked for (`{% else %}{{ eos_token }}`)."""
    if eos_token and without.endswith(eos_token) and not with_prompt.startswith(without) \
            and with_prompt.startswith(without[:-len(eos_token)]):
        return eos_token
    return ""


def _split_between(render, pre_system: str, between: str) -> tuple[str, str]:
    """Text after the system content vs before the user content, from a system-only rendering."""
    try:
        system_only = render(_SENTINEL_SYSTEM, None, False)
    except DistillError:
        return between, ""  # templates that insist on a user turn: all of it belongs to the system block
    head = pre_system + _SENTINEL_SYSTEM
    if system_only.startswith(head) and between.startswith(system_only[len(head):]):
        post_system = system_only[len(head):]
        return post_system, between[len(post_system):]
    return between, ""


def student_modelfile(student: StudentSpec | dict | str | Path, gguf_path: str | Path, out_path: str | Path, *,
                      num_ctx: int = DEFAULT_NUM_CTX, bos_token: str | None = None, eos_token: str | None = None,
                      add_bos: bool | None = None) -> dict:
    """The parsed-form Modelfile for a student: FROM (relative to the Modelfile), TEMPLATE, SYSTEM, parameters."""
    spec = as_spec(student)
    for key in ("chat_template", "system_prompt"):
        if not getattr(spec, key):
            fail(spec.where, "missing (it is written by training)", key)
    gguf_path, out_path = Path(gguf_path), Path(out_path)
    gguf_bos, gguf_eos, gguf_add_bos = _gguf_specials(gguf_path)
    bos_token = gguf_bos if bos_token is None else bos_token
    eos_token = gguf_eos if eos_token is None else eos_token
    add_bos = gguf_add_bos if add_bos is None else add_bos
    doc = empty_modelfile()
    doc["from"] = os.path.relpath(gguf_path.resolve(), out_path.resolve().parent)
    doc["template"] = go_template(spec.chat_template, bos_token=bos_token, eos_token=eos_token, add_bos=add_bos,
                                  where=f"{spec.where}: chat_template")
    doc["system"] = spec.system_prompt
    doc["parameters"] = {"temperature": 0.0, **({"stop": list(spec.stop)} if spec.stop else {}), "num_ctx": int(num_ctx)}
    return doc


def write_modelfile(student: StudentSpec | dict | str | Path, gguf_path: str | Path, out_path: str | Path, **kwargs) -> Path:
    """Write the student's Modelfile (atomically); returns its path."""
    spec = as_spec(student)
    doc = student_modelfile(spec, gguf_path, out_path, **kwargs)
    header = f"# Generated by `python -m distill modelfile` for {spec.name}; do not edit.\n"
    out_path = Path(out_path)
    with atomic_writer(out_path) as handle:
        handle.write(header + format_modelfile(doc))
    return out_path


def _gguf_specials(gguf_path: Path) -> tuple[str, str, bool]:
    """BOS and EOS text and the add_bos flag from the GGUF (the runtime adds BOS by this flag); none when absent."""
    if not gguf_path.is_file():
        return "", "", False
    import gguf

    reader = gguf.GGUFReader(str(gguf_path))
    tokens = reader.fields.get("tokenizer.ggml.tokens")

    def token(key: str) -> str:
        field = reader.fields.get(f"tokenizer.ggml.{key}_token_id")
        if field is None or tokens is None:
            return ""
        return bytes(tokens.parts[tokens.data[int(field.contents())]]).decode("utf-8", "replace")

    add_field = reader.fields.get("tokenizer.ggml.add_bos_token")
    return token("bos"), token("eos"), bool(add_field.contents()) if add_field is not None else False


@cli
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m distill modelfile",
                                     description="Write the Ollama Modelfile of a trained student (from student.json).")
    parser.add_argument("--student", type=Path, required=True, help="student dir (holds student.json)")
    parser.add_argument("--gguf", type=Path, required=True, help="the GGUF the Modelfile's FROM points at")
    parser.add_argument("--out", type=Path, required=True, help="e.g. ollama/RouterStudent.Modelfile")
    parser.add_argument("--num-ctx", type=int, default=DEFAULT_NUM_CTX)
    args = parser.parse_args(argv)
    print(f"{write_modelfile(args.student, args.gguf, args.out, num_ctx=args.num_ctx)}: written")


if __name__ == "__main__":
    main()
