"""The router as a service on the robot: the conductor POSTs what was said and gets the decision back.

    python -m distill serve --config /etc/droidhead/router-service.yaml
    distill-route serve --student models/router_student_mlx --ollama http://127.0.0.1:11434 --model router-student

    POST /route   {"text": "turn your eyes red", "context": [{"role": "user", "content": "..."}, ...]}
                  -> the decision (skill, args, confidence, source, reason, latency_ms, queue_ms, reply, ...)
    GET  /health  -> model loaded, Ollama reachable (version, logprobs), threshold, student, catalog hash
                     (HTTP 200 when it can route, 503 while starting or degraded, with the problems named)
    GET  /metrics -> Prometheus text: decisions by source and reason, latency quantiles, queue, backend up

Design (docs/runtime.md, "The router service"):
- Stdlib `http.server.ThreadingHTTPServer`: no dependency beyond the runtime core (the robot's install has
  requests, jsonschema, pyyaml, jinja2, jsonlines and nothing else), a thread per connection (bounded by
  `max_connections`; more connections wait in the listen backlog), and the expensive part is the model anyway:
  one route on the Orin is ~100-300 ms of Ollama time, so a few requests a second is the real load.
- A bounded queue in front of `workers` routers (default 1: Ollama on a small board decodes one request at a
  time; more workers would only queue inside Ollama, where no deadline applies). A request waits for a slot and
  for its turn, never gets an error for being busy, and when its `deadline_s` passes (queue wait included) it
  is answered with a fallback decision, reason `timeout`; a late result is dropped, not logged twice.
- Every request is logged exactly once (distill.runtime.decisions, rotated) after its decision is final: what
  `make harvest` fetches. The fallback chat answer (`fallback_model` in Ollama) is asked outside the worker,
  so a long chat answer does not hold up routing.
- Ollama's version is read at start (`/api/version`): token log-probabilities, which the confidence needs,
  came with Ollama 0.12.11. An older Ollama makes every route fall back (`no_logprobs`); the service says so in
  /health and its log, and with `backend: auto` and a `gguf` it routes with llama-cpp-python instead (the
  `llamacpp` extra), the documented alternative.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import queue
import signal
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ..errors import cli, fail
from ..skills import FALLBACK_SKILL
from .backends import BACKEND_DOWN, NO_LOGPROBS, TIMEOUT
from .decisions import OFF_VALUES, DecisionLog
from .router import Decision, Router

logger = logging.getLogger("distill.runtime.service")

DEFAULT_LISTEN = "127.0.0.1:8765"
# Ollama returns token log-probabilities from /api/chat since v0.12.11 (release notes:
# https://github.com/ollama/ollama/releases/tag/v0.12.11). Older versions answer without them.
MIN_OLLAMA_LOGPROBS = (0, 12, 11)
BACKENDS = ("auto", "ollama", "llamacpp")
ROLES = ("system", "user", "assistant")
MAX_BODY_BYTES = 64 * 1024
LATENCY_WINDOW = 2048  # the /metrics quantiles are over the latest requests
UNHEALTHY_REASONS = {BACKEND_DOWN, NO_LOGPROBS}


# ---- configuration ------------------------------------------------------------------------------------------


@dataclass
class ServiceConfig:
    """What the service runs with: the YAML file Ansible renders, overridden by command-line flags."""

    student: str = ""  # student dir (student.json + catalog.yaml): system prompt, catalog, threshold
    listen: str = DEFAULT_LISTEN
    backend: str = "auto"  # auto | ollama | llamacpp
    ollama: str = "http://127.0.0.1:11434"
    model: str = "router-student"  # the router student's name in Ollama
    model_version: str = ""  # the GGUF's sha256 prefix (deploy sets it): /health, /metrics, the decision log
    gguf: str = ""  # the same GGUF, for the llamacpp backend
    threshold: float | None = None  # None: the student's calibrated threshold
    deadline_s: float = 10.0  # per request, queue wait included
    queue_size: int = 32  # requests waiting for a worker
    workers: int = 1
    max_connections: int = 64
    max_text_chars: int = 2000
    max_context_turns: int = 20
    fallback_model: str = ""  # the big chat model in Ollama; empty: fallbacks carry no reply
    fallback_url: str = ""  # default: the same Ollama
    fallback_timeout_s: float = 60.0
    fallback_max_tokens: int = 200
    persona: str = ""  # a file whose text is the chat model's system prompt
    decision_log: str = "/var/lib/droidhead/decisions.jsonl"  # or "off"
    log_max_bytes: int = 5 * 1024 * 1024
    log_backups: int = 3
    warmup: bool = True  # one request at start so Ollama loads the model before the first real one

    def listen_address(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        try:
            return host.strip("[]") or "127.0.0.1", int(port)
        except ValueError:
            fail("listen", f"{self.listen!r}: expected HOST:PORT")


_TYPES = {"str": str, "int": int, "float": (int, float), "bool": bool, "float | None": (int, float, type(None))}


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> ServiceConfig:
    """Defaults, then the YAML file, then `overrides` (flags that were given); every key and type checked."""
    import yaml

    values: dict[str, Any] = {}
    where = str(path) if path else "<flags>"
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as err:
            fail(path, f"cannot read the service config: {err.strerror}")
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            fail(path, f"not valid YAML: {' '.join(str(err).split())[:160]}")
        if loaded is not None and not isinstance(loaded, dict):
            fail(path, "expected a mapping of settings")
        values.update(loaded or {})
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    known = {f.name: f for f in fields(ServiceConfig)}
    for key, value in values.items():
        if key not in known:
            fail(where, f"unknown setting (known: {', '.join(sorted(known))})", key)
        expected = _TYPES[str(known[key].type)]
        if not isinstance(value, expected) or (isinstance(value, bool) and known[key].type != "bool"):
            fail(where, f"{value!r} is not a {known[key].type}", key)
    config = ServiceConfig(**values)
    _check_config(config, where)
    return config


def _check_config(config: ServiceConfig, where: str) -> None:
    if config.backend not in BACKENDS:
        fail(where, f"{config.backend!r}: expected one of {', '.join(BACKENDS)}", "backend")
    if not config.student:
        fail(where, "the student dir (student.json + catalog.yaml) is required", "student")
    for name in ("deadline_s", "fallback_timeout_s"):
        if not 0 < getattr(config, name) < 3600:
            fail(where, "must be between 0 and 3600 seconds", name)
    for name in ("queue_size", "workers", "max_connections", "max_text_chars", "log_max_bytes"):
        if getattr(config, name) < 1:
            fail(where, "must be at least 1", name)
    if config.backend == "llamacpp" and not config.gguf:
        fail(where, "the llamacpp backend needs the GGUF path", "gguf")
    config.listen_address()


# ---- Ollama's version ---------------------------------------------------------------------------------------


def version_tuple(text: str) -> tuple[int, ...] | None:
    """'0.12.11' -> (0, 12, 11); '0.13.0-rc1' -> (0, 13, 0); None when it does not parse."""
    head = str(text).strip().lstrip("v").split("-")[0].split("+")[0]
    try:
        parts = tuple(int(p) for p in head.split("."))
    except ValueError:
        return None
    return parts if parts else None


def ollama_version(url: str, timeout_s: float = 2.0) -> str | None:
    """The version Ollama reports at /api/version, or None when it does not answer."""
    import requests

    try:
        response = requests.get(f"{url.rstrip('/')}/api/version", timeout=timeout_s)
        return str(response.json().get("version", "")) if response.status_code == 200 else None
    except (requests.RequestException, ValueError, AttributeError):
        return None


def has_logprobs(version: str | None) -> bool | None:
    """True/False by version; None when unknown (no answer, or a development build reporting 0.0.0)."""
    parsed = version_tuple(version) if version else None
    if parsed is None or parsed == (0, 0, 0):
        return None
    return parsed >= MIN_OLLAMA_LOGPROBS


def pick_backend(config: ServiceConfig, version: str | None) -> tuple[str, str]:
    """(backend, why): `auto` routes with llama-cpp-python only when Ollama is too old for logprobs and a GGUF
    is configured; an Ollama that does not answer yet may well come up later (it starts beside us)."""
    if config.backend != "auto":
        return config.backend, "configured"
    if has_logprobs(version) is False and config.gguf:
        return "llamacpp", (f"Ollama {version} returns no token log-probabilities (needs "
                            f"{'.'.join(map(str, MIN_OLLAMA_LOGPROBS))}+): routing the GGUF with llama-cpp-python")
    return "ollama", "Ollama" if version else "Ollama (not answering yet)"


# ---- metrics ------------------------------------------------------------------------------------------------


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile of `values` (0 when empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class Metrics:
    """Counters and a latency window, rendered in Prometheus' text exposition format (no client library needed)."""

    QUANTILES = (0.5, 0.9, 0.95, 0.99)

    def __init__(self):
        self.lock = threading.Lock()
        self.decisions: Counter = Counter()  # (source, reason)
        self.http: Counter = Counter()  # (path, code)
        self.latency = deque(maxlen=LATENCY_WINDOW)
        self.queue_wait = deque(maxlen=LATENCY_WINDOW)
        self.latency_sum = 0.0
        self.latency_count = 0

    def record(self, decision: Decision, queue_ms: float) -> None:
        with self.lock:
            self.decisions[(decision.source, decision.reason or "")] += 1
            self.latency.append(decision.latency_ms / 1000)
            self.queue_wait.append(queue_ms / 1000)
            self.latency_sum += decision.latency_ms / 1000
            self.latency_count += 1

    def count_http(self, path: str, code: int) -> None:
        with self.lock:
            self.http[(path, code)] += 1

    def render(self, gauges: dict[str, tuple[str, float]], info: dict[str, str]) -> str:
        with self.lock:
            lines = ["# HELP droidhead_router_decisions_total Routed requests by decision source and fallback reason.",
                     "# TYPE droidhead_router_decisions_total counter"]
            lines += [f"droidhead_router_decisions_total{_labels(source=s, reason=r)} {n}"
                      for (s, r), n in sorted(self.decisions.items())]
            lines += _summary("droidhead_router_latency_seconds", "Whole /route time (queue, student, chat answer).",
                              list(self.latency), self.latency_sum, self.latency_count, self.QUANTILES)
            lines += _summary("droidhead_router_queue_seconds", "Time a request waited for a worker.",
                              list(self.queue_wait), sum(self.queue_wait), len(self.queue_wait), self.QUANTILES)
            lines += ["# HELP droidhead_router_http_requests_total HTTP requests by path and status code.",
                      "# TYPE droidhead_router_http_requests_total counter"]
            lines += [f"droidhead_router_http_requests_total{_labels(path=p, code=str(c))} {n}"
                      for (p, c), n in sorted(self.http.items())]
        for name, (help_text, value) in gauges.items():
            lines += [f"# HELP droidhead_router_{name} {help_text}", f"# TYPE droidhead_router_{name} gauge",
                      f"droidhead_router_{name} {_number(value)}"]
        lines += ["# HELP droidhead_router_info What this service routes with.", "# TYPE droidhead_router_info gauge",
                  f"droidhead_router_info{_labels(**info)} 1"]
        return "\n".join(lines) + "\n"


