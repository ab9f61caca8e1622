"""The stand-in Ollama's HTTP API: Ollama 0.12.11's routes, status codes, error shape and JSON fields
(server/routes.go and server/create.go of that tag; docs/ollama-standin.md has the table of each endpoint,
what Ollama does, what the stand-in does and which test covers it).

Routing follows Ollama's router (gin, HandleMethodNotAllowed on): an unknown path is a plain-text
`404 page not found`, a known path with another method a plain-text `405 method not allowed` with an Allow
header, exactly as Ollama answers. Every Ollama route the stand-in does not implement (push, sign-in, the
OpenAI-compatible /v1 routes) answers 501 with Ollama's error shape `{"error": "..."}`. Handler errors are
that shape too, with the status Ollama gives; a request that would crash a handler is a 500 naming the bug.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..errors import DistillError
from .gotemplate import Template, TemplateError
from .ollama import (VERSION, ApiError, Store, check_gguf, chat_messages, format_modelfile, generate_messages,
                     gguf_info, long_name, merged_options, now_iso, parameters_text, parse_name, render_messages,
                     show_modelfile)
from .ollama_engine import Engine, keep_alive_s, public_details
from ..export.modelfile import LIST_PARAMETERS, MESSAGE_ROLES, PARAMETER_TYPES

# Ollama's routes in registration order; gin lists the Allow methods in the order its method trees were made.
ROUTES: tuple[tuple[str, dict[str, str]], ...] = (
    ("/", {"HEAD": "root", "GET": "root"}),
    ("/api/version", {"HEAD": "version", "GET": "version"}),
    ("/api/pull", {"POST": "pull"}),
    ("/api/push", {"POST": "not_implemented"}),
    ("/api/tags", {"HEAD": "tags", "GET": "tags"}),
    ("/api/show", {"POST": "show"}),
    ("/api/delete", {"DELETE": "delete"}),
    ("/api/me", {"POST": "not_implemented"}),
    ("/api/signout", {"POST": "not_implemented"}),
    ("/api/user/keys/{key}", {"DELETE": "not_implemented"}),
    ("/api/create", {"POST": "create"}),
    ("/api/blobs/{digest}", {"POST": "create_blob", "HEAD": "head_blob"}),
    ("/api/copy", {"POST": "copy"}),
    ("/api/ps", {"GET": "ps"}),
    ("/api/generate", {"POST": "generate"}),
    ("/api/chat", {"POST": "chat"}),
    ("/api/embed", {"POST": "embed"}),
    ("/api/embeddings", {"POST": "embeddings"}),
    ("/v1/chat/completions", {"POST": "not_implemented"}),
    ("/v1/completions", {"POST": "not_implemented"}),
    ("/v1/embeddings", {"POST": "not_implemented"}),
    ("/v1/models", {"GET": "not_implemented"}),
    ("/v1/models/{model}", {"GET": "not_implemented"}),
)
METHOD_ORDER = ("HEAD", "GET", "POST", "DELETE")
_COMPILED = [(re.compile("^" + re.sub(r"\{\w+\}", r"(?P<param>[^/]+)", path) + "$"), methods)
             for path, methods in ROUTES]

# Request fields whose JSON type Ollama's Go structs fix, with the Go type its decoder names in errors.
_STRING, _BOOL, _INT = "string", "bool", "int"
_MAP, _LIST = "map[string]interface {}", "[]interface {}"
GENERATE_FIELDS = {"model": _STRING, "prompt": _STRING, "suffix": _STRING, "system": _STRING, "template": _STRING,
                   "context": "[]int", "stream": _BOOL, "raw": _BOOL, "images": "[]api.ImageData", "options": _MAP,
                   "truncate": _BOOL, "shift": _BOOL, "_debug_render_only": _BOOL, "logprobs": _BOOL,
                   "top_logprobs": _INT}
CHAT_FIELDS = {"model": _STRING, "messages": "[]api.Message", "stream": _BOOL, "tools": "api.Tools",
               "options": _MAP, "truncate": _BOOL, "shift": _BOOL, "_debug_render_only": _BOOL, "logprobs": _BOOL,
               "top_logprobs": _INT}
MESSAGE_FIELDS = {"role": _STRING, "content": _STRING, "thinking": _STRING, "images": "[]api.ImageData",
                  "tool_calls": "[]api.ToolCall", "tool_name": _STRING, "tool_call_id": _STRING}
MODEL_FIELDS = {"model": _STRING, "name": _STRING}
SHOW_FIELDS = {**MODEL_FIELDS, "system": _STRING, "template": _STRING, "verbose": _BOOL, "options": _MAP}
PULL_FIELDS = {**MODEL_FIELDS, "insecure": _BOOL, "username": _STRING, "password": _STRING, "stream": _BOOL}
COPY_FIELDS = {"source": _STRING, "destination": _STRING}
CREATE_FIELDS = {**MODEL_FIELDS, "stream": _BOOL, "quantize": _STRING, "from": _STRING, "remote_host": _STRING,
                 "files": "map[string]string", "adapters": "map[string]string", "template": _STRING,
                 "system": _STRING, "parameters": _MAP, "messages": "[]api.Message", "renderer": _STRING,
                 "parser": _STRING, "info": _MAP, "quantization": _STRING}
EMBED_FIELDS = {"model": _STRING, "truncate": _BOOL, "dimensions": _INT, "options": _MAP}
EMBEDDINGS_FIELDS = {"model": _STRING, "prompt": _STRING, "options": _MAP}
_STRUCTS = {id(GENERATE_FIELDS): "GenerateRequest", id(CHAT_FIELDS): "ChatRequest", id(SHOW_FIELDS): "ShowRequest",
            id(PULL_FIELDS): "PullRequest", id(COPY_FIELDS): "CopyRequest", id(CREATE_FIELDS): "CreateRequest",
            id(EMBED_FIELDS): "EmbedRequest", id(EMBEDDINGS_FIELDS): "EmbeddingRequest",
            id(MODEL_FIELDS): "DeleteRequest", id(MESSAGE_FIELDS): "Message"}


# ---- request decoding -------------------------------------------------------------------------------------


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), "null")


def _fits(go_type: str, value: Any) -> bool:
    if value is None:
        return True  # Go leaves the zero value
    if go_type == _STRING:
        return isinstance(value, str)
    if go_type == _BOOL:
        return isinstance(value, bool)
    if go_type == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if go_type == "[]int":
        return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    if go_type in (_MAP, "map[string]string"):
        return isinstance(value, dict) and (go_type == _MAP or all(isinstance(v, str) for v in value.values()))
    return isinstance(value, list)  # the []api.X lists; their items are checked where they are used


def check_fields(body: dict, fields: dict[str, str], struct: str | None = None) -> dict:
    """Go's json.Unmarshal into the request struct: a value of the wrong JSON type is a 400 naming the field."""
    struct = struct or _STRUCTS.get(id(fields), "Request")
    for name, go_type in fields.items():
        value = body.get(name)
        if not _fits(go_type, value):
            kind = _json_kind(value)
            shown = f"number {value}" if kind == "number" else kind
            raise ApiError(400, f"json: cannot unmarshal {shown} into Go struct field {struct}.{name} "
                                f"of type {go_type}")
    return body


