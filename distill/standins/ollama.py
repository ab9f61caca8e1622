"""A strict stand-in for Ollama 0.12.11's CLI and HTTP API, for tests and the offline demo (Ollama itself
cannot be installed here). Put `tools/standin-ollama/` on a PATH and it answers as `ollama`.

    ollama create NAME -f Modelfile     parse + check the Modelfile and the GGUF, store the model
    ollama list | show NAME [--modelfile|--template|--system|--parameters|--license] | rm NAME...
    ollama run NAME "text" [--format json|SCHEMA]
    ollama serve                         HTTP on OLLAMA_HOST (loopback only; default 127.0.0.1:11434);
                                         the endpoints are in distill.standins.ollama_http
    ollama --version

Why 0.12.11: it is the first Ollama release whose /api/chat and /api/generate take `logprobs` and
`top_logprobs` (ollama/ollama 59241c5b, absent in v0.12.10), which the router service reads; docs/ollama-standin.md
lists each endpoint, what Ollama does and what the stand-in does.

Stricter than Ollama on purpose: `create` refuses a Modelfile without TEMPLATE or without a `stop` parameter,
a FROM that is not a readable GGUF file, and ADAPTER lines; requests refuse option names Ollama has never had
(a typo Ollama would silently ignore). What it accepts, Ollama accepts too. Answers come from llama-cpp-python on
the stored GGUF, the prompt rendered from the Modelfile's TEMPLATE and SYSTEM with distill.standins.gotemplate,
`format` turned into a llama.cpp grammar.

State lives in $OLLAMA_STANDIN_HOME (default ~/.ollama-standin): models/<name>.json, blobs/sha256-<hex>
(a copy of the GGUF, like Ollama's blob store, so changing or deleting the source keeps the model working)
and create.log (one JSON line per successful create, CLI or API, so tests can count them). The CLI verbs work
on that directory directly; only `serve` needs a process.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from ..errors import cli, fail
from ..export.modelfile import OLLAMA_OPTION_KINDS, format_modelfile, parse_modelfile, resolve_from
from ..fileio import JsonlAppender, read_json, sha256_file, write_json
from .gotemplate import Template, TemplateError

VERSION = "0.12.11"
CLI_VERSION = f"{VERSION}-standin"  # `ollama --version`; the HTTP API says plain 0.12.11, as Ollama does
DEFAULT_HOST = "127.0.0.1:11434"
GGUF_MAGIC = b"GGUF"
DEFAULT_HOSTNAME, DEFAULT_NAMESPACE, DEFAULT_TAG = "registry.ollama.ai", "library", "latest"

# Names the official Python client's `Options` still has but Ollama 0.12.11 dropped: the server logs
# "invalid option provided" and ignores them, so the stand-in ignores them too.
IGNORED_OPTIONS = frozenset({"numa", "low_vram", "f16_kv", "logits_all", "vocab_only", "use_mlock",
                             "embedding_only", "tfs_z", "mirostat", "mirostat_tau", "mirostat_eta",
                             "penalize_newline"})
# Ollama 0.12.11's defaults for what a Modelfile and the request leave open (api.DefaultOptions; num_ctx =
# OLLAMA_CONTEXT_LENGTH, 4096). The option names and kinds: distill.export.modelfile.OLLAMA_OPTION_KINDS.
DEFAULT_OPTIONS: dict[str, Any] = {"temperature": 0.8, "top_k": 40, "top_p": 0.9, "min_p": 0.0, "typical_p": 1.0,
                                   "repeat_penalty": 1.1, "repeat_last_n": 64, "presence_penalty": 0.0,
                                   "frequency_penalty": 0.0, "num_ctx": 4096, "num_predict": -1, "num_keep": 4,
                                   "seed": -1, "stop": []}


class ApiError(Exception):
    """An answer Ollama would give as `{"error": message}` with this HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# ---- model names (Ollama's types/model/name.go rules) ----------------------------------------------------

