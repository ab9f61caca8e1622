"""A strict stand-in for Ollama's CLI and HTTP API, for tests and the offline demo (Ollama itself cannot be
installed here). Put `tools/standin-ollama/` on a PATH and it answers as `ollama`.

    ollama create NAME -f Modelfile     parse + check the Modelfile and the GGUF, store the model
    ollama list | show NAME [--modelfile|--template|--system|--parameters|--license] | rm NAME...
    ollama run NAME "text" [--format json|SCHEMA]
    ollama serve                         HTTP on OLLAMA_HOST (loopback only; default 127.0.0.1:11434):
                                         /api/version /api/tags /api/show /api/generate /api/chat
    ollama --version

Stricter than Ollama on purpose: `create` refuses a Modelfile without TEMPLATE or without a `stop` parameter,
a FROM that is not a readable GGUF file, and ADAPTER lines; requests refuse unknown options. What it accepts,
Ollama accepts too. Answers come from llama-cpp-python on the stored GGUF, the prompt rendered from the
Modelfile's TEMPLATE and SYSTEM with distill.gotemplate, `format` turned into a llama.cpp grammar.

State lives in $OLLAMA_STANDIN_HOME (default ~/.ollama-standin): models/<name>.json, blobs/sha256-<hex>
(a copy of the GGUF, like Ollama's blob store, so changing or deleting the source keeps the model working)
and create.log (one JSON line per successful create, so tests can count them). The CLI verbs work on that
directory directly; only `serve` needs a process.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ..errors import DistillError, cli, fail
from ..fileio import JsonlAppender, read_json, sha256_file, write_json
from ..prompting import schema_grammar, with_optional_leading_space
from ..runtime.llamacpp import load_llama
from .gotemplate import Template, TemplateError
from ..export.modelfile import PARAMETER_TYPES, format_modelfile, parse_modelfile, resolve_from

VERSION = "0.12.11-standin"
DEFAULT_HOST = "127.0.0.1:11434"
GGUF_MAGIC = b"GGUF"
# Ollama's defaults for what a Modelfile and the request leave open.
DEFAULT_OPTIONS: dict[str, Any] = {"temperature": 0.8, "top_k": 40, "top_p": 0.9, "min_p": 0.0,
                                   "repeat_penalty": 1.1, "repeat_last_n": 64, "num_ctx": 4096,
                                   "num_predict": -1, "seed": -1, "stop": []}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*(:[A-Za-z0-9._-]+)?$")


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# ---- the model store --------------------------------------------------------------------------------------


def standin_home() -> Path:
    return Path(os.environ.get("OLLAMA_STANDIN_HOME") or Path.home() / ".ollama-standin")


def full_name(name: str) -> str:
    """`router-student` -> `router-student:latest`, as Ollama names models."""
    if not _NAME.match(name):
        fail(name, "invalid model name (letters, digits, . _ - / and one :tag)", "name")
    return name if ":" in name else f"{name}:latest"


class Store:
    def __init__(self, root: Path | None = None):
        self.root = Path(root or standin_home())
        self.models = self.root / "models"
        self.blobs = self.root / "blobs"
        self.create_log = self.root / "create.log"

    def _record_path(self, name: str) -> Path:
        return self.models / (full_name(name).replace("/", "%2F") + ".json")

    def get(self, name: str) -> dict | None:
        path = self._record_path(name)
        return read_json(path) if path.is_file() else None

    def require(self, name: str) -> dict:
        record = self.get(name)
        if record is None:
            raise ApiError(404, f"model '{full_name(name)}' not found")
        return record

    def all(self) -> list[dict]:
        if not self.models.is_dir():
            return []
        records = [read_json(p) for p in sorted(self.models.glob("*.json"))]
        return sorted(records, key=lambda r: r["modified_at"], reverse=True)

    def remove(self, name: str) -> None:
        path = self._record_path(name)
        if not path.is_file():
            fail(full_name(name), "model not found")
        path.unlink()

    def create(self, name: str, modelfile: Path) -> dict:
        """Check everything Ollama would need to serve the model, then store it; nothing stored on error."""
        name = full_name(name)
        doc = parse_modelfile(modelfile)
        check_serveable(doc, modelfile)
        gguf_path = resolve_from(doc, modelfile)
        details = check_gguf(gguf_path, where=f"{modelfile}: FROM")
        gguf_sha = sha256_file(gguf_path)
        blob = self._store_blob(gguf_path, gguf_sha)
        stored = {**doc, "from": str(blob)}
        text = format_modelfile(stored)
        digest = hashlib.sha256(f"{gguf_sha}\n{text}".encode()).hexdigest()
        record = {"name": name, "model": name, "digest": digest, "modelfile": text, "parsed": stored,
                  "gguf_sha256": gguf_sha, "size": blob.stat().st_size, "source": str(Path(modelfile).resolve()),
                  "modified_at": now_iso(), "details": details}
        write_json(self._record_path(name), record)
        with JsonlAppender(self.create_log) as log:
            log.append({"name": name, "digest": digest, "modelfile": str(Path(modelfile).resolve()),
                        "time": record["modified_at"]})
        return record

    def _store_blob(self, source: Path, sha: str) -> Path:
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


def check_gguf(path: Path, where: str) -> dict:
    """Magic bytes, then a full header + tensor-table read with the gguf library; returns Ollama's details."""
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != GGUF_MAGIC:
        fail(where, f"{path} is not a GGUF file (magic {magic!r}, expected {GGUF_MAGIC!r})")
    import gguf  # slow import; only `create` needs it

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as err:  # truncated or corrupt tables surface as assorted errors
        fail(where, f"{path} is not a readable GGUF: {type(err).__name__}: {err}")

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
    return {"format": "gguf", "family": arch, "families": [arch], "parameter_size": _human_count(params),
            "quantization_level": quant, "context_length": field(f"{arch}.context_length")}