def decode_body(raw: bytes, fields: dict[str, str]) -> dict:
    """The request body as gin's ShouldBindJSON sees it: empty -> 400 `missing request body`."""
    if not raw.strip():
        raise ApiError(400, "missing request body")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ApiError(400, f"invalid character in request body: {getattr(err, 'msg', err)}") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"json: cannot unmarshal {_json_kind(body)} into Go value of type api."
                            f"{_STRUCTS.get(id(fields), 'Request')}")
    return check_fields(body, fields)


def _model_name(body: dict) -> str:
    return body.get("model") or body.get("name") or ""


# ---- the handler ------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked NDJSON streams, as Go's server does
    server_version = "ollama-standin"
    sys_version = ""
    store: Store
    engine: Engine

    def log_message(self, fmt, *args):  # one short line per request on stderr
        sys.stderr.write(f"[standin-ollama] {self.address_string()} {fmt % args}\n")

    def __getattr__(self, name: str):
        """Every HTTP method reaches the router (http.server would answer an unknown one with an HTML page)."""
        if name.startswith("do_"):
            return self._route
        raise AttributeError(name)

    def send_error(self, code, message=None, explain=None):
        """Malformed HTTP: a plain-text line as Go's net/http writes, never http.server's HTML page."""
        self.close_connection = True
        self._send_text(code, f"{code} {message or self.responses.get(code, ('',))[0]}")

    # -- sending --

    def _send_bytes(self, status: int, data: bytes, content_type: str | None, headers: dict | None = None) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send_json(self, status: int, body: Any) -> None:
        self._send_bytes(status, json.dumps(body, ensure_ascii=False).encode(), "application/json; charset=utf-8")

    def _send_text(self, status: int, text: str, headers: dict | None = None) -> None:
        self._send_bytes(status, text.encode(), "text/plain; charset=utf-8" if status == 200 else "text/plain",
                         headers)

    def _send_empty(self, status: int = 200) -> None:
        self._send_bytes(status, b"", None)

    def _send_stream(self, objects: Iterator[dict]) -> None:
        """NDJSON, chunked. An error before the first object is a normal JSON error with its status; an error
        after it is one more line `{"error": ...}` (Ollama's streamResponse)."""
        try:
            first = next(objects)
        except StopIteration:
            first = None
        except BaseException:
            objects.close()
            raise
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            if first is not None:
                self._chunk(first)
            for item in objects:
                self._chunk(item)
        except ApiError as err:
            self._chunk({"error": str(err)})
        finally:
            objects.close()  # a client that went away must not keep the model locked
        self.wfile.write(b"0\r\n\r\n")

    def _chunk(self, obj: dict) -> None:
        data = (json.dumps(obj, ensure_ascii=False) + "\n").encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    # -- receiving --

    def _body_chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        """The request body in pieces, from Content-Length or chunked transfer encoding (read once)."""
        if self._body_read:
            return
        self._body_read = True
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while (length := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)) > 0:
                yield self.rfile.read(length)
                self.rfile.readline()
            while self.rfile.readline().strip():  # trailers
                pass
            return
        remaining = int(self.headers.get("Content-Length") or 0)
        while remaining > 0:
            piece = self.rfile.read(min(size, remaining))
            if not piece:
                return
            remaining -= len(piece)
            yield piece

    def _raw_body(self) -> bytes:
        return b"".join(self._body_chunks())

    def body(self, fields: dict[str, str]) -> dict:
        return decode_body(self._raw_body(), fields)

    # -- routing --

    def _route(self) -> None:
        path = self.path.split("?", 1)[0]
        methods, param = _match(path)
        self._body_read = False
        try:
            if methods and self.command in methods:
                getattr(self, "api_" + methods[self.command])(param)
            elif path != "/" and path.endswith("/") and self.command in (_match(path.rstrip("/"))[0] or {}):
                self._send_bytes(301 if self.command == "GET" else 307, b"", None, {"Location": path.rstrip("/")})
            elif methods:
                allowed = ", ".join(m for m in METHOD_ORDER if m in methods)
                self._send_text(405, "405 method not allowed", {"Allow": allowed})
            else:
                self._send_text(404, "404 page not found")
        except ApiError as err:
            self._send_json(err.status, {"error": str(err)})
        except DistillError as err:
            self._send_json(400, {"error": str(err)})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as err:  # a stand-in bug: say so in Ollama's shape instead of dropping the connection
            self._send_json(500, {"error": f"stand-in bug: {type(err).__name__}: {err}"})
            raise
        finally:
            self._drain()

    def _drain(self) -> None:
        """Read what the handler left of the body, so the next request on this connection starts clean."""
        try:
            for _ in self._body_chunks():
                pass
        except (OSError, ValueError):
            self.close_connection = True

    # -- endpoints without a model --

    def api_root(self, _param) -> None:
        self._send_text(200, "Ollama is running")

    def api_version(self, _param) -> None:
        self._send_json(200, {"version": VERSION})

    def api_tags(self, _param) -> None:
        self._send_json(200, {"models": [tag_entry(r) for r in self.store.all()]})

    def api_ps(self, _param) -> None:
        self._send_json(200, {"models": self.engine.running()})

    def api_not_implemented(self, _param) -> None:
        path = self.path.split("?", 1)[0]
        raise ApiError(501, f"the stand-in Ollama does not implement {self.command} {path} (Ollama 0.12.11 does)")

    # -- model management --

    def api_show(self, _param) -> None:
        body = self.body(SHOW_FIELDS)
        name = _model_name(body)
        if not name:
            raise ApiError(400, "model is required")
        if parse_name(name) is None:
            raise ApiError(500, "invalid model path")  # Ollama's GetModelInfo error, unclassified
        record = self.store.require(name)
        self._send_json(200, show_payload(record, system=body.get("system") or "", verbose=bool(body.get("verbose"))))

    def api_delete(self, _param) -> None:
        body = self.body(MODEL_FIELDS)
        name = _model_name(body)
        if parse_name(name) is None:
            raise ApiError(400, f"name {json.dumps(name)} is invalid")
        record = self.store.get(name)
        if record is None:
            raise ApiError(404, f"model '{name}' not found")
        self.store.remove(record["name"])
        self._send_empty(200)

    def api_copy(self, _param) -> None:
        body = self.body(COPY_FIELDS)
        source, destination = body.get("source") or "", body.get("destination") or ""
        if parse_name(source) is None:
            raise ApiError(400, f"source {json.dumps(source)} is invalid")
        if parse_name(destination) is None:
            raise ApiError(400, f"destination {json.dumps(destination)} is invalid")
        record = self.store.get(source)
        if record is None:
            raise ApiError(404, f"model {json.dumps(source)} not found")
        self.store.copy(record, destination)
        self._send_empty(200)

    def api_pull(self, _param) -> None:
        """No registry is reachable: a model the store has pulls as up to date, any other one fails as
        Ollama fails for a name the registry lacks (`pull model manifest: file does not exist`)."""
        body = self.body(PULL_FIELDS)
        name = _model_name(body)
        if parse_name(name) is None:
            raise ApiError(400, "invalid model name")
        record = self.store.get(name)

        def progress() -> Iterator[dict]:
            yield {"status": "pulling manifest"}
            if record is None:
                raise ApiError(500, "pull model manifest: file does not exist")
            yield {"status": f"pulling {record['gguf_sha256'][:12]}", "digest": f"sha256:{record['gguf_sha256']}",
                   "total": record["size"], "completed": record["size"]}
            for status in ("verifying sha256 digest", "writing manifest", "success"):
                yield {"status": status}

        self._progress(progress(), body)

    def _progress(self, events: Iterator[dict], body: dict) -> None:
        """Progress lines streamed, or (stream false) the last one alone (Ollama's waitForStream)."""
        if body.get("stream", True) is not False:
            self._send_stream(events)
            return
        last = {}
        for last in events:
            pass
        self._send_json(200, last)

    def api_create(self, _param) -> None:
        body = self.body(CREATE_FIELDS)
        for path in body.get("files") or {}:
            if not _valid_relative_path(path):
                raise ApiError(400, "file path must be relative")
        name = _model_name(body)
        if parse_name(name) is None:
            raise ApiError(400, "invalid model name")
        self._progress(create_events(self.store, name, body), body)

    def api_head_blob(self, digest: str) -> None:
        path = self.store.blob_path(digest)
        if not path.is_file():
            raise ApiError(404, f"blob {json.dumps(digest)} not found")
        self._send_empty(200)

    def api_create_blob(self, digest: str) -> None:
        """Store the body as a blob (streamed to disk, hashed on the way); 201, 200 if it exists, 400 on a
        digest mismatch (nothing kept)."""
        path = self.store.blob_path(digest)
        if path.is_file():
            for _ in self._body_chunks():  # read it anyway: the connection stays usable
                pass
            self._send_empty(200)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{threading.get_ident()}.partial")
        sha = hashlib.sha256()
        try:
            with tmp.open("wb") as out:
                for piece in self._body_chunks():
                    sha.update(piece)
                    out.write(piece)
            actual = f"sha256:{sha.hexdigest()}"
            if actual != "sha256:" + path.name.removeprefix("sha256-"):
                raise ApiError(400, f"digest mismatch, expected {json.dumps(digest)}, got {json.dumps(actual)}")
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        self._send_empty(201)

    # -- inference --

    def api_generate(self, _param) -> None:
        body = self.body(GENERATE_FIELDS)
        keep_alive = keep_alive_s(body.get("keep_alive"))
        think = _think(body)
        top = _top_logprobs(body)
        name = body.get("model") or ""
        record = self.store.require(name)
        prompt = body.get("prompt") or ""
        if not prompt and keep_alive == 0:
            self.engine.unload(record)
            self._send_json(200, {"model": name, "created_at": now_iso(), "response": "", "done": True,
                                  "done_reason": "unload"})
            return
        if body.get("raw") and (body.get("template") or body.get("system") or body.get("context")):
            raise ApiError(400, "raw mode does not support template, system, or context")
        if isinstance(think, str):
            raise ApiError(400, f'think value "{think}" is not supported for this model')
        if think:
            raise ApiError(400, f'"{name}" does not support thinking')
        if body.get("suffix") and not Template(record["parsed"]["template"]).references("Suffix"):
            raise ApiError(400, f"{long_name(name)} does not support insert")
        options = merged_options(record, body.get("options"))
        if not prompt:
            with self.engine.session(record, options, keep_alive):
                pass
            self._send_json(200, {"model": name, "created_at": now_iso(), "response": "", "done": True,
                                  "done_reason": "load"})
            return
        _refuse_images(body.get("images"))
        text = _generate_prompt(record, body)
        if body.get("_debug_render_only"):
            self._send_json(200, {"model": name, "created_at": now_iso(), "response": "", "done": False,
                                  "_debug_info": {"rendered_template": text}})
            return
        events = self.engine.generate(record, text, options=options, fmt=body.get("format"), keep_alive=keep_alive,
                                      top_logprobs=_engine_top(top), context=body.get("context") or None)
        replies = _replies(events, name, top, lambda piece: {"response": piece},
                           keep_context=not body.get("raw"))
        self._answer(replies, body, join=lambda a, b: {"response": a["response"] + b["response"]})

    def api_chat(self, _param) -> None:
        body = self.body(CHAT_FIELDS)
        keep_alive = keep_alive_s(body.get("keep_alive"))
        think = _think(body)
        top = _top_logprobs(body)
        name = body.get("model") or ""
        if parse_name(name) is None:
            raise ApiError(400, "model is required")
        record = self.store.require(name)
        messages = _chat_messages_of(body)
        if not messages and keep_alive == 0:
            self.engine.unload(record)
            self._send_json(200, {"model": name, "created_at": now_iso(), "message": {"role": "assistant",
                                  "content": ""}, "done": True, "done_reason": "unload"})
            return
        template = Template(record["parsed"]["template"])
        if body.get("tools"):
            if not template.references("Tools"):
                raise ApiError(400, f"{long_name(name)} does not support tools")
            raise ApiError(501, "the stand-in Ollama does not implement tool calling")
        if think:
            raise ApiError(400, f'"{name}" does not support thinking')
        options = merged_options(record, body.get("options"))
        if not messages:
            with self.engine.session(record, options, keep_alive):
                pass
            self._send_json(200, {"model": name, "created_at": now_iso(), "message": {"role": "assistant",
                                  "content": ""}, "done": True, "done_reason": "load"})
            return
        for message in messages:
            _refuse_images(message.get("images"))
        text = _render(lambda: render_messages(record, chat_messages(record, messages)))
        if body.get("_debug_render_only"):
            self._send_json(200, {"model": name, "created_at": now_iso(), "message": {"role": "", "content": ""},
                                  "done": False, "_debug_info": {"rendered_template": text}})
            return
        events = self.engine.generate(record, text, options=options, fmt=body.get("format"), keep_alive=keep_alive,
                                      top_logprobs=_engine_top(top))
        replies = _replies(events, name, top, lambda piece: {"message": {"role": "assistant", "content": piece}},
                           keep_context=False)
        self._answer(replies, body, join=lambda a, b: {"message": {
            "role": "assistant", "content": a["message"]["content"] + b["message"]["content"]}})

    def _answer(self, replies: Iterator[dict], body: dict, join: Callable[[dict, dict], dict]) -> None:
        """Stream the replies (Ollama's default) or gather them into the last one (stream false)."""
        if body.get("stream", True) is not False:
            self._send_stream(replies)
            return
        gathered: dict = {}
        logprobs: list = []
        for reply in replies:
            logprobs += reply.pop("logprobs", [])
            gathered = {**reply, **join(gathered, reply)} if gathered else reply
        if logprobs:
            gathered["logprobs"] = logprobs
        self._send_json(200, gathered)

    def api_embed(self, _param) -> None:
        body = self.body(EMBED_FIELDS)
        keep_alive = keep_alive_s(body.get("keep_alive"))
        texts = _embed_inputs(body.get("input"))
        name = body.get("model") or ""
        record = self.store.get(name)
        if record is None:
            raise ApiError(404, f"model {json.dumps(name)} not found, try pulling it first")
        options = merged_options(record, body.get("options"))
        if not texts:
            with self.engine.session(record, options, keep_alive):
                pass
            self._send_json(200, {"model": name, "embeddings": []})
            return
        started = _now_ns()
        vectors, count, load_ns = self.engine.embed(record, texts, options=options, keep_alive=keep_alive,
                                                    truncate=body.get("truncate") is not False)
        dims = body.get("dimensions") or 0
        vectors = [_normalize(v[:dims] if 0 < dims < len(v) else v) for v in map(_normalize, vectors)]
        self._send_json(200, {"model": name, "embeddings": vectors, "total_duration": _now_ns() - started,
                              "load_duration": load_ns, "prompt_eval_count": count})

    def api_embeddings(self, _param) -> None:
        body = self.body(EMBEDDINGS_FIELDS)
        keep_alive = keep_alive_s(body.get("keep_alive"))
        name = body.get("model") or ""
        if parse_name(name) is None:
            raise ApiError(400, "model is required")
        record = self.store.get(name)
        if record is None:
            raise ApiError(404, f"model {json.dumps(name)} not found, try pulling it first")
        options = merged_options(record, body.get("options"))
        prompt = body.get("prompt") or ""
        if not prompt:
            with self.engine.session(record, options, keep_alive):
                pass
            self._send_json(200, {"embedding": []})
            return
        vectors, _count, _load = self.engine.embed(record, [prompt], options=options, keep_alive=keep_alive)
        self._send_json(200, {"embedding": vectors[0]})


