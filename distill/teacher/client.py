"""The teacher: a client for any OpenAI-compatible /v1/chat/completions server (vLLM, llama.cpp, Ollama, ...).

What it adds over a bare `openai.OpenAI` call, all of it needed to label thousands of prompts unattended:
- several endpoints (`base_url` may be a list): requests go to the healthy one with the fewest in flight; an
  endpoint that refuses connections is skipped for a cool-down that doubles while it stays down;
- bounded concurrency (`concurrency`), retries with exponential backoff and jitter on 429/5xx/timeouts/
  connection errors, honouring Retry-After;
- `timeout` bounds each whole request, from its first byte out to the last byte in (DeadlineBackend), not
  only each read: a server that drips a byte a second times out like a silent one;
- a structured-output ladder per endpoint: json_schema -> json_object with the schema -> json_object -> plain
  text; a server that refuses a mode is remembered and not asked again. Answers are always validated by the
  caller: servers fail open;
- gpt-oss reasoning (`reasoning`, `reasoning_content` or `thinking`) goes to an audit log, never into labels;
- an on-disk cache keyed by model + messages + sampling params: a re-run over unchanged prompts makes no calls.

`python -m distill teacher-health --config config/teacher.json --health` checks a teacher (`make teacher-health`).
"""

from __future__ import annotations

import argparse
import contextlib
import email.utils
import hashlib
import json
import os
import random
import re
import socket
import sqlite3
import sys
import threading
import time
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpcore
import httpx
import jsonschema
import openai

from .config import TeacherConfig, load_teacher_config, redact_text, redact_url
from ..errors import DistillError, cli
from ..fileio import JsonlAppender, utc_now

MODES = ("json_schema", "json_object+schema", "json_object", "text")
REASONING_FIELDS = ("reasoning", "reasoning_content", "thinking")
# DISTILL_TEACHER_CACHE moves it (tests point it at a temp dir).
DEFAULT_CACHE = Path(os.environ.get("DISTILL_TEACHER_CACHE", ".cache/teacher"))
BACKOFF_BASE = 0.5  # seconds; doubled per attempt, with full jitter
BACKOFF_CAP = 30.0
RETRY_AFTER_CAP = 120.0
DEAD_COOLDOWN = (2.0, 60.0)  # first and longest pause of an endpoint that refuses connections