_FIRST = r"[A-Za-z0-9_]"
_PART_RULES = {"host": re.compile(rf"^{_FIRST}[A-Za-z0-9_.:-]{{0,349}}$"),
               "namespace": re.compile(rf"^{_FIRST}[A-Za-z0-9_-]{{0,79}}$"),
               "model": re.compile(rf"^{_FIRST}[A-Za-z0-9_.-]{{0,79}}$"),
               "tag": re.compile(rf"^{_FIRST}[A-Za-z0-9_.-]{{0,79}}$")}


def parse_name(text: str) -> tuple[str, str, str, str] | None:
    """`[host/][namespace/]model[:tag]` with Ollama's defaults filled in; None when Ollama calls it invalid
    (ParseName + IsValid: each part 1-80 characters, host 350, starting with a letter, digit or `_`)."""
    tag = DEFAULT_TAG
    if text.rfind(":") > text.rfind("/"):
        text, _, tag = text.rpartition(":")
    rest, _, model = text.rpartition("/")
    host, namespace = DEFAULT_HOSTNAME, DEFAULT_NAMESPACE
    if "/" in text:
        rest, _, namespace = rest.rpartition("/") if "/" in rest else ("", "", rest)
        if rest:
            host = rest.split("://", 1)[-1]
    parts = {"host": host, "namespace": namespace, "model": model, "tag": tag}
    if not all(_PART_RULES[kind].match(value) for kind, value in parts.items()):
        return None
    return host, namespace, model, tag


def short_name(parts: tuple[str, str, str, str]) -> str:
    """Ollama's DisplayShortest: `router-student:latest`, `me/router:v2`, `host/ns/model:tag`."""
    host, namespace, model, tag = parts
    if host.lower() != DEFAULT_HOSTNAME:
        return f"{host}/{namespace}/{model}:{tag}"
    if namespace.lower() != DEFAULT_NAMESPACE:
        return f"{namespace}/{model}:{tag}"
    return f"{model}:{tag}"


def long_name(name: str) -> str:
    """`registry.ollama.ai/library/router-student:latest`, the form Ollama's capability errors print."""
    host, namespace, model, tag = parse_name(name) or (DEFAULT_HOSTNAME, DEFAULT_NAMESPACE, name, DEFAULT_TAG)
    return f"{host}/{namespace}/{model}:{tag}"


def full_name(name: str) -> str:
    """`router-student` -> `router-student:latest`, as Ollama names models; DistillError when invalid (CLI)."""
    parts = parse_name(name)
    if parts is None:
        fail(name, "invalid model name (letters, digits, _ . - in [host/][namespace/]model[:tag])", "name")
    return short_name(parts)


# ---- the model store --------------------------------------------------------------------------------------


def standin_home() -> Path:
    return Path(os.environ.get("OLLAMA_STANDIN_HOME") or Path.home() / ".ollama-standin")