def _match(path: str) -> tuple[dict[str, str] | None, str | None]:
    for pattern, methods in _COMPILED:
        found = pattern.match(path)
        if found:
            return methods, found.groupdict().get("param")
    return None, None


# ---- request pieces ---------------------------------------------------------------------------------------


def _think(body: dict) -> bool | str | None:
    """`think`: a bool or "high"/"medium"/"low" (api.ThinkValue); anything else is Ollama's 400."""
    value = body.get("think")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value not in ("high", "medium", "low"):
            raise ApiError(400, f'invalid think value: "{value}" (must be "high", "medium", "low", true, or false)')
        return value
    raise ApiError(400, 'think must be a boolean or string ("high", "medium", "low", true, or false)')


def _top_logprobs(body: dict) -> int | None:
    """None without `logprobs: true`; else top_logprobs, which Ollama takes in 0..20 only."""
    top = body.get("top_logprobs") or 0
    if not 0 <= top <= 20:
        raise ApiError(400, "top_logprobs must be between 0 and 20")
    return top if body.get("logprobs") else None


def _engine_top(top: int | None) -> int | None:
    """llama-cpp-python reports per-token logprobs only with at least one top entry; Ollama's 0 = none."""
    return None if top is None else max(top, 1)


def _chat_messages_of(body: dict) -> list[dict]:
    messages = []
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            raise ApiError(400, f"json: cannot unmarshal {_json_kind(message)} into Go struct field "
                                "ChatRequest.messages of type api.Message")
        check_fields(message, MESSAGE_FIELDS, "ChatRequest.messages")
        messages.append({**message, "role": (message.get("role") or "").lower(),
                         "content": message.get("content") or ""})
    return messages