def _summary(name: str, help_text: str, window: list[float], total: float, count: int, qs: tuple) -> list[str]:
    lines = [f"# HELP {name} {help_text} Quantiles over the latest {LATENCY_WINDOW} requests.", f"# TYPE {name} summary"]
    lines += [f'{name}{{quantile="{q}"}} {_number(quantile(window, q))}' for q in qs]
    return lines + [f"{name}_sum {_number(total)}", f"{name}_count {count}"]


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items()) + "}"


def _escape(value: Any) -> str:
    """A label value as the exposition format wants it: backslash, double quote and newline escaped."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return repr(round(float(value), 6)) if not float(value).is_integer() else str(int(value))


# ---- the queue in front of the routers ----------------------------------------------------------------------


@dataclass
class Job:
    text: str
    deadline: float  # time.monotonic() by which the answer is due
    arrived: float
    done: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    decision: Decision | None = None
    started: float | None = None
    abandoned: bool = False


_STOP = object()


class RouteQueue:
    """`workers` threads, each with its own Router, take jobs from a bounded queue in arrival order."""

    def __init__(self, routers: list[Router], capacity: int, on_prediction=None):
        self.jobs: queue.Queue = queue.Queue(maxsize=capacity)
        self.capacity = capacity
        self.busy = 0
        self._busy_lock = threading.Lock()
        self._on_prediction = on_prediction or (lambda router, decision: None)
        self.threads = [threading.Thread(target=self._work, args=(router,), name=f"router-{i}", daemon=True)
                        for i, router in enumerate(routers)]
        for thread in self.threads:
            thread.start()

    @property
    def waiting(self) -> int:
        return self.jobs.qsize()

    def submit(self, text: str, deadline_s: float) -> tuple[Decision, float]:
        """The decision for `text` and the ms it waited for a worker; a `timeout` fallback past the deadline."""
        now = time.monotonic()
        job = Job(text, now + deadline_s, now)
        try:
            self.jobs.put(job, timeout=deadline_s)
        except queue.Full:
            return self._timed_out(job, f"the queue stayed full ({self.capacity} waiting) for {deadline_s:g}s")
        if not job.done.wait(timeout=max(0.0, job.deadline - time.monotonic())):
            with job.lock:
                if job.decision is None:
                    job.abandoned = True  # the worker drops its late result instead of answering twice
            if job.decision is None:
                waited = (job.started or time.monotonic()) - job.arrived
                return self._timed_out(job, f"no decision within the {deadline_s:g}s deadline "
                                            f"({waited * 1000:.0f} ms of it waiting for a worker)")
        return job.decision, round(((job.started or job.arrived) - job.arrived) * 1000, 1)

    def _timed_out(self, job: Job, detail: str) -> tuple[Decision, float]:
        waited = ((job.started or time.monotonic()) - job.arrived) * 1000
        elapsed = (time.monotonic() - job.arrived) * 1000
        return Decision(skill=FALLBACK_SKILL, args={}, confidence=0.0, source="fallback", reason=TIMEOUT,
                        latency_ms=round(elapsed, 1), detail=detail), round(waited, 1)

    def _work(self, router: Router) -> None:
        while True:
            job = self.jobs.get()
            if job is _STOP:
                return
            with job.lock:
                remaining = job.deadline - time.monotonic()
                if job.abandoned or remaining <= 0:
                    continue  # answered with a timeout already
                job.started = time.monotonic()
            if hasattr(router.backend, "timeout_s"):
                router.backend.timeout_s = remaining  # each worker owns its router: no other thread reads this
            with self._busy_lock:
                self.busy += 1
            try:
                decision = router.route(job.text)
            finally:
                with self._busy_lock:
                    self.busy -= 1
            self._on_prediction(router, decision)
            with job.lock:
                if not job.abandoned:
                    job.decision = decision
                    job.done.set()

    def stop(self) -> None:
        for _ in self.threads:
            self.jobs.put(_STOP)
        for thread in self.threads:
            thread.join(timeout=5)


# ---- the service --------------------------------------------------------------------------------------------


class RouterService:
    """Routers behind the queue, the fallback chat, the decision log, health and metrics."""

    def __init__(self, config: ServiceConfig, *, ollama_version_now: str | None = None):
        self.config = config
        self.started = time.monotonic()
        self.metrics = Metrics()
        self.ollama_version = ollama_version_now
        self.backend_kind, why = pick_backend(config, ollama_version_now)
        self.backend_why = why
        self.routers = [self._router() for _ in range(1 if self.backend_kind == "llamacpp" else config.workers)]
        self.spec_info = self._student_info()
        self.model_loaded = False
        self.logprobs_seen: bool | None = None  # what the answers showed (the version says what to expect)
        self.last_backend_reason: str | None = None
        self._warming = threading.Lock()  # one warm-up at a time
        self.log = self._decision_log()
        self.chat = self._chat()
        self.queue = RouteQueue(self.routers, config.queue_size, on_prediction=self._observe)

    # -- set-up
    def _router(self) -> Router:
        c = self.config
        if self.backend_kind == "llamacpp":
            router = Router.from_student(c.student, gguf=c.gguf, threshold=c.threshold, timeout_s=c.deadline_s)
        else:
            router = Router.from_student(c.student, ollama=c.ollama, model=c.model, threshold=c.threshold,
                                         timeout_s=c.deadline_s)
            if c.model_version:
                router.backend.model_version = f"ollama:{c.model}@{c.model_version}"
        return router

    def _student_info(self) -> dict:
        from ..student import StudentSpec

        spec = StudentSpec.load(self.config.student)
        return {"name": spec.name, "created": spec.created, "git_commit": spec.git_commit, "path": str(spec.path)}

    def _decision_log(self) -> DecisionLog | None:
        c = self.config
        if c.decision_log.strip().lower() in OFF_VALUES:
            return None
        return DecisionLog(c.decision_log, max_bytes=c.log_max_bytes, backups=c.log_backups)

    def _chat(self):
        c = self.config
        if not c.fallback_model:
            return None
        from .chat import OllamaChat

        persona = Path(c.persona).read_text(encoding="utf-8") if c.persona else None
        return OllamaChat(c.fallback_url or c.ollama, c.fallback_model, system_prompt=persona,
                          timeout_s=c.fallback_timeout_s, max_tokens=c.fallback_max_tokens)

    @property
    def router(self) -> Router:
        return self.routers[0]

    def warm_up(self) -> None:
        """One prediction so Ollama loads the model (its first request is slow) and logprobs are seen."""
        if not self._warming.acquire(blocking=False):
            return  # one is running
        try:
            self._warm_up()
        finally:
            self._warming.release()

    def warm_up_later(self) -> None:
        """Warm up on a thread (health asks for it when Ollama came up after the service, as at boot)."""
        threading.Thread(target=_warm_up_safely, args=(self,), daemon=True).start()

    def _warm_up(self) -> None:
        started = time.perf_counter()
        pred = self.router.backend.predict("hello", self.router.system_prompt)
        self._observe_prediction(pred.error)
        logger.info("warm-up: %.0f ms%s", (time.perf_counter() - started) * 1000,
                    f" ({pred.error}: {pred.detail})" if pred.error else "")

    def _observe(self, router: Router, decision: Decision) -> None:
        self._observe_prediction(decision.reason)

    def _observe_prediction(self, reason: str | None) -> None:
        """What the latest answer says about the backend: up, down, with or without logprobs."""
        if reason in (BACKEND_DOWN, TIMEOUT, "backend_error"):
            self.last_backend_reason = reason
            if reason == BACKEND_DOWN:
                self.model_loaded = False
            return
        self.last_backend_reason = None
        if reason == NO_LOGPROBS:
            self.logprobs_seen = False
            self.model_loaded = True
        elif reason not in ("empty_text", "no_student", "bad_model", "no_tokenizer"):
            self.logprobs_seen = True
            self.model_loaded = True

    # -- requests
    def route(self, text: str, context: list[dict] | None = None) -> dict:
        """Decide (queue, deadline), ask the chat model on a fallback, log once, count; the response body."""
        arrived = time.perf_counter()
        decision, queue_ms = self.queue.submit(text, self.config.deadline_s)
        if decision.skill == FALLBACK_SKILL and self.chat is not None and decision.reason != "empty_text":
            self._answer(text, context, decision)
        decision.latency_ms = round((time.perf_counter() - arrived) * 1000, 1)
        if self.log is not None:
            self.log.append({**_log_record(self.router, text, decision), "queue_ms": queue_ms})
        self.metrics.record(decision, queue_ms)
        return {**decision.to_dict(), "queue_ms": queue_ms, "model": self._model_name()}

    def _answer(self, text: str, context: list[dict] | None, decision: Decision) -> None:
        try:
            decision.reply = self.chat.answer(text, context)
        except Exception as err:  # noqa: BLE001 -- the chat model being down is reported, not raised
            extra = f"fallback chat failed: {type(err).__name__}: {err}"
            decision.detail = f"{decision.detail}; {extra}" if decision.detail else extra

    def _model_name(self) -> str:
        return getattr(self.router.backend, "model_version", "?")

    # -- health and metrics
    def health(self) -> tuple[int, dict]:
        c = self.config
        version = ollama_version(c.ollama, timeout_s=2.0) if self.backend_kind == "ollama" or self.chat else None
        if version:
            self.ollama_version = version
        by_version = has_logprobs(self.ollama_version)
        logprobs = self.logprobs_seen if self.logprobs_seen is not None else by_version
        problems = self._problems(version, logprobs)
        status = "ok" if not problems else ("starting" if problems == ["starting"] else "degraded")
        body = {
            "status": status, "problems": [p for p in problems if p != "starting"],
            "backend": self.backend_kind, "backend_why": self.backend_why,
            "model": c.model if self.backend_kind == "ollama" else c.gguf, "model_version": c.model_version or None,
            "model_loaded": self.model_loaded,
            "ollama": {"url": c.ollama, "reachable": version is not None, "version": self.ollama_version,
                       "logprobs": logprobs, "min_version_for_logprobs": ".".join(map(str, MIN_OLLAMA_LOGPROBS))},
            "threshold": self.router.threshold, "student": self.spec_info, "catalog_hash": self.router.catalog.hash,
            "queue": {"waiting": self.queue.waiting, "capacity": self.queue.capacity, "busy": self.queue.busy,
                      "workers": len(self.routers)},
            "deadline_s": c.deadline_s, "fallback_model": c.fallback_model or None,
            "decision_log": None if self.log is None else str(self.log.path),
            "uptime_s": round(time.monotonic() - self.started, 1), "version": package_version(),
        }
        return (200 if status == "ok" else 503), body

    def _problems(self, version: str | None, logprobs: bool | None) -> list[str]:
        problems = []
        unavailable = getattr(self.router, "unavailable", None)
        if unavailable:
            problems.append(f"{unavailable[0]}: {unavailable[1]}")
        if self.backend_kind == "ollama":
            if version is None:
                problems.append(f"Ollama does not answer at {self.config.ollama}")
            elif logprobs is False:
                problems.append(
                    f"Ollama {self.ollama_version} returns no token log-probabilities, so every request falls back "
                    f"(no_logprobs): upgrade Ollama to {'.'.join(map(str, MIN_OLLAMA_LOGPROBS))} or later, or route "
                    "the GGUF with llama-cpp-python (backend: llamacpp, gguf: PATH; docs/runtime.md)")
        if not problems and not self.model_loaded:
            problems.append("starting")
            if not self._warming.locked():  # Ollama answers now (it may have started after us): load the model
                self.warm_up_later()
        return problems

    def render_metrics(self) -> str:
        code, health = self.health()
        gauges = {
            "queue_waiting": ("Requests waiting for a worker.", self.queue.waiting),
            "queue_capacity": ("Most requests that can wait.", self.queue.capacity),
            "workers_busy": ("Workers routing right now.", self.queue.busy),
            "backend_up": ("1 when the backend answered the last request and Ollama answers /api/version.",
                           int(health["status"] == "ok")),
            "logprobs_ok": ("1 when the backend returns token log-probabilities (confidence).",
                            int(health["ollama"]["logprobs"] is not False)),
            "threshold": ("Confidence at or above which the student's label is acted on.", self.router.threshold),
            "decision_log_failures": ("Decision log writes that failed (full disk, read-only).",
                                      0 if self.log is None else self.log.failures),
            "uptime_seconds": ("Seconds since the service started.", health["uptime_s"]),
        }
        info = {"backend": self.backend_kind, "model": str(health["model"]), "model_version": self.config.model_version,
                "student": self.spec_info["name"], "catalog_hash": self.router.catalog.hash,
                "ollama_version": self.ollama_version or ""}
        return self.metrics.render(gauges, info)

    def close(self) -> None:
        self.queue.stop()
        if self.log is not None:
            self.log.close()
        for router in self.routers:  # a llama.cpp model holds its memory until closed
            llm = getattr(router.backend, "llm", None)
            if llm is not None:
                llm.close()


def _log_record(router: Router, text: str, decision: Decision) -> dict:
    """The decision log's line, in the format Router._log writes (tests/runtime/test_service.py keeps them equal)."""
    return {"text": text, "skill": decision.skill, "args": decision.args, "confidence": decision.confidence,
            "source": decision.source, "reason": decision.reason, "latency_ms": decision.latency_ms,
            "model": getattr(router.backend, "model_version", "?"), "proposal": decision.proposal}


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("droidhead-distill")
    except PackageNotFoundError:
        return "checkout"