class Store:
    def __init__(self, root: Path | None = None):
        self.root = Path(root or standin_home())
        self.models = self.root / "models"
        self.blobs = self.root / "blobs"
        self.create_log = self.root / "create.log"

    def _record_path(self, name: str) -> Path:
        return self.models / (full_name(name).replace("/", "%2F") + ".json")

    def get(self, name: str) -> dict | None:
        """The stored model, matched case-insensitively as Ollama does; None when absent or invalid."""
        if parse_name(name) is None:
            return None
        path = self._record_path(name)
        if path.is_file():
            return read_json(path)
        wanted = path.name.lower()
        for candidate in self.models.glob("*.json") if self.models.is_dir() else []:
            if candidate.name.lower() == wanted:
                return read_json(candidate)
        return None

    def require(self, name: str) -> dict:
        """The model, or the 404 Ollama gives; the message quotes the name as the request wrote it."""
        record = self.get(name)
        if record is None:
            raise ApiError(404, f"model '{name}' not found")
        return record

    def all(self) -> list[dict]:
        if not self.models.is_dir():
            return []
        records = [read_json(p) for p in sorted(self.models.glob("*.json"))]
        return sorted(records, key=lambda r: r["modified_at"], reverse=True)

    def remove(self, name: str) -> None:
        record = self.get(name)
        if record is None:
            fail(full_name(name), "model not found")
        self._record_path(record["name"]).unlink()

    def create(self, name: str, modelfile: Path) -> dict:
        """Check everything Ollama would need to serve the model, then store it; nothing stored on error."""
        doc = parse_modelfile(modelfile)
        check_serveable(doc, modelfile)
        gguf_path = resolve_from(doc, modelfile)
        details, show_info = check_gguf(gguf_path, where=f"{modelfile}: FROM")
        gguf_sha = sha256_file(gguf_path)
        blob = self.store_blob(gguf_path, gguf_sha)
        return self.save(name, {**doc, "from": str(blob)}, gguf_sha, details, show_info,
                         source=Path(modelfile).resolve())

    def save(self, name: str, doc: dict, gguf_sha: str, details: dict, show_info: dict, *, source: Path | str,
             parent_model: str = "") -> dict:
        """Store a model whose Modelfile dict `doc` has FROM = its blob; logs the create. Returns the record.
        `show_info` is check_gguf's {"model_info", "tensors"} of that blob."""
        name = full_name(name)
        text = format_modelfile(doc)
        digest = hashlib.sha256(f"{gguf_sha}\n{text}".encode()).hexdigest()
        record = {"name": name, "model": name, "digest": digest, "modelfile": text, "parsed": doc,
                  "gguf_sha256": gguf_sha, "size": Path(doc["from"]).stat().st_size, "source": str(source),
                  "modified_at": now_iso(), "details": details, "parent_model": parent_model, **show_info}
        write_json(self._record_path(name), record)
        with JsonlAppender(self.create_log) as log:
            log.append({"name": name, "digest": digest, "modelfile": str(source), "time": record["modified_at"]})
        return record

    def copy(self, source: dict, destination: str) -> dict:
        """`ollama cp`: the same model under another name (Ollama copies the manifest: same digest)."""
        name = full_name(destination)
        record = {**source, "name": name, "model": name, "modified_at": now_iso()}
        write_json(self._record_path(name), record)
        return record

    def blob_path(self, digest: str) -> Path:
        """`sha256:<64 hex>` -> blobs/sha256-<hex>; Ollama's 400 `invalid digest format` for anything else."""
        match = re.fullmatch(r"sha256[:-]([0-9a-fA-F]{64})", digest)
        if not match:
            raise ApiError(400, "invalid digest format")
        return self.blobs / f"sha256-{match.group(1).lower()}"

    def store_blob(self, source: Path, sha: str) -> Path:
        blob = self.blobs / f"sha256-{sha}"
        if blob.is_file() and blob.stat().st_size == source.stat().st_size:
            return blob
        self.blobs.mkdir(parents=True, exist_ok=True)
        tmp = blob.with_name(blob.name + f".{os.getpid()}.tmp")
        # a copy, not a hard link: like Ollama's blob store, the model must survive edits to the source file
        shutil.copyfile(source, tmp)
        os.replace(tmp, blob)
        return blob


def check_serveable(doc: dict, modelfile: Path) -> None:
    """The parts of a Modelfile this project relies on: a chat TEMPLATE that parses and a stop string."""
    if doc["adapters"]:
        fail(modelfile, "ADAPTER is not supported by the stand-in (merge the adapter into the GGUF)", "ADAPTER")
    if doc["template"] is None or not doc["template"].strip():
        fail(modelfile, "missing TEMPLATE (the chat template the student was trained with)", "TEMPLATE")
    try:
        Template(doc["template"])
    except TemplateError as err:
        fail(modelfile, f"does not parse: {err}", "TEMPLATE")
    if not doc["parameters"].get("stop"):
        fail(modelfile, 'missing PARAMETER stop (e.g. PARAMETER stop "<|im_end|>")', "PARAMETER stop")
    target = Path(doc["from"]).expanduser()
    if not (target.suffix == ".gguf" or "/" in doc["from"] or target.is_absolute()):
        fail(modelfile, f"{doc['from']!r}: the stand-in takes a GGUF file path, not a registry model", "FROM")
    gguf_path = resolve_from(doc, modelfile)
    if not gguf_path.is_file():
        fail(modelfile, f"file not found: {gguf_path}", "FROM")