def _refuse_images(images: Any) -> None:
    if images:
        raise ApiError(400, "the stand-in Ollama serves text models only: images are not supported")


def _render(render: Callable[[], str]) -> str:
    try:
        return render()
    except TemplateError as err:  # Ollama: a template that fails to execute is a 500
        raise ApiError(500, f"template: {err}") from None


def _generate_prompt(record: dict, body: dict) -> str:
    prompt = body.get("prompt") or ""
    if body.get("raw"):
        return prompt
    template = body.get("template") or None
    if body.get("suffix"):
        data = {"Prompt": prompt, "Suffix": body["suffix"], "Response": "", "System": "", "Messages": [],
                "Tools": None}
        return _render(lambda: Template(template or record["parsed"]["template"]).render(data))
    messages = generate_messages(record, prompt, body.get("system") or "",
                                 with_model_messages=body.get("context") is None)
    return _render(lambda: render_messages(record, messages, template))


def _replies(events: Iterator[dict], name: str, top: int | None, piece_field: Callable[[str], dict], *,
             keep_context: bool) -> Iterator[dict]:
    """Engine events as Ollama's response objects: one per piece (done false), then the final one with
    done_reason and the metrics; logprobs trimmed to top_logprobs (omitted at 0, as Go's omitempty does)."""
    with contextlib.closing(events):
        yield from _reply_objects(events, name, top, piece_field, keep_context=keep_context)