def _human_count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---- prompts and generation -----------------------------------------------------------------------------

_CUT = "\x00RESPONSE\x00"


def render_prompt(record: dict, messages: list[dict], template: str | None = None) -> str:
    """The prompt text Ollama would build: Messages for templates that range over them, else one
    System/Prompt/Response rendering per turn with the last one cut where the response would start."""
    parsed = record["parsed"]
    source = template if template is not None else parsed["template"]
    tmpl = Template(source)
    system_default = parsed["system"] or ""
    messages = list(parsed.get("messages", [])) + list(messages)
    if not any(m["role"] == "system" for m in messages) and system_default:
        messages = [{"role": "system", "content": system_default}, *messages]
    if tmpl.references("Messages"):
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        data = {"System": system, "Prompt": "", "Response": "", "Tools": None,
                "Messages": [{"Role": m["role"], "Content": m["content"]} for m in messages]}
        return tmpl.render(data)
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    turns: list[list[str]] = []  # [prompt, response]
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


def grammar_for(fmt: Any):
    """Ollama's `format`: "json" (any JSON value) or a JSON schema; optional leading whitespace allowed,
    because a small model's likeliest first token is often ` {`."""
    if fmt in (None, ""):
        return None
    from llama_cpp import LlamaGrammar
    from llama_cpp.llama_grammar import JSON_GBNF

    if fmt == "json":
        gbnf = JSON_GBNF
    elif isinstance(fmt, dict):
        try:
            gbnf = schema_grammar(fmt)
        except Exception as err:
            raise ApiError(400, f"invalid JSON schema in format: {err}") from None
    else:
        raise ApiError(400, f'invalid format: {json.dumps(fmt)[:80]}; expected "json" or a JSON schema object')
    return LlamaGrammar.from_string(with_optional_leading_space(gbnf), verbose=False)


def merged_options(record: dict, request_options: dict | None) -> dict:
    options = dict(DEFAULT_OPTIONS)
    options.update(record["parsed"]["parameters"])
    for key, value in (request_options or {}).items():
        if key not in PARAMETER_TYPES:
            raise ApiError(400, f"invalid option provided: {key}")
        if key == "stop":
            if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
                raise ApiError(400, "option stop must be a list of strings")
        elif not isinstance(value, (int, float, bool)) or isinstance(value, bool) != (PARAMETER_TYPES[key] is bool):
            raise ApiError(400, f"option {key} must be a {PARAMETER_TYPES[key].__name__}")
        options[key] = value
    return options