def _gguf_reader(path: Path, where: str):
    """Magic bytes, then a full header + tensor-table read with the gguf library."""
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != GGUF_MAGIC:
        fail(where, f"{path} is not a GGUF file (magic {magic!r}, expected {GGUF_MAGIC!r})")
    import gguf  # slow import; only create and show need it

    try:
        return gguf.GGUFReader(str(path))
    except Exception as err:  # truncated or corrupt tables surface as assorted errors
        fail(where, f"{path} is not a readable GGUF: {type(err).__name__}: {err}")


def check_gguf(path: Path, where: str) -> tuple[dict, dict]:
    """A readable GGUF's details as Ollama reports them (format, family, parameter size, quantization), and
    what /api/show reports from the file ({"model_info", "tensors"}), read once here: building the gguf
    library's reader for the 98 MB SmolLM2 file takes 6.5 s on our busy 2-core machine."""
    import gguf

    reader = _gguf_reader(path, where)

    def field(key: str):
        value = reader.fields.get(key)
        return value.contents() if value is not None else None

    arch = field("general.architecture") or "unknown"
    file_type = field("general.file_type")
    try:
        quant = gguf.LlamaFileType(file_type).name.removeprefix("MOSTLY_") if file_type is not None else "unknown"
    except ValueError:
        quant = str(file_type)
    params = sum(int(t.n_elements) for t in reader.tensors)
    model_info, tensors = _show_info(reader, verbose=False)
    details = {"format": "gguf", "family": arch, "families": [arch], "parameter_size": human_number(params),
               "quantization_level": quant, "context_length": field(f"{arch}.context_length")}
    return details, {"model_info": model_info, "tensors": tensors}


@functools.lru_cache(maxsize=4)
def gguf_info(blob: str, verbose: bool = False) -> tuple[dict, list[dict]]:
    """`model_info` and `tensors` of /api/show read from the blob (for `verbose`, and for models stored
    before create kept them)."""
    return _show_info(_gguf_reader(Path(blob), blob), verbose=verbose)


def _show_info(reader, *, verbose: bool) -> tuple[dict, list[dict]]:
    """Every GGUF key but general.name and tokenizer.chat_template, arrays longer than 5 emptied unless
    verbose (Ollama's getModelData), plus general.parameter_count; and each tensor's name, type and shape."""
    import gguf

    info: dict[str, Any] = {}
    for key, value in reader.fields.items():
        if key.startswith("GGUF.") or key in ("general.name", "tokenizer.chat_template"):
            continue
        is_array = bool(value.types) and value.types[0] == gguf.GGUFValueType.ARRAY
        info[key] = [] if is_array and len(value.data) > 5 and not verbose else value.contents()
    info["general.parameter_count"] = sum(int(t.n_elements) for t in reader.tensors)
    tensors = [{"name": t.name, "type": t.tensor_type.name, "shape": [int(n) for n in t.shape]}
               for t in reader.tensors]
    return dict(sorted(info.items())), tensors


def human_number(n: int) -> str:
    """Ollama's format.HumanNumber: `7.6B` (one decimal), `134.52M` (two), `12K`; whole numbers bare."""
    for unit, size, decimals in (("B", 1e9, 1), ("M", 1e6, 2), ("K", 1e3, 0)):
        if n >= size:
            value = n / size
            return f"{value:.0f}{unit}" if value.is_integer() or decimals == 0 else f"{value:.{decimals}f}{unit}"
    return str(n)


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


# ---- prompts, grammars, options -----------------------------------------------------------------------------

_CUT = "\x00RESPONSE\x00"