def _reply_objects(events: Iterator[dict], name: str, top: int | None, piece_field: Callable[[str], dict], *,
                   keep_context: bool) -> Iterator[dict]:
    for event in events:
        if not event.get("done"):
            reply = {"model": name, "created_at": now_iso(), **piece_field(event["text"]), "done": False}
            if top is not None:
                reply["logprobs"] = [_trim_logprob(entry, top) for entry in event.get("logprobs", [])]
            yield reply
            continue
        final = {"model": name, "created_at": now_iso(), **piece_field(""), "done": True,
                 "done_reason": event["done_reason"]}
        if keep_context:
            final["context"] = event["context"]
        for key in ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count",
                    "eval_duration"):
            if event[key]:
                final[key] = event[key]
        yield final


def _trim_logprob(entry: dict, top: int) -> dict:
    out = {"token": entry["token"], "logprob": entry["logprob"]}
    if entry["bytes"]:
        out["bytes"] = entry["bytes"]
    if top:
        out["top_logprobs"] = [{k: v for k, v in t.items() if k != "bytes" or v} for t in entry["top_logprobs"][:top]]
    return out


def _embed_inputs(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ApiError(400, "invalid input type")


def _normalize(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in vector))
    scale = 1.0 / max(norm, 1e-12)
    return [v * scale for v in vector]


