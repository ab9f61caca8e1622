#!/usr/bin/env python3
"""Per-route latency of the GGUF router student through the Router, against the floor of llama.cpp alone;
and of the same student behind (the stand-in) Ollama's HTTP API, against that path's own floor.

The Router path is everything a conductor pays: chat template, tokenization, catalog grammar, greedy decoding,
per-token log-probabilities, JSON parsing, schema validation, confidence. The floor is the same llama.cpp work
with nothing around it, on a second copy of the model: `Llama.eval` of the same prompt tokens (the same
split: shared system prefix cached, the request's own suffix as one batch), which yields the first label token,
then of each label token but the last, one at a time (the least llama.cpp work that produces the label's
tokens). "warm" keeps the shared prefix in the KV cache (the steady state on the robot); "cold" evaluates it
again for every request. Both paths alternate text by text, so a busy CPU hits both alike. p50 and p95 of each,
and the ratio of the p50s (goal <= 1.15x).

Ollama path (`--no-ollama` skips it): the stand-in `ollama serve` (tools/standin-ollama, llama.cpp inside, as
the demo deploys it) with the student created from `python -m distill modelfile`, routed with
`OllamaBackend` (what the robot runs). Its floor: the llama.cpp floor of the same tokens plus one HTTP round
trip to the same server (`GET /api/version`). The breakdown splits each request into the server's own
`total_duration` (prompt eval, generation with logprobs and grammar) and what is around it (HTTP, JSON,
template rendering, grammar building).

Also: how many prompt tokens the student needs against the teacher's catalog prompt (distill.teacher.collect's
system prompt, the same user text, the student's tokenizer), what prefilling the teacher prompt would cost on
the student model, and Q4 size / f16 size when both GGUFs are given. Prints a Markdown table, then one JSON line.

    python bench/route_latency.py [--gguf gguf/router-student.gguf] [--f16 gguf/router-student.f16.gguf]
                                  [--student models/router_student_mlx] [--n 8] [--repeat 3] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from distill.benchreport import Row  # noqa: E402
from distill.demo import STANDIN_OLLAMA  # noqa: E402
from distill.runtime.router import DEFAULT_GGUF, DEFAULT_STUDENT, Router  # noqa: E402
from distill.runtime.llamacpp import load_llama  # noqa: E402
from distill.student import student_json_path  # noqa: E402
from distill.skills import Catalog  # noqa: E402


def teacher_system_prompt(catalog: Catalog) -> str:
    """The collection stage's catalog prompt (what the teacher reads for every label)."""
    from distill.prompting import teacher_route_prompt

    return teacher_route_prompt(catalog)


def bench_texts(catalog: Catalog, n: int) -> list[str]:
    texts = [example["text"] for skill in catalog.skills.values() for example in skill.examples]
    # Round-robin over skills so a small n still covers short and long labels.
    by_skill = [[e["text"] for e in s.examples] for s in catalog.skills.values()]
    ordered = [group[i] for i in range(max(map(len, by_skill))) for group in by_skill if i < len(group)]
    return (ordered or texts)[:n]


class Floor:
    """llama.cpp alone: evaluate given tokens with the same prefix split, nothing else."""

    def __init__(self, gguf: Path, prefix: list[int], n_threads: int):
        self.llm = load_llama(gguf, n_ctx=2048, n_threads=n_threads)
        self.prefix = prefix

    def run(self, prompt: list[int], label: list[int], warm: bool) -> float:
        llm, size = self.llm, len(self.prefix)
        started = time.perf_counter()
        shares_prefix = size and prompt[:size] == self.prefix
        if warm and shares_prefix and llm.n_tokens >= size and list(llm.input_ids[:size]) == self.prefix:
            llm.n_tokens = size
        else:
            llm.reset()
            if shares_prefix:
                llm.eval(self.prefix)
            else:
                size = 0
        llm.eval(prompt[size:])
        for token in label:
            llm.eval([token])
        return (time.perf_counter() - started) * 1000


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def measure(router: Router, floor: Floor, texts: list[str], repeat: int, warm: bool) -> dict:
    backend = router.backend
    routed, floored, label_tokens, decisions, by_text = [], [], [], {}, {}
    for _ in range(repeat):
        for text in texts:
            if not warm:
                backend.llm.reset()
            decision = router.route(text)
            label = [p.token for p in backend.last_pieces if p.token is not None]  # the decoded ones (forced_tail)
            routed.append(decision.student_ms)
            # the prompt's evaluation yields the first label token; each later one needs its predecessor evaluated
            floored.append(floor.run(backend.prompt_tokens(text), label[:-1], warm))
            by_text.setdefault(text, []).append(floored[-1])
            label_tokens.append(len(label))
            decisions[text] = [decision.skill, decision.args, round(decision.confidence, 6)]
    return {
        "router_median_ms": statistics.median(routed), "router_p90_ms": percentile(routed, 0.9),
        "floor_median_ms": statistics.median(floored), "floor_p90_ms": percentile(floored, 0.9),
        "router_p50_ms": percentile(routed, 0.5), "router_p95_ms": percentile(routed, 0.95),
        "floor_p50_ms": percentile(floored, 0.5), "floor_p95_ms": percentile(floored, 0.95),
        "ratio_p50": percentile(routed, 0.5) / percentile(floored, 0.5),
        "ratio_p95": percentile(routed, 0.95) / percentile(floored, 0.95),
        "overhead_ratio": statistics.median(r / f for r, f in zip(routed, floored)),
        "label_tokens_mean": statistics.mean(label_tokens), "routes": len(routed), "decisions": decisions,
        "floor_by_text": {t: statistics.median(v) for t, v in by_text.items()},
    }