class TeacherError(Exception):
    """A request that still failed after all retries; `reason` is short and machine-readable."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.detail = redact_text(" ".join(detail.split()))[:300]
        super().__init__(f"{reason}: {self.detail}" if detail else reason)


class TeacherUnreachable(TeacherError):
    """No endpoint accepted a connection: nothing more can be labeled in this run."""


class TeacherCancelled(TeacherError):
    """The run is being stopped (Ctrl-C, or the teacher is gone): `cancel()` was called."""


@dataclass
class Reply:
    content: str
    reasoning: str | None
    finish_reason: str | None
    model: str
    endpoint: str
    mode: str
    latency: float
    cached: bool = False


@dataclass
class _Endpoint:
    url: str  # as shown in messages, the audit log and the cache: credentials redacted (the client has them)
    client: openai.OpenAI
    mode: int = 0  # index into MODES: the best structured mode this server has not refused
    in_flight: int = 0
    failures: int = 0
    dead_until: float = 0.0


@dataclass
class TeacherStats:
    calls: int = 0  # HTTP requests sent, retries included
    cached: int = 0
    retries: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    downgrades: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------------
class TeacherCache:
    """SQLite key -> answer; each put is its own committed transaction, so a kill -9 loses at most one."""

    def __init__(self, directory: str | Path):
        self.path = Path(directory) / "cache.sqlite"
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db.commit()
        except (OSError, sqlite3.Error) as err:  # unwritable, under a file, not a database
            reason = "a parent is a file, not a directory" if isinstance(err, (NotADirectoryError,
                                                                               FileExistsError)) else err
            raise DistillError(self.path, f"cannot use as the teacher cache: {reason}", "--cache") from None

    @staticmethod
    def check(directory: str | Path) -> None:
        """One line now when an existing cache is not a database; reads only (creates nothing)."""
        path = Path(directory) / "cache.sqlite"
        if not path.is_file():
            return
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                db.execute("PRAGMA schema_version")
        except sqlite3.Error as err:
            raise DistillError(path, f"cannot use as the teacher cache: {err}", "--cache") from None

    def get(self, key: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM answers WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, value: dict) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?)", (key, json.dumps(value)))
            self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._db.close()


def cache_key(model: str, messages: list[dict], params: dict) -> str:
    blob = json.dumps({"model": model, "messages": messages, "params": params}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------------
class TeacherClient:
    """Thread-safe: call `chat()` from as many threads as you like; at most `concurrency` run at once."""

    def __init__(self, config: TeacherConfig, *, cache_dir: str | Path | None = DEFAULT_CACHE,
                 audit_path: str | Path | None = None, backoff_base: float = BACKOFF_BASE):
        self.config = config
        self.stats = TeacherStats()
        self.backoff_base = backoff_base
        self._network = DeadlineBackend()
        self._endpoints = [_Endpoint(redact_url(url), _openai_client(url, config, self._network))
                           for url in config.base_url]
        self._lock = threading.Lock()
        self._cancelled = threading.Event()
        self._slots = threading.BoundedSemaphore(config.concurrency)
        self._cache = TeacherCache(cache_dir) if cache_dir else None
        self._audit_path = Path(audit_path) if audit_path else None
        self._audit: JsonlAppender | None = None
        self._rng = random.Random()

    # -- public ----------------------------------------------------------------------------------------
    def chat(self, messages: list[dict], *, schema: dict | None = None, temperature: float | None = None,
             seed: int | None = None, max_tokens: int | None = None, tag: str | None = None,
             refresh: bool = False) -> Reply:
        """One answer for `messages`; `schema` asks for structured output. Raises TeacherError when it fails.

        `refresh` skips the cache lookup (the new answer replaces the cached one).
        """
        params = {
            "temperature": self.config.temperature if temperature is None else temperature,
            "max_tokens": max_tokens or self.config.max_tokens,
            "reasoning_effort": self.config.reasoning_effort,
            "seed": seed,
            "schema": schema,
        }
        key = cache_key(self.config.model, messages, params)
        if self._cache and not refresh:
            hit = self._cache.get(key)
            if hit is not None:
                with self._lock:
                    self.stats.cached += 1
                return Reply(**{**hit, "cached": True})
        reply = self._ask(messages, params)
        if self._cache:
            self._cache.put(key, {k: v for k, v in asdict(reply).items() if k != "cached"})
        self._write_audit(key, tag, reply)
        return reply

    def check_reachable(self) -> None:
        """Fail with one line naming the config when no endpoint accepts a connection (nothing is written)."""
        problems = []
        for endpoint in self._endpoints:
            try:
                endpoint.client.with_options(timeout=min(self.config.timeout, 10.0)).models.list()
                return
            except (openai.APIConnectionError, openai.APITimeoutError) as err:
                problems.append(f"{endpoint.url} ({_describe_connection_error(err)})")
                self._mark_dead(endpoint)
            except openai.AuthenticationError:
                raise DistillError(self.config.source, f"{endpoint.url} rejected the API key; set "
                                   f"${self.config.api_key_env}", "api_key_env") from None
            except openai.APIStatusError:
                return  # it answers HTTP: some servers simply have no /models
        raise DistillError(self.config.source, f"teacher unreachable: {'; '.join(problems)}", "base_url")

    @property
    def endpoints(self) -> list[str]:
        return [e.url for e in self._endpoints]

    def mode(self, url: str) -> str:
        return MODES[next(e.mode for e in self._endpoints if e.url == redact_url(url))]

    def cancel(self) -> None:
        """Stop now (Ctrl-C): in-flight requests are cut off (their sockets shut down), waiting ones and backoff
        sleeps end, and every `chat()` raises TeacherCancelled. Answers already returned are not affected."""
        self._cancelled.set()
        self._network.cancel()

    def close(self) -> None:
        if self._cache:
            self._cache.close()
        if self._audit:
            self._audit.close()
        for endpoint in self._endpoints:
            endpoint.client.close()

    def __enter__(self) -> TeacherClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- one request with retries ------------------------------------------------------------------------
    def _ask(self, messages: list[dict], params: dict) -> Reply:
        attempts = self.config.retries + 1
        last: TeacherError | None = None
        tried: set[str] = set()
        attempt = 0
        while attempt < attempts:
            endpoint = self._pick(avoid=tried)
            try:
                with self._slots:
                    self._raise_if_cancelled()
                    return self._send(endpoint, messages, params)
            except _ModeRefused as refused:
                self._downgrade(endpoint, refused.mode, refused.detail)
                continue  # not a failure of the request: ask again in the next mode, same attempt
            except _Retryable as err:
                self._raise_if_cancelled()  # a socket shut down by cancel() is not the endpoint's failure
                last = TeacherError(err.reason, err.detail)
                with self._lock:
                    self.stats.errors[err.reason] = self.stats.errors.get(err.reason, 0) + 1
                if err.reason == "connection":
                    self._mark_dead(endpoint)
                    tried.add(endpoint.url)
                    if self._any_alive(avoid=tried):
                        attempt += 1
                        continue  # another replica is up: no need to wait
                elif len(self._endpoints) > 1:
                    tried = {endpoint.url}
                attempt += 1
                if attempt < attempts:
                    with self._lock:
                        self.stats.retries += 1
                    self._cancelled.wait(self._delay(attempt, err.retry_after))
                    self._raise_if_cancelled()
        assert last is not None
        if last.reason == "connection" and not self._any_alive():
            raise TeacherUnreachable("unreachable", f"no endpoint accepts connections ({last.detail})")
        raise last

    def _raise_if_cancelled(self) -> None:
        if self._cancelled.is_set():
            raise TeacherCancelled("cancelled", "the run is stopping")

    def _send(self, endpoint: _Endpoint, messages: list[dict], params: dict) -> Reply:
        schema = params["schema"]
        mode = MODES[endpoint.mode] if schema else "text"
        kwargs: dict[str, Any] = {
            "model": self.config.model,
            "messages": messages,
            "temperature": params["temperature"],
            "max_tokens": params["max_tokens"],
        }
        if params["reasoning_effort"]:
            kwargs["reasoning_effort"] = params["reasoning_effort"]
        if params["seed"] is not None:
            kwargs["seed"] = params["seed"]
        if mode == "json_schema":
            kwargs["response_format"] = {"type": "json_schema",
                                         "json_schema": {"name": "answer", "schema": schema, "strict": True}}
        elif mode == "json_object+schema":
            kwargs["response_format"] = {"type": "json_object", "schema": schema}
        elif mode == "json_object":
            kwargs["response_format"] = {"type": "json_object"}
        with self._lock:
            endpoint.in_flight += 1
            self.stats.calls += 1
        started = time.monotonic()
        try:
            with self._network.deadline(self.config.timeout):
                raw = endpoint.client.chat.completions.with_raw_response.create(**kwargs)
                body = json.loads(raw.text)
        except openai.APITimeoutError:
            raise _Retryable("timeout", f"no answer from {endpoint.url} within {self.config.timeout:g}s") from None
        except openai.APIConnectionError as err:
            raise _Retryable("connection", f"{endpoint.url}: {_describe_connection_error(err)}") from None
        except openai.AuthenticationError:
            raise DistillError(self.config.source, f"{endpoint.url} rejected the API key; set "
                               f"${self.config.api_key_env}", "api_key_env") from None
        except openai.APIStatusError as err:
            self._raise_for_status(err, mode)
        except ValueError as err:  # the body is not JSON
            raise _Retryable("bad_response", f"{endpoint.url}: body is not JSON ({err})") from None
        finally:
            with self._lock:
                endpoint.in_flight -= 1
        latency = time.monotonic() - started
        with self._lock:
            endpoint.failures = 0
            endpoint.dead_until = 0.0
        return _reply_from_body(body, endpoint.url, mode, latency, self.config.model)

    def _raise_for_status(self, err: openai.APIStatusError, mode: str):
        status = err.status_code
        detail = f"HTTP {status}: {_error_message(err)}"
        # Only a reply that names the structured-output request may step the endpoint down the ladder: any other
        # 400 (one prompt over the context length, say) is that request's failure, not the server's.
        mentions_format = re.search(r"response_format|json_schema|json_object|schema|grammar|\bformat\b", detail,
                                    re.I)
        if mode != "text" and mentions_format and status in (400, 404, 415, 422, 501, *range(500, 600)):
            raise _ModeRefused(mode, detail) from None
        if status == 429 or status >= 500 or status == 408:
            raise _Retryable(f"http_{status}", detail, _retry_after(err.response)) from None
        if status == 404:
            raise DistillError(self.config.source, f"the teacher answered {detail} (is model "
                               f"{self.config.model!r} served there?)", "model") from None
        raise TeacherError(f"http_{status}", detail) from None

    # -- endpoints ------------------------------------------------------------------------------------
    def _pick(self, avoid: set[str] = frozenset()) -> _Endpoint:
        now = time.monotonic()
        with self._lock:
            alive = [e for e in self._endpoints if e.dead_until <= now]
            preferred = [e for e in alive if e.url not in avoid] or alive
            if not preferred:  # all resting: try the one that comes back first
                return min(self._endpoints, key=lambda e: e.dead_until)
            least = min(e.in_flight for e in preferred)
            return self._rng.choice([e for e in preferred if e.in_flight == least])

    def _any_alive(self, avoid: set[str] = frozenset()) -> bool:
        now = time.monotonic()
        with self._lock:
            return any(e.dead_until <= now and e.url not in avoid for e in self._endpoints)

    def _mark_dead(self, endpoint: _Endpoint) -> None:
        first, longest = DEAD_COOLDOWN
        with self._lock:
            endpoint.failures += 1
            endpoint.dead_until = time.monotonic() + min(longest, first * 2 ** (endpoint.failures - 1))

    def _downgrade(self, endpoint: _Endpoint, mode: str, detail: str) -> None:
        with self._lock:
            if MODES[endpoint.mode] == mode and endpoint.mode < len(MODES) - 1:
                endpoint.mode += 1
                self.stats.downgrades.append(f"{endpoint.url}: {mode} -> {MODES[endpoint.mode]} ({detail[:80]})")
            elif mode == "text":
                raise TeacherError("refused", detail)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, RETRY_AFTER_CAP) + self._rng.uniform(0, 0.1)
        return self._rng.uniform(0, min(BACKOFF_CAP, self.backoff_base * 2 ** attempt))

    def _write_audit(self, key: str, tag: str | None, reply: Reply) -> None:
        if not self._audit_path:
            return
        record = {"time": utc_now(), "tag": tag, "key": key[:16], "endpoint": reply.endpoint, "mode": reply.mode,
                  "latency_s": round(reply.latency, 3), "finish_reason": reply.finish_reason,
                  "reasoning": reply.reasoning, "content": reply.content}
        with self._lock:
            if self._audit is None:
                self._audit = JsonlAppender(self._audit_path, sync_interval=0.25)
            self._audit.append(record)


def _openai_client(url: str, config: TeacherConfig, network: DeadlineBackend) -> openai.OpenAI:
    """No retries of its own (ours know about endpoints and modes); sockets from `network` (overall deadline,
    cancel). Plain-http endpoints (a LAN teacher) skip loading the CA bundle, which costs more than a loopback
    request."""
    transport = httpx.HTTPTransport(verify=not url.startswith("http://"),
                                    limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100))
    transport._pool._network_backend = network  # httpcore's pool takes any NetworkBackend; httpx has no argument
    http_client = openai.DefaultHttpxClient(transport=transport)
    return openai.OpenAI(base_url=url, api_key=config.api_key, max_retries=0, http_client=http_client,
                         timeout=httpx.Timeout(config.timeout, connect=min(config.timeout, 10.0)))


class DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's sockets with an overall deadline per request: httpx's timeouts bound each read, so a server
    that drips a byte a second never times out. Every read and write here waits at most until the calling
    thread's deadline (`with backend.deadline(s):`), then raises ReadTimeout as a silent server would."""

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()
        self._local = threading.local()
        self._streams: weakref.WeakSet[_DeadlineStream] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._cancelled = threading.Event()

    @contextlib.contextmanager
    def deadline(self, seconds: float):
        """Requests in this block (this thread) must be done `seconds` after their first byte goes out (the
        clock starts at the first connect/write: the SDK's own first-call set-up is not the server's time)."""
        self._local.seconds, self._local.deadline = seconds, None
        try:
            yield
        finally:
            self._local.seconds = self._local.deadline = None

    def bound(self, timeout: float | None, error: type[Exception] = httpcore.ReadTimeout) -> float | None:
        """`timeout` cut to what is left of this thread's deadline; raises `error` once it has passed."""
        seconds = getattr(self._local, "seconds", None)
        if seconds is None:
            return timeout
        if self._local.deadline is None:
            self._local.deadline = time.monotonic() + seconds
        left = self._local.deadline - time.monotonic()
        if left <= 0:
            raise error("the whole request took longer than the timeout")
        return left if timeout is None else min(timeout, left)

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        if self._cancelled.is_set():
            raise httpcore.ConnectError("cancelled")
        timeout = self.bound(timeout, httpcore.ConnectTimeout)
        stream = _DeadlineStream(self._inner.connect_tcp(host, port, timeout, local_address, socket_options), self)
        with self._lock:
            self._streams.add(stream)
        return stream

    def cancel(self) -> None:
        """Shut down every open socket: a thread blocked reading one returns at once (closing would not wake it),
        and no new connection opens."""
        self._cancelled.set()
        with self._lock:
            streams = list(self._streams)
        for stream in streams:
            stream.shutdown()

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        return _DeadlineStream(self._inner.connect_unix_socket(path, self.bound(timeout), socket_options), self)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, backend: DeadlineBackend):
        self._inner, self._backend = inner, backend

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._backend.bound(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._backend.bound(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None):
        inner = self._inner.start_tls(ssl_context, server_hostname, self._backend.bound(timeout,
                                                                                         httpcore.ConnectTimeout))
        return _DeadlineStream(inner, self._backend)

    def get_extra_info(self, info: str):
        return self._inner.get_extra_info(info)

    def shutdown(self) -> None:
        sock = self._inner.get_extra_info("socket")
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except (OSError, AttributeError):
            pass  # already closed


class _Retryable(Exception):
    def __init__(self, reason: str, detail: str, retry_after: float | None = None):
        super().__init__(detail)
        self.reason, self.detail, self.retry_after = reason, detail, retry_after


class _ModeRefused(Exception):
    def __init__(self, mode: str, detail: str):
        super().__init__(detail)
        self.mode, self.detail = mode, detail


def _reply_from_body(body: Any, url: str, mode: str, latency: float, model: str) -> Reply:
    try:
        choice = body["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError):
        raise _Retryable("bad_response", f"{url}: no choices[0].message in the answer") from None
    reasoning = next((message[k] for k in REASONING_FIELDS if isinstance(message.get(k), str) and message[k]), None)
    content = message.get("content") or ""
    if not isinstance(content, str):
        content = json.dumps(content)
    return Reply(content=content, reasoning=reasoning, finish_reason=choice.get("finish_reason"),
                 model=str(body.get("model") or model), endpoint=url, mode=mode, latency=latency)


def _retry_after(response: httpx.Response | None) -> float | None:
    """Seconds from `retry-after-ms` or `Retry-After` (seconds or an HTTP date)."""
    if response is None:
        return None
    headers = response.headers
    try:
        if "retry-after-ms" in headers:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _error_message(err: openai.APIStatusError) -> str:
    body = err.body
    if isinstance(body, dict):
        body = body.get("message") or body.get("error") or body
        if isinstance(body, dict):
            body = body.get("message") or json.dumps(body)
    return str(body or err.message)[:200]


def _describe_connection_error(err: Exception) -> str:
    cause = err.__cause__ or err.__context__
    text = str(cause or err)
    if "refused" in text.lower():
        return "connection refused"
    if isinstance(err, openai.APITimeoutError) or "timed out" in text.lower():
        return "connection timed out"
    return redact_text(text.splitlines()[0])[:120] if text else type(err).__name__


# ---------------------------------------------------------------------------------------------------------
# Structured answers: parse the content (never the reasoning) and validate on the client.
def parse_json_answer(content: str) -> Any:
    """The JSON object in a model answer: the whole text, a ```json fence, or the first {...} in it."""
    text = content.strip()
    fence = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    if fence:
        text = fence.group(1).strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    start = text.find("{")
    if start >= 0:
        try:
            obj, _ = json.JSONDecoder().raw_decode(text[start:])
            return obj
        except json.JSONDecodeError:
            pass
    raise ValueError(f"no JSON object in the answer ({text[:60]!r})")


# ---------------------------------------------------------------------------------------------------------
# Health check
_PROBE_SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
                 "additionalProperties": False}


def health(config: TeacherConfig) -> list[dict]:
    """Per endpoint: models, latency of one tiny completion, reasoning seen, json_schema honoured."""
    results = []
    for url in config.base_url:
        single = TeacherConfig(**{**config.to_dict(), "base_url": [url], "retries": 0},
                               source=config.source)
        row: dict[str, Any] = {"endpoint": redact_url(url)}
        client = TeacherClient(single, cache_dir=None)
        try:
            endpoint = client._endpoints[0]
            models = endpoint.client.with_options(timeout=min(config.timeout, 10.0)).models.list()
            row["models"] = [m.id for m in models.data]
            reply = client.chat([{"role": "user", "content": "Reply with the single word: OK"}], max_tokens=128)
            row["latency_s"] = round(reply.latency, 3)
            row["reply"] = reply.content.strip()[:40]
            row["reasoning"] = bool(reply.reasoning)
            probe = client.chat([{"role": "user", "content": 'Answer with the JSON object {"ok": true}.'}],
                                schema=_PROBE_SCHEMA, max_tokens=256)
            row["structured_mode"] = probe.mode
            try:
                jsonschema.validate(parse_json_answer(probe.content), _PROBE_SCHEMA)
                row["json_schema"] = probe.mode == "json_schema"
            except (ValueError, jsonschema.ValidationError):
                row["json_schema"] = False
            row["ok"] = True
        except (openai.APIConnectionError, openai.APITimeoutError) as err:
            row.update(ok=False, error=_describe_connection_error(err))
        except TeacherError as err:
            row.update(ok=False, error=str(err))
        except DistillError as err:
            row.update(ok=False, error=str(err).split(": ", 2)[-1])
        except openai.APIStatusError as err:
            row.update(ok=False, error=f"HTTP {err.status_code}: {_error_message(err)}")
        finally:
            client.close()
        results.append(row)
    return results


def _print_health(config: TeacherConfig, rows: list[dict]) -> None:
    for row in rows:
        if not row["ok"]:
            print(f"{row['endpoint']}: DOWN ({row['error']})")
            continue
        served = row["models"]
        note = "" if config.model in served or not served else f" (config model {config.model!r} not listed)"
        print(f"{row['endpoint']}: up")
        print(f"  models:      {', '.join(served) or '-'}{note}")
        print(f"  latency:     {row['latency_s']:.3f} s for a tiny completion ({row['reply']!r})")
        print(f"  reasoning:   {'yes' if row['reasoning'] else 'no reasoning field in answers'}")
        honoured = "yes" if row["json_schema"] else "no"
        print(f"  json_schema: {honoured} (structured output via {row['structured_mode']})")


@cli
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m distill teacher-health",
                                     description="Check every endpoint of the teacher: models, latency, reasoning, "
                                                 "structured output.")
    parser.add_argument("--config", default="config/teacher.json")
    parser.add_argument("--health", action="store_true", help=argparse.SUPPRESS)  # the old spelling; implied now
    args = parser.parse_args(argv)
    config = load_teacher_config(args.config)
    rows = health(config)
    down = [r for r in rows if not r["ok"]]
    if len(down) == len(rows):
        reasons = "; ".join(f"{r['endpoint']} ({r['error']})" for r in down)
        raise DistillError(config.source, f"teacher unreachable: {reasons}", "base_url")
    _print_health(config, rows)
    if down:
        print(f"degraded: {len(down)} of {len(rows)} endpoints down", file=sys.stderr)


if __name__ == "__main__":
    main()