def _now_ns() -> int:
    return time.perf_counter_ns()


def _valid_relative_path(path: str) -> bool:
    """Go's fs.ValidPath: slash-separated, no leading or trailing slash, no empty, `.` or `..` element."""
    return path == "." or (bool(path) and all(part not in ("", ".", "..") for part in path.split("/")))


# ---- answers ----------------------------------------------------------------------------------------------


def tag_entry(record: dict) -> dict:
    return {"name": record["name"], "model": record["model"], "modified_at": record["modified_at"],
            "size": record["size"], "digest": record["digest"], "details": public_details(record, parent=False)}


def show_payload(record: dict, *, system: str = "", verbose: bool = False) -> dict:
    """/api/show: Ollama omits empty strings; model_info and tensors come from the stored GGUF."""
    parsed = record["parsed"]
    template = Template(parsed["template"])
    info, tensors = (record["model_info"], record["tensors"]) if "model_info" in record and not verbose else \
        gguf_info(parsed["from"], verbose)
    capabilities = ["completion"] + [cap for cap, var in (("tools", "Tools"), ("insert", "Suffix"))
                                     if template.references(var)]
    payload = {"license": "\n".join(parsed["license"]), "modelfile": show_modelfile(record),
               "parameters": parameters_text(parsed), "template": parsed["template"],
               "system": system or parsed["system"] or "", "details": public_details(record),
               "messages": parsed.get("messages") or None, "model_info": info, "tensors": tensors,
               "capabilities": capabilities, "modified_at": record["modified_at"]}
    return {k: v for k, v in payload.items() if v not in ("", None)}