class Engine:
    """Loaded llama.cpp models, one at a time (like Ollama on a small board); calls are serialized."""

    def __init__(self):
        self.lock = threading.Lock()
        self._key: tuple | None = None
        self._llm = None

    def _load(self, record: dict, options: dict, logits_all: bool):
        key = (record["digest"], options["num_ctx"], logits_all)
        if key != self._key:
            self._llm = None
            threads = int(options.get("num_thread") or min(4, os.cpu_count() or 1))
            self._llm = load_llama(record["parsed"]["from"], n_ctx=int(options["num_ctx"]), n_threads=threads,
                                   logits_all=logits_all, verbose=False)
            self._key = key
        return self._llm

    def generate(self, record: dict, prompt: str, *, fmt: Any = None, options: dict | None = None,
                 top_logprobs: int | None = None) -> dict:
        """One completion; returns Ollama's response fields (text, done_reason, counts, durations, logprobs)."""
        opts = merged_options(record, options)
        grammar = grammar_for(fmt)
        with self.lock:
            started = time.perf_counter_ns()
            llm = self._load(record, opts, logits_all=top_logprobs is not None)
            loaded = time.perf_counter_ns()
            tokens = llm.tokenize(prompt.encode(), add_bos=llm._model.add_bos_token(), special=True)
            if len(tokens) >= llm.n_ctx():
                raise ApiError(400, f"prompt is {len(tokens)} tokens; num_ctx is {llm.n_ctx()}")
            predict = int(opts["num_predict"])
            result = llm.create_completion(
                tokens, max_tokens=predict if predict > 0 else None, temperature=float(opts["temperature"]),
                top_k=int(opts["top_k"]), top_p=float(opts["top_p"]), min_p=float(opts["min_p"]),
                repeat_penalty=float(opts["repeat_penalty"]), stop=list(opts["stop"]) or None,
                seed=None if int(opts["seed"]) < 0 else int(opts["seed"]), grammar=grammar,
                logprobs=top_logprobs,
            )
            finished = time.perf_counter_ns()
        choice = result["choices"][0]
        usage = result["usage"]
        out = {"text": choice["text"], "done_reason": "length" if choice["finish_reason"] == "length" else "stop",
               "total_duration": finished - started, "load_duration": loaded - started,
               "prompt_eval_count": usage["prompt_tokens"], "eval_count": usage["completion_tokens"],
               "eval_duration": finished - loaded}
        if top_logprobs is not None:
            out["logprobs"] = _ollama_logprobs(choice.get("logprobs"))
        return out


def _ollama_logprobs(lp: dict | None) -> list[dict]:
    """llama-cpp-python's OpenAI-completion logprobs -> Ollama's [{token, logprob, bytes, top_logprobs}]."""
    if not lp:
        return []
    entries = []
    for token, logprob, tops in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"] or []):
        entries.append({"token": token, "logprob": float(logprob), "bytes": list(token.encode()),
                        "top_logprobs": [{"token": t, "logprob": float(v), "bytes": list(t.encode())}
                                         for t, v in sorted((tops or {}).items(), key=lambda kv: -kv[1])]})
    return entries


# ---- HTTP API -------------------------------------------------------------------------------------------


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