# ---- HTTP ---------------------------------------------------------------------------------------------------


class BadRequest(Exception):
    pass


def parse_route_body(raw: bytes, config: ServiceConfig) -> tuple[str, list[dict]]:
    """`{"text": str, "context": [{"role", "content"}]}` checked; BadRequest names the field."""
    try:
        body = json.loads(raw or b"")
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BadRequest(f"body: not JSON ({getattr(err, 'msg', err)})") from None
    if not isinstance(body, dict):
        raise BadRequest("body: expected a JSON object")
    unknown = set(body) - {"text", "context"}
    if unknown:
        raise BadRequest(f"body: unknown field(s) {', '.join(sorted(unknown))} (expected text, context)")
    text = body.get("text")
    if not isinstance(text, str):
        raise BadRequest("text: required, a string")
    if len(text) > config.max_text_chars:
        raise BadRequest(f"text: {len(text)} characters, the most is {config.max_text_chars}")
    context = body.get("context") or []
    if not isinstance(context, list) or len(context) > config.max_context_turns or not all(
            isinstance(t, dict) and t.get("role") in ROLES and isinstance(t.get("content"), str) for t in context):
        raise BadRequest(f"context: expected a list of at most {config.max_context_turns} "
                         "{role: system|user|assistant, content: string}")
    return text, context


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a conductor reuses its connection
    server_version = "droidhead-router"
    timeout = 60  # a client that stops sending does not hold a thread forever
    service: RouterService  # set on the subclass the server builds

    def log_message(self, fmt: str, *args: Any) -> None:  # access lines at debug level only (journal noise)
        logger.debug("%s %s", self.address_string(), fmt % args)

    def _send(self, code: int, body: dict | str, content_type: str = "application/json") -> None:
        data = (json.dumps(body, ensure_ascii=False) if isinstance(body, dict) else body).encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.service.metrics.count_http(self.path.split("?")[0], code)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?")[0]
        if path == "/health":
            code, body = self.service.health()
            self._send(code, body)
        elif path == "/metrics":
            self._send(200, self.service.render_metrics(), "text/plain; version=0.0.4")
        else:
            self._send(404, {"error": f"{path}: not found (POST /route, GET /health, GET /metrics)"})

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?")[0]
        if path != "/route":
            self._drain()
            self._send(404, {"error": f"{path}: not found (POST /route)"})
            return
        try:
            length = int(self.headers.get("Content-Length") or -1)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            self._send(411, {"error": "Content-Length: required"})
            return
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._send(413, {"error": f"body: {length} bytes, the most is {MAX_BODY_BYTES}"})
            return
        try:
            text, context = parse_route_body(self.rfile.read(length), self.service.config)
        except BadRequest as err:
            self._send(400, {"error": str(err)})
            return
        try:
            self._send(200, self.service.route(text, context))
        except Exception as err:  # noqa: BLE001 -- one broken request must never take the service down
            logger.exception("route failed")
            self._send(500, {"error": f"{type(err).__name__}: {err}"})

    def _drain(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if 0 < length <= MAX_BODY_BYTES:
            self.rfile.read(length)


class Server(ThreadingHTTPServer):
    """A thread per connection, at most `max_connections` at once: the rest wait in the listen backlog."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], service: RouterService):
        self.service = service
        self._slots = threading.BoundedSemaphore(service.config.max_connections)
        handler = type("BoundHandler", (Handler,), {"service": service})
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        self._slots.acquire()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def start(config: ServiceConfig) -> tuple[Server, RouterService]:
    """Build the service and bind its socket (not yet serving): tests and main() share this."""
    version = ollama_version(config.ollama) if config.backend != "llamacpp" else None
    service = RouterService(config, ollama_version_now=version)
    try:
        server = Server(config.listen_address(), service)
    except OSError as err:
        service.close()
        fail("listen", f"cannot listen on {config.listen}: {err.strerror}")
    return server, service


def describe_start(service: RouterService, server: Server) -> str:
    c = service.config
    host, port = server.server_address[:2]
    lines = [f"router service on http://{host}:{port} (POST /route, GET /health, GET /metrics)",
             f"backend {service.backend_kind} ({service.backend_why}); model {service._model_name()}; "
             f"threshold {service.router.threshold:g}; deadline {c.deadline_s:g}s; queue {c.queue_size}; "
             f"workers {len(service.routers)}",
             f"Ollama at {c.ollama}: " + (f"version {service.ollama_version}" if service.ollama_version
                                          else "not answering (yet)"),
             f"decision log: {service.log.path if service.log else 'off'}; fallback chat: "
             f"{c.fallback_model or 'none (fallbacks carry no reply)'}"]
    if has_logprobs(service.ollama_version) is False and service.backend_kind == "ollama":
        lines.append(f"WARNING: Ollama {service.ollama_version} < {'.'.join(map(str, MIN_OLLAMA_LOGPROBS))} returns "
                     "no logprobs: every request will fall back (no_logprobs). Upgrade Ollama, or set backend: "
                     "llamacpp with gguf: PATH (docs/runtime.md)")
    return "\n".join(lines)


# ---- CLI ----------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m distill serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="YAML settings (what Ansible renders: /etc/droidhead/router-service.yaml)")
    flags = {
        "--student": ("student", str, "student dir (student.json + catalog.yaml)"),
        "--listen": ("listen", str, f"HOST:PORT (default {DEFAULT_LISTEN}: loopback only)"),
        "--backend": ("backend", str, "auto | ollama | llamacpp (default auto)"),
        "--ollama": ("ollama", str, "Ollama base URL (default http://127.0.0.1:11434)"),
        "--model": ("model", str, "the router student's name in Ollama (default router-student)"),
        "--model-version": ("model_version", str, "the deployed GGUF's version, for /health and the log"),
        "--gguf": ("gguf", str, "GGUF for the llamacpp backend (auto uses it when Ollama has no logprobs)"),
        "--threshold": ("threshold", float, "override the student's calibrated threshold"),
        "--deadline": ("deadline_s", float, "seconds per request, queue wait included (default 10)"),
        "--queue": ("queue_size", int, "requests that may wait for a worker (default 32)"),
        "--workers": ("workers", int, "concurrent routes (default 1)"),
        "--fallback-model": ("fallback_model", str, "the big chat model in Ollama that answers fallbacks"),
        "--fallback-url": ("fallback_url", str, "its Ollama, when not the router's"),
        "--persona": ("persona", str, "file with the chat model's system prompt"),
        "--log": ("decision_log", str, "decision log path, or off"),
    }
    for flag, (dest, kind, text) in flags.items():
        parser.add_argument(flag, dest=dest, type=kind, help=text)
    parser.add_argument("--no-warmup", dest="warmup", action="store_false", default=None,
                        help="skip the warm-up request at start")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every HTTP request")
    return parser


@cli
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    overrides = {k: v for k, v in vars(args).items() if k not in ("config", "verbose")}
    config = load_config(args.config, overrides)
    server, service = start(config)
    print(describe_start(service, server), flush=True)
    stopping = threading.Event()

    def on_signal(signum, frame):  # shutdown() waits for serve_forever: call it from another thread
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if config.warmup:
        threading.Thread(target=_warm_up_safely, args=(service,), daemon=True).start()
    else:
        service.model_loaded = True
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        service.close()
    print("router service stopped", flush=True)
    return 0


def _warm_up_safely(service: RouterService) -> None:
    try:
        service.warm_up()
    except Exception as err:  # noqa: BLE001 -- /health reports what is wrong; the service keeps running
        logger.warning("warm-up failed: %s: %s", type(err).__name__, err)


def serve_in_thread(config: ServiceConfig) -> tuple[Server, RouterService, threading.Thread]:
    """For tests and examples: the service on a background thread (`server.shutdown()` stops it)."""
    server, service = start(config)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    if config.warmup:
        _warm_up_safely(service)
    else:
        service.model_loaded = True
    return server, service, thread


__all__ = ["MIN_OLLAMA_LOGPROBS", "RouterService", "ServiceConfig", "load_config", "main", "serve_in_thread"]