# ---- /api/create ------------------------------------------------------------------------------------------


def create_events(store: Store, name: str, body: dict) -> Iterator[dict]:
    """Ollama's create from `from` (a stored model) or `files` (pushed GGUF blob), with the request's
    template/system/parameters/messages/license on top; progress objects, then `success`."""
    if body.get("quantize") or body.get("quantization"):
        raise ApiError(400, "the stand-in Ollama does not quantize: quantize with llama.cpp before create")
    if body.get("adapters"):
        raise ApiError(400, "the stand-in Ollama takes no adapters: merge the adapter into the GGUF")
    if body.get("from"):
        source = body["from"]
        if parse_name(source) is None:
            raise ApiError(400, "invalid model name")
        base = store.get(source)
        if base is None:  # Ollama would pull it; no registry is reachable from the stand-in
            yield {"status": "pulling manifest"}
            raise ApiError(500, "pull model manifest: file does not exist")
        doc, gguf_sha, details = json.loads(json.dumps(base["parsed"])), base["gguf_sha256"], base["details"]
        show_info = {key: base[key] for key in ("model_info", "tensors") if key in base}
        parent = base["name"]
    elif body.get("files"):
        yield {"status": "parsing GGUF"}
        doc, gguf_sha, details, show_info = _doc_from_files(store, body["files"])
        parent = ""
    else:
        raise ApiError(400, "neither 'from' or 'files' was specified")
    yield {"status": f"using existing layer sha256:{gguf_sha}"}
    _apply_create_fields(doc, body)
    if not doc["template"]:
        raise ApiError(400, "the stand-in Ollama does not detect chat templates: give `template`")
    if not doc["parameters"].get("stop"):
        raise ApiError(400, 'the stand-in Ollama needs a stop parameter (e.g. "parameters": {"stop": ["<|im_end|>"]})')
    yield {"status": "writing manifest"}
    store.save(name, doc, gguf_sha, details, show_info, source="POST /api/create", parent_model=parent)
    yield {"status": "success"}


