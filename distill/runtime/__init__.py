"""What the robot installs: route a text with the router student, decide, log. No MLX, torch or transformers.

    from distill.runtime import Router
    router = Router.from_student("models/router_student_mlx", ollama="http://127.0.0.1:11434", model="router-student")
    decision = router.route("turn your eyes red")
"""

from .backends import LlamaCppBackend, OllamaBackend, RawPrediction
from .decisions import DecisionLog
from .router import Decision, FallbackChat, Router

__all__ = ["Decision", "DecisionLog", "FallbackChat", "LlamaCppBackend", "OllamaBackend", "RawPrediction", "Router"]