def chat_messages(record: dict, messages: list[dict]) -> list[dict]:
    """/api/chat's message list: the Modelfile SYSTEM unless the request starts with its own system message,
    then the Modelfile's MESSAGEs, then the request's (Ollama's ChatHandler)."""
    parsed = record["parsed"]
    head = [] if (messages and messages[0]["role"] == "system") or not parsed["system"] else \
        [{"role": "system", "content": parsed["system"]}]
    return head + list(parsed.get("messages", [])) + list(messages)


def generate_messages(record: dict, prompt: str, system: str = "", *, with_model_messages: bool = True) -> list[dict]:
    """/api/generate's message list: the request's system (else the Modelfile's), the Modelfile's MESSAGEs
    (not when the deprecated `context` continues a conversation), then the prompt as the user's turn."""
    parsed = record["parsed"]
    system = system or parsed["system"] or ""
    head = [{"role": "system", "content": system}] if system else []
    middle = list(parsed.get("messages", [])) if with_model_messages else []
    return head + middle + [{"role": "user", "content": prompt}]


def render_prompt(record: dict, messages: list[dict], template: str | None = None) -> str:
    """The prompt Ollama builds for a chat request's `messages` (Modelfile SYSTEM and MESSAGEs added)."""
    return render_messages(record, chat_messages(record, messages), template)


def render_messages(record: dict, messages: list[dict], template: str | None = None) -> str:
    """Render a complete message list: Messages for templates that range over them, else one
    System/Prompt/Response rendering per turn with the last one cut where the response would start."""
    tmpl = Template(template if template is not None else record["parsed"]["template"])
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    if tmpl.references("Messages"):
        data = {"System": system, "Prompt": "", "Response": "", "Tools": None,
                "Messages": [{"Role": m["role"], "Content": m["content"]} for m in messages]}
        return tmpl.render(data)
    turns: list[list[str]] = []  # [prompt, response]; tool messages have no place here, as in Ollama
    for message in messages:
        if message["role"] == "user":
            turns.append([message["content"], ""])
        elif message["role"] == "assistant":
            if not turns or turns[-1][1]:
                turns.append(["", ""])
            turns[-1][1] = message["content"]
    if not turns or turns[-1][1]:
        turns.append(["", ""])
    out = []
    for i, (prompt, response) in enumerate(turns):
        last = i == len(turns) - 1
        data = {"System": system if i == 0 else "", "Prompt": prompt, "Messages": [], "Tools": None,
                "Response": _CUT if last else response}
        text = tmpl.render(data)
        out.append(text.split(_CUT)[0] if last else text)
    return "".join(out)


def format_error(fmt: Any) -> str | None:
    """Ollama's message for a `format` it refuses (llm/server.go: Go's %q of the raw JSON), None if usable."""
    if fmt in (None, "", "json") or isinstance(fmt, dict):
        return None
    return f'invalid format: {json.dumps(json.dumps(fmt))}; expected "json" or a valid JSON Schema object'


def grammar_for(fmt: Any):
    """Ollama's `format` as a llama.cpp grammar: "json" = any JSON object (Ollama's JSON-mode root is an
    object, like llama.cpp's json.gbnf), a dict = that JSON schema. Optional leading whitespace is allowed,
    because a small model's likeliest first token is often ` {` (NOTES.md)."""
    if fmt in (None, ""):
        return None
    from llama_cpp import LlamaGrammar
    from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

    if message := format_error(fmt):
        raise ApiError(500, message)
    if fmt == "json":
        gbnf = JSON_GBNF
    else:
        try:
            gbnf = json_schema_to_gbnf(json.dumps(fmt))
        except Exception:  # Ollama: SchemaToGrammar gave nothing
            raise ApiError(500, "invalid JSON schema in format") from None
    return LlamaGrammar.from_string(_allow_leading_space(gbnf), verbose=False)