def _doc_from_files(store: Store, files: dict[str, str]) -> tuple[dict, str, dict, dict]:
    if any(f.endswith(".safetensors") for f in files):
        raise ApiError(400, "the stand-in Ollama does not convert safetensors: convert to GGUF with llama.cpp")
    if len(files) != 1:
        raise ApiError(400, "the stand-in Ollama takes exactly one GGUF file")
    digest = next(iter(files.values()))
    blob = store.blob_path(digest)
    if not blob.is_file():
        raise ApiError(400, f"blob {digest} not found: push it first (POST /api/blobs/{digest})")
    with blob.open("rb") as handle:
        if handle.read(4) != b"GGUF":
            raise ApiError(400, "supplied file was not in GGUF format")
    try:
        details, show_info = check_gguf(blob, where=f"files: {next(iter(files))}")
    except DistillError as err:
        raise ApiError(400, str(err)) from None
    doc = {"from": str(blob), "adapters": [], "template": None, "system": None, "parameters": {},
           "messages": [], "license": []}
    return doc, blob.name.removeprefix("sha256-"), details, show_info


def _apply_create_fields(doc: dict, body: dict) -> None:
    """Ollama's layer rules: template and system replace, parameters merge (request wins), messages
    replace when given, licenses add up."""
    if body.get("template"):
        try:
            Template(body["template"])
        except TemplateError as err:
            raise ApiError(400, f"template error: {err}") from None
        doc["template"] = body["template"]
    if body.get("system"):
        doc["system"] = body["system"]
    doc["parameters"] = {**doc["parameters"], **_typed_parameters(body.get("parameters") or {})}
    if body.get("messages"):
        doc["messages"] = _create_messages(body["messages"])
    licenses = body.get("license") or []
    doc["license"] += [licenses] if isinstance(licenses, str) else [str(text) for text in licenses]
    format_modelfile(doc)  # the stored record must round-trip as a Modelfile


def _typed_parameters(params: dict) -> dict:
    """Request `parameters` as the Modelfile parser types them; a name or value Ollama's CLI would refuse
    is a 400 here (Ollama's server stores what it is given and fails at the first request)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        kind = PARAMETER_TYPES.get(key)
        if kind is None:
            raise ApiError(400, f"parameters: unknown parameter '{key}'")
        values = value if isinstance(value, list) else [value]
        if key not in LIST_PARAMETERS and isinstance(value, list):
            raise ApiError(400, f"parameters: {key} takes one value")
        typed = []
        for item in values:
            if kind is bool and isinstance(item, bool) or kind is str and isinstance(item, str):
                typed.append(item)
            elif kind in (int, float) and isinstance(item, (int, float)) and not isinstance(item, bool):
                typed.append(kind(item))
            else:
                raise ApiError(400, f"parameters: {key}: {json.dumps(item)} is not a valid {kind.__name__}")
        out[key] = typed if key in LIST_PARAMETERS else typed[0]
    return out


def _create_messages(messages: list) -> list[dict]:
    out = []
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in MESSAGE_ROLES:
            raise ApiError(400, f"messages: role must be one of {', '.join(MESSAGE_ROLES)}")
        out.append({"role": message["role"], "content": str(message.get("content") or "")})
    return out


# ---- the server -------------------------------------------------------------------------------------------


def serve(store: Store, host: str, port: int, engine: Engine | None = None) -> ThreadingHTTPServer:
    handler = type("Handler", (_Handler,), {"store": store, "engine": engine or Engine()})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def serve_forever(store: Store, host: str, port: int) -> None:
    engine = Engine()
    server = serve(store, host, port, engine)
    print(f"standin-ollama {VERSION} listening on {host}:{port}, models in {store.root}, "
          f"size_vram policy {engine.vram}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


__all__ = ["serve", "serve_forever", "show_payload", "tag_entry", "decode_body", "ROUTES"]