# ---- the Ollama path ------------------------------------------------------------------------------------------

OLLAMA_MODEL = "router-student"


@contextlib.contextmanager
def standin_ollama(student: str, gguf: Path, home: Path):
    """The stand-in `ollama serve` on a free loopback port with the student created from its Modelfile."""
    import socket
    import subprocess

    from distill.blas import env_with_openblas

    home.mkdir(parents=True, exist_ok=True)
    env = env_with_openblas({**os.environ, "OLLAMA_STANDIN_HOME": str(home), "OLLAMA_STANDIN_PYTHON": sys.executable,
                             "PYTHONPATH": str(ROOT)})
    modelfile = home / "Modelfile"
    subprocess.run([sys.executable, "-m", "distill", "modelfile", "--student", student, "--gguf", str(gguf),
                    "--out", str(modelfile)], check=True, env=env, capture_output=True, cwd=ROOT)
    subprocess.run([str(STANDIN_OLLAMA), "create", OLLAMA_MODEL, "-f", str(modelfile)], check=True, env=env,
                   capture_output=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with (home / "serve.log").open("w") as log:
        proc = subprocess.Popen([str(STANDIN_OLLAMA), "serve"], env={**env, "OLLAMA_HOST": f"127.0.0.1:{port}"},
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"stand-in ollama did not start: {(home / 'serve.log').read_text()[-500:]}")
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def measure_ollama(url: str, student: str, texts: list[str], repeat: int, floors: dict[str, float],
                   local: dict) -> dict:
    """OllamaBackend (the robot's path) per route, the server's own share, and the path's floor."""
    import requests

    from distill.runtime.backends import OllamaBackend

    backend = OllamaBackend.from_student(student, url, OLLAMA_MODEL, timeout_s=600)
    backend.predict(texts[0])  # Ollama loads the model on the first request
    session = requests.Session()
    http = []
    for _ in range(10):
        started = time.perf_counter()
        session.get(f"{url}/api/version", timeout=30).raise_for_status()
        http.append((time.perf_counter() - started) * 1000)
    http_ms = statistics.median(http)
    routed, server, prompt_eval, generation, floor, same = [], [], [], [], [], 0
    for _ in range(repeat):
        for text in texts:
            pred = backend.predict(text)
            timing = backend.last_timings or {}
            routed.append(pred.latency_ms)
            server.append(timing.get("total_ms", float("nan")))
            prompt_eval.append(timing.get("prompt_eval_ms", float("nan")))
            generation.append(timing.get("eval_ms", float("nan")))
            floor.append(floors[text] + http_ms)
            label = pred.label
            same += [label.skill if label else "chat", label.args if label else {}] == local[text][:2]
    return {
        "route_p50_ms": percentile(routed, 0.5), "route_p95_ms": percentile(routed, 0.95),
        "floor_p50_ms": percentile(floor, 0.5), "floor_p95_ms": percentile(floor, 0.95),
        "ratio_p50": percentile(routed, 0.5) / percentile(floor, 0.5),
        "http_roundtrip_ms": http_ms, "server_total_p50_ms": percentile(server, 0.5),
        "server_prompt_eval_p50_ms": percentile(prompt_eval, 0.5), "server_eval_p50_ms": percentile(generation, 0.5),
        "outside_server_p50_ms": percentile([r - s for r, s in zip(routed, server)], 0.5),
        "routes": len(routed), "same_labels_as_llama_cpp": same,
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gguf", help=f"the (Q4) student GGUF (default {DEFAULT_GGUF}, else the SmolLM2 base)")
    parser.add_argument("--f16", help="the f16 GGUF of the same student, for the size ratio")
    parser.add_argument("--student", help=f"student dir (default {DEFAULT_STUDENT} when it exists)")
    parser.add_argument("--n", type=int, default=8, help="distinct texts (catalog examples)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds over the texts")
    parser.add_argument("--threads", type=int, help="llama.cpp threads (default: half the cores)")
    parser.add_argument("--quick", action="store_true", help="4 texts, 1 round")
    parser.add_argument("--no-ollama", action="store_true", help="skip the Ollama path (stand-in ollama serve)")
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    args = parser.parse_args()
    if args.quick:
        args.n, args.repeat = min(args.n, 4), 1
    return args


def main() -> None:
    args = parse_args()
    student = args.student or (str(DEFAULT_STUDENT) if student_json_path(DEFAULT_STUDENT).is_file() else None)
    gguf = Path(args.gguf) if args.gguf else DEFAULT_GGUF
    if not args.gguf and not gguf.is_file():
        from distill.bases.smollm2 import smollm2_gguf

        gguf = smollm2_gguf()
        print(f"note: no {DEFAULT_GGUF}; measuring the untrained base {gguf.name}", file=sys.stderr)
    router = Router.from_student(student, gguf=gguf, threshold=0.0, log=None, timeout_s=600, n_threads=args.threads,
                                 untrained=True)
    backend, catalog = router.backend, router.catalog
    prefix = backend.shared_prefix(router.system_prompt)
    floor = Floor(gguf, prefix, backend.llm.n_threads)
    texts = bench_texts(catalog, args.n)
    router.route(texts[0])  # load pages, build the prefix cache
    floor.run(backend.prompt_tokens(texts[0]), [], warm=True)

    warm = measure(router, floor, texts, args.repeat, warm=True)
    floors = warm.pop("floor_by_text")
    cold = measure(router, floor, texts, 1, warm=False)
    cold.pop("floor_by_text")
    ollama = None
    if student and not args.no_ollama:
        with tempfile.TemporaryDirectory(prefix="route-latency-ollama-") as home:
            with standin_ollama(student, gguf, Path(home)) as url:
                ollama = measure_ollama(url, student, texts, args.repeat, floors, warm["decisions"])

    teacher_system = teacher_system_prompt(catalog)
    student_tokens = [len(backend.prompt_tokens(t, router.system_prompt)) for t in texts]
    teacher_tokens = [len(backend.prompt_tokens(t, teacher_system)) for t in texts]
    teacher_floor = statistics.median(
        floor.run(backend.prompt_tokens(t, teacher_system), [], warm=False) for t in texts[:3])
    sizes = {"q4_bytes": gguf.stat().st_size}
    if args.f16:
        sizes["f16_bytes"] = Path(args.f16).stat().st_size
        sizes["q4_over_f16"] = sizes["q4_bytes"] / sizes["f16_bytes"]

    result = {
        "model": backend.model_version, "student": student, "threads": backend.llm.n_threads, "texts": len(texts),
        "warm": warm, "cold": cold,
        "student_prompt_tokens": statistics.mean(student_tokens),
        "teacher_prompt_tokens": statistics.mean(teacher_tokens),
        "prompt_token_ratio": statistics.mean(student_tokens) / statistics.mean(teacher_tokens),
        "teacher_prompt_prefill_cold_ms": teacher_floor, **sizes, "ollama": ollama,
    }
    result["summary"] = [row.to_dict() for row in summary_rows(result)]
    if not args.json:
        print_table(result)
    print(json.dumps(result))


PROMPT_RATIO_GOAL = 10  # a trained student needs no catalog in its prompt
LATENCY_GOAL = 1.15  # Router p50 / llama.cpp floor p50 (issue 16)


def summary_rows(r: dict) -> list[Row]:
    """Router vs the llama.cpp floor (p50 warm, p95 warm, cold), the Ollama path vs its floor, and the
    prompt-token saving against the teacher's (last)."""
    trained = bool(r.get("student"))
    what = f"`{r['model']}`" + ("" if trained else " (untrained base: no student yet)")
    w, c = r["warm"], r["cold"]
    ratio = r["teacher_prompt_tokens"] / r["student_prompt_tokens"]
    goal = f">= {PROMPT_RATIO_GOAL}x" + ("" if trained else " for a student")
    p50 = w.get("ratio_p50", w["overhead_ratio"])
    rows = [
        Row("routing", f"per-route latency p50, warm prefix, {what}",
            f"{w.get('router_p50_ms', w['router_median_ms']):.0f} ms",
            f"llama.cpp floor {w.get('floor_p50_ms', w['floor_median_ms']):.0f} ms", f"{p50:.2f}x",
            f"<= {LATENCY_GOAL}x", p50 <= LATENCY_GOAL),
    ]
    if "router_p95_ms" in w:
        rows.append(Row("routing", "per-route latency p95, warm prefix", f"{w['router_p95_ms']:.0f} ms",
                        f"llama.cpp floor {w['floor_p95_ms']:.0f} ms", f"{w['ratio_p95']:.2f}x"))
    rows.append(Row("routing", "per-route latency, cold prefix", f"{c['router_median_ms']:.0f} ms",
                    f"llama.cpp floor {c['floor_median_ms']:.0f} ms", f"{c['overhead_ratio']:.2f}x", "close to 1x"))
    o = r.get("ollama")
    if o:
        rows.append(Row("routing", "per-route latency p50 via (stand-in) Ollama's HTTP API", f"{o['route_p50_ms']:.0f} ms",
                        f"llama.cpp floor + HTTP round trip {o['floor_p50_ms']:.0f} ms", f"{o['ratio_p50']:.2f}x"))
    rows.append(Row("routing", "prompt tokens: teacher catalog prompt / student prompt" + ("" if trained else
                    " (no student yet: the base needs the brief catalog prompt)"),
                    f"{r['student_prompt_tokens']:.0f} tokens", f"teacher {r['teacher_prompt_tokens']:.0f} tokens",
                    f"{ratio:.1f}x", goal, ratio >= PROMPT_RATIO_GOAL if trained else None))
    return rows


def print_table(r: dict) -> None:
    w, c, o = r["warm"], r["cold"], r.get("ollama")
    rows = [
        ("model", f"`{r['model']}`" + ("" if r["student"] else " (untrained base, brief catalog prompt)")),
        ("routes measured (warm / cold)",
         f"{w['routes']} / {c['routes']} over {r['texts']} texts, {r['threads']} threads"),
        ("label tokens decoded (mean)", f"{w['label_tokens_mean']:.1f}"),
        ("Router, warm prefix: p50 / p95", f"{w['router_p50_ms']:.0f} / {w['router_p95_ms']:.0f} ms"),
        ("llama.cpp floor, warm prefix: p50 / p95", f"{w['floor_p50_ms']:.0f} / {w['floor_p95_ms']:.0f} ms"),
        ("Router / floor, warm: p50 / p95 (goal p50 <= 1.15x)", f"{w['ratio_p50']:.2f}x / {w['ratio_p95']:.2f}x"),
        ("Router, cold prefix: median", f"{c['router_median_ms']:.0f} ms (floor {c['floor_median_ms']:.0f} ms, "
                                        f"{c['overhead_ratio']:.2f}x)"),
    ]
    if o:
        rows += [
            ("via (stand-in) Ollama: p50 / p95", f"{o['route_p50_ms']:.0f} / {o['route_p95_ms']:.0f} ms"),
            ("its floor (llama.cpp floor + HTTP round trip {:.0f} ms): p50".format(o["http_roundtrip_ms"]),
             f"{o['floor_p50_ms']:.0f} ms = {o['ratio_p50']:.2f}x"),
            ("  inside the server (total_duration): p50; prompt eval / generation",
             f"{o['server_total_p50_ms']:.0f} ms; {o['server_prompt_eval_p50_ms']:.0f} / "
             f"{o['server_eval_p50_ms']:.0f} ms"),
            ("  around the server (HTTP, JSON, template, grammar building): p50", f"{o['outside_server_p50_ms']:.0f} ms"),
            ("  same label as the llama.cpp backend", f"{o['same_labels_as_llama_cpp']} of {o['routes']}"),
        ]
    rows += [
        ("prompt tokens: student / teacher", f"{r['student_prompt_tokens']:.0f} / {r['teacher_prompt_tokens']:.0f} = "
                                             f"{r['prompt_token_ratio']:.2f}"),
        ("prefill of the teacher prompt on this model, cold", f"{r['teacher_prompt_prefill_cold_ms']:.0f} ms"),
        ("GGUF size", f"{r['q4_bytes'] / 1e6:.1f} MB" + (f"; f16 {r['f16_bytes'] / 1e6:.1f} MB, Q4/f16 = "
                                                         f"{r['q4_over_f16']:.2f}" if "f16_bytes" in r else "")),
    ]
    print("| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