def _allow_leading_space(gbnf: str) -> str:
    """Prefix the root rule with optional whitespace. llama-cpp-python's JSON_GBNF aligns its rules
    (`root   ::= object`), so the rule is found by pattern, not by the literal `root ::= `."""
    rule = re.compile(r"^root\s*::=\s*(.*)$")
    lines = gbnf.splitlines()
    for i, line in enumerate(lines):
        match = rule.match(line)
        if match:
            lines[i] = f"root ::= [ \\t\\n]? ({match.group(1)}"
            end = i + 1  # a rule may continue on indented lines; close the group after its last line
            while end < len(lines) and lines[end][:1] in (" ", "\t") and "::=" not in lines[end]:
                end += 1
            lines[end - 1] += ")"
            return "\n".join(lines)
    raise AssertionError("llama.cpp grammar without a root rule")  # our own bug, never the request's


def merged_options(record: dict, request_options: dict | None) -> dict:
    """Defaults <- Modelfile PARAMETERs <- request options, checked as Ollama's Options.FromMap does.

    A wrong type is Ollama's 500 `option "x" must be of type ...`; a name Ollama never had is a 400 here
    (Ollama ignores it with a log line: a typo would silently do nothing)."""
    options = dict(DEFAULT_OPTIONS)
    options.update(record["parsed"]["parameters"])
    if request_options is None:
        return options
    if not isinstance(request_options, dict):
        raise ApiError(400, "json: cannot unmarshal into Go struct field .options of type map[string]interface {}")
    for key, value in request_options.items():
        if key in IGNORED_OPTIONS or value is None:
            continue
        kind = OLLAMA_OPTION_KINDS.get(key)
        if kind is None:
            raise ApiError(400, f"invalid option provided: {key}")
        if not _option_type_ok(kind, value):
            raise ApiError(500, f'option "{key}" must be of type {kind}' if kind != "array"
                           else f'option "{key}" must be of an array of strings')
        options[key] = list(value) if kind == "array" else value
    return options


def _option_type_ok(kind: str, value: Any) -> bool:
    if kind == "boolean":
        return isinstance(value, bool)
    if kind in ("integer", "float32"):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, list) and all(isinstance(s, str) for s in value)


def parameters_text(parsed: dict) -> str:
    """`ollama show --parameters`: one `name value` line per value, padded to 30, values as Go's %#v."""
    lines = []
    for name, value in parsed["parameters"].items():
        for item in value if isinstance(value, list) else [value]:
            lines.append(f"{name:<30} {_go_value(item)}")
    return "\n".join(lines)


def _go_value(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # Go prints float64(0) as 0
    return str(value)


def show_modelfile(record: dict) -> str:
    """The Modelfile as `ollama show --modelfile` prints it: Ollama's header, then the stored Modelfile."""
    return ('# Modelfile generated by "ollama show"\n# To build a new Modelfile based on this, replace FROM with:\n'
            f"# FROM {record['name']}\n\n{record['modelfile']}")


# ---- HTTP address -----------------------------------------------------------------------------------------


def parse_host(value: str | None) -> tuple[str, int]:
    """OLLAMA_HOST forms: `127.0.0.1:11434`, `http://localhost:8080`, `:11434`; loopback only."""
    text = (value or DEFAULT_HOST).strip()
    text = re.sub(r"^https?://", "", text).rstrip("/")
    host, _, port = text.rpartition(":") if ":" in text else (text, "", "11434")
    host = host or "127.0.0.1"
    if host not in ("127.0.0.1", "localhost", "::1", "[::1]"):
        fail("OLLAMA_HOST", f"{host!r}: the stand-in serves on loopback only")
    try:
        return host.strip("[]"), int(port or 11434)
    except ValueError:
        fail("OLLAMA_HOST", f"bad port {port!r}")


# ---- CLI ------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ollama", description="Stand-in for the Ollama CLI (tests, demo).")
    parser.add_argument("-v", "--version", action="store_true", help="show the version")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="serve the HTTP API on OLLAMA_HOST (loopback); OLLAMA_STANDIN_VRAM sets size_vram")
    create = sub.add_parser("create", help="create a model from a Modelfile")
    create.add_argument("name")
    create.add_argument("-f", "--file", default="Modelfile", help="the Modelfile (default ./Modelfile)")
    show = sub.add_parser("show", help="show a model")
    show.add_argument("name")
    for flag in ("modelfile", "template", "system", "parameters", "license"):
        show.add_argument(f"--{flag}", action="store_true")
    run = sub.add_parser("run", help="answer one prompt")
    run.add_argument("name")
    run.add_argument("prompt", nargs="*")
    run.add_argument("--format", default="", help='"json" or a JSON schema (stand-in extension)')
    run.add_argument("--nowordwrap", action="store_true", help="accepted for compatibility")
    sub.add_parser("list", aliases=["ls"], help="list models")
    rm = sub.add_parser("rm", help="remove models")
    rm.add_argument("names", nargs="+")
    return parser