class _Handler(BaseHTTPRequestHandler):
    server_version = "ollama-standin"
    store: Store
    engine: Engine

    def log_message(self, fmt, *args):  # one short line per request on stderr
        sys.stderr.write(f"[standin-ollama] {self.address_string()} {fmt % args}\n")

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError as err:
            raise ApiError(400, f"invalid JSON body: {err.msg}") from None
        if not isinstance(body, dict):
            raise ApiError(400, "body must be a JSON object")
        return body

    def _dispatch(self, routes: dict) -> None:
        handler = routes.get(self.path.split("?")[0])
        if handler is None:
            self.send_response(404)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"404 page not found")
            return
        try:
            handler(self)
        except ApiError as err:
            self._send(err.status, {"error": str(err)})
        except DistillError as err:
            self._send(400, {"error": str(err)})
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self):
        self._dispatch({"/": lambda h: h._plain("Ollama is running"), "/api/version": _api_version,
                        "/api/tags": _api_tags})

    def do_HEAD(self):
        self.send_response(200)
        self.end_headers()

    def do_POST(self):
        self._dispatch({"/api/show": _api_show, "/api/generate": _api_generate, "/api/chat": _api_chat})

    def _plain(self, text: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.end_headers()
        self.wfile.write(text.encode())


def _api_version(h: _Handler) -> None:
    h._send(200, {"version": VERSION.split("-")[0]})


def _tag(record: dict) -> dict:
    return {"name": record["name"], "model": record["model"], "modified_at": record["modified_at"],
            "size": record["size"], "digest": record["digest"], "details": _public_details(record)}


def _public_details(record: dict) -> dict:
    return {k: v for k, v in record["details"].items() if k != "context_length"} | {"parent_model": ""}


def _api_tags(h: _Handler) -> None:
    h._send(200, {"models": [_tag(r) for r in h.store.all()]})


def _model_of(body: dict) -> str:
    name = body.get("model") or body.get("name")
    if not isinstance(name, str) or not name:
        raise ApiError(400, "model is required")
    return name


def _api_show(h: _Handler) -> None:
    record = h.store.require(_model_of(h._body()))
    h._send(200, show_payload(record))


def show_payload(record: dict) -> dict:
    parsed = record["parsed"]
    return {"modelfile": record["modelfile"], "parameters": parameters_text(parsed),
            "template": parsed["template"], "system": parsed["system"] or "", "license": "\n".join(parsed["license"]),
            "details": _public_details(record), "modified_at": record["modified_at"],
            "model_info": {"general.architecture": record["details"]["family"],
                           f"{record['details']['family']}.context_length": record["details"]["context_length"]}}


def parameters_text(parsed: dict) -> str:
    lines = []
    for name, value in parsed["parameters"].items():
        for item in value if isinstance(value, list) else [value]:
            lines.append(f"{name:<30} {json.dumps(item) if isinstance(item, str) else item}")
    return "\n".join(lines)


def _common(h: _Handler, body: dict) -> tuple[dict, dict]:
    record = h.store.require(_model_of(body))
    top = None
    if body.get("logprobs"):
        top = int(body.get("top_logprobs") or 0)
        if not 0 <= top <= 20:
            raise ApiError(400, "top_logprobs must be between 0 and 20")
        top = max(top, 1)  # llama-cpp-python reports per-token logprobs only with at least one top entry
    return record, {"fmt": body.get("format"), "options": body.get("options"), "top_logprobs": top}


def _finish(h: _Handler, body: dict, record: dict, result: dict, payload: dict) -> None:
    reply = {"model": record["name"], "created_at": now_iso(), **payload, "done": True,
             "done_reason": result["done_reason"]}
    reply.update({k: result[k] for k in ("total_duration", "load_duration", "prompt_eval_count", "eval_count",
                                         "eval_duration")})
    if "logprobs" in result:
        top = int(body.get("top_logprobs") or 0)
        reply["logprobs"] = [{**e, "top_logprobs": e["top_logprobs"][:top]} for e in result["logprobs"]]
    if body.get("stream", True):
        # Ollama streams NDJSON by default; the stand-in sends the whole answer as one chunk, then `done`.
        first = {"model": record["name"], "created_at": reply["created_at"], **payload, "done": False}
        last = {**reply, **{k: ("" if isinstance(v, str) else {"role": "assistant", "content": ""})
                            for k, v in payload.items()}}
        data = (json.dumps(first, ensure_ascii=False) + "\n" + json.dumps(last, ensure_ascii=False) + "\n").encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/x-ndjson")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
    else:
        h._send(200, reply)


def _api_generate(h: _Handler) -> None:
    body = h._body()
    record, kwargs = _common(h, body)
    prompt = body.get("prompt", "")
    if not isinstance(prompt, str):
        raise ApiError(400, "prompt must be a string")
    if not prompt:  # Ollama: an empty prompt only loads the model
        h._send(200, {"model": record["name"], "created_at": now_iso(), "response": "", "done": True,
                      "done_reason": "load"})
        return
    if body.get("raw"):
        text = prompt
    else:
        messages = [{"role": "system", "content": body["system"]}] if body.get("system") else []
        text = _render(record, messages + [{"role": "user", "content": prompt}], body.get("template"))
    result = h.engine.generate(record, text, **kwargs)
    _finish(h, body, record, result, {"response": result["text"]})


def _api_chat(h: _Handler) -> None:
    body = h._body()
    record, kwargs = _common(h, body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and m.get("role") in ("system", "user", "assistant") and isinstance(m.get("content"), str)
        for m in messages
    ):
        raise ApiError(400, "messages must be a list of {role: system|user|assistant, content: string}")
    text = _render(record, [{"role": m["role"], "content": m["content"]} for m in messages], None)
    result = h.engine.generate(record, text, **kwargs)
    _finish(h, body, record, result, {"message": {"role": "assistant", "content": result["text"]}})


def _render(record: dict, messages: list[dict], template: str | None) -> str:
    try:
        return render_prompt(record, messages, template)
    except TemplateError as err:
        raise ApiError(400, f"template: {err}") from None


def serve(store: Store, host: str, port: int) -> ThreadingHTTPServer:
    handler = type("Handler", (_Handler,), {"store": store, "engine": Engine()})
    return ThreadingHTTPServer((host, port), handler)


# ---- CLI ------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ollama", description="Stand-in for the Ollama CLI (tests, demo).")
    parser.add_argument("-v", "--version", action="store_true", help="show the version")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="serve the HTTP API on OLLAMA_HOST (loopback)")
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
        print(f"ollama version is {VERSION}")
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
        host, port = parse_host(os.environ.get("OLLAMA_HOST"))
        server = serve(store, host, port)
        print(f"standin-ollama {VERSION} listening on {host}:{port}, models in {store.root}", file=sys.stderr,
              flush=True)
        try:
            server.serve_forever()
        finally:
            server.server_close()
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
        print(record["modelfile"], end="")
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
        result = Engine().generate(record, text, fmt=fmt)
    except (ApiError, TemplateError) as err:
        fail(record["name"], str(err))
    print(result["text"])


if __name__ == "__main__":
    sys.exit(main())