@cli
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "run" and not any(e.startswith("-") for e in extra):
        args.prompt += extra  # `ollama run NAME --format json "text"`: options before the prompt
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    store = Store()
    if args.version:
        print(f"ollama version is {CLI_VERSION}")
        return 0
    if args.command is None:
        build_parser().print_help()
        return 0
    if args.command == "create":
        record = store.create(args.name, Path(args.file))
        print(f"success: created {record['name']} ({record['digest'][:12]})")
    elif args.command in ("list", "ls"):
        print(f"{'NAME':<32} {'ID':<14} {'SIZE':<10} MODIFIED")
        for r in store.all():
            print(f"{r['name']:<32} {r['digest'][:12]:<14} {r['size'] / 1e6:.0f} MB{'':<4} {r['modified_at']}")
    elif args.command == "show":
        _show(store, args)
    elif args.command == "rm":
        for name in args.names:
            store.remove(name)
            print(f"deleted '{full_name(name)}'")
    elif args.command == "run":
        _run(store, args)
    elif args.command == "serve":
        from .ollama_http import serve_forever

        serve_forever(store, *parse_host(os.environ.get("OLLAMA_HOST")))
    return 0


def _lookup(store: Store, name: str) -> dict:
    try:
        return store.require(name)
    except ApiError as err:
        fail(name, str(err))


def _show(store: Store, args) -> None:
    record = _lookup(store, args.name)
    parsed = record["parsed"]
    if args.modelfile:
        print(show_modelfile(record), end="")
    elif args.template:
        print(parsed["template"])
    elif args.system:
        print(parsed["system"] or "")
    elif args.parameters:
        print(parameters_text(parsed))
    elif args.license:
        print("\n".join(parsed["license"]))
    else:
        d = record["details"]
        print("  Model")
        for key, value in (("architecture", d["family"]), ("parameters", d["parameter_size"]),
                           ("context length", d["context_length"]), ("quantization", d["quantization_level"])):
            print(f"    {key:<20} {value}")
        print("\n  Parameters")
        for line in parameters_text(parsed).splitlines():
            print(f"    {line}")
        if parsed["system"]:
            print("\n  System")
            print(f"    {parsed['system']}")


def _run(store: Store, args) -> None:
    from .ollama_engine import Engine

    record = _lookup(store, args.name)
    prompt = " ".join(args.prompt) if args.prompt else sys.stdin.read()
    fmt: Any = args.format or None
    if fmt and fmt != "json":
        try:
            fmt = json.loads(fmt)
        except json.JSONDecodeError:
            fail("--format", 'expected "json" or a JSON schema')
    try:
        text = render_prompt(record, [{"role": "user", "content": prompt}])
        result = Engine().complete(record, text, fmt=fmt, options=merged_options(record, None))
    except (ApiError, TemplateError) as err:
        fail(record["name"], str(err))
    print(result["text"])


if __name__ == "__main__":
    # Run the package's module, not this __main__ copy: the HTTP side imports distill.standins.ollama, and two
    # copies would make two ApiError classes (a 404 would surface as a 500).
    from distill.standins import ollama as _module

    sys.exit(_module.main())
