"""The big chat model the router falls back to, in the robot's own Ollama, over plain HTTP (`requests`).

    chat = OllamaChat("http://127.0.0.1:11434", "llama3.2:3b", system_prompt=persona)
    chat.answer("why is the sky blue?", context=[{"role": "user", "content": "hi"}, ...])

Why not `FallbackChat` (distill.runtime.router): it goes through the `openai` client, which the robot's
runtime-only install does not have. Ollama's native `/api/chat` needs nothing but `requests` (already a core
dependency). `OpenAIChat` speaks the OpenAI-compatible `/v1/chat/completions` the same way, for a chat model
served elsewhere (llama-server, vLLM, the teacher box).

Both have `answer(text, context=None) -> str`; `Router(fallback=...)` calls `answer(text)`.
"""

from __future__ import annotations

from typing import Any

ROLES = ("system", "user", "assistant")


def chat_messages(system_prompt: str | None, context: list[dict] | None, text: str) -> list[dict]:
    """System prompt, then the conversation so far (the conductor's `context`), then this request."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages += [{"role": m["role"], "content": m["content"]} for m in context or []]
    return messages + [{"role": "user", "content": text}]


class OllamaChat:
    """A chat model in Ollama: `POST /api/chat`, not streamed."""

    def __init__(self, url: str, model: str, *, system_prompt: str | None = None, timeout_s: float = 60.0,
                 max_tokens: int = 200, keep_alive: str = "30m"):
        import requests

        self.url = url.rstrip("/")
        self.model = model
        self.system_prompt = system_prompt
        self.timeout_s = timeout_s
        self.max_tokens = max_tokens
        self.keep_alive = keep_alive
        self._session = requests.Session()

    def answer(self, text: str, context: list[dict] | None = None) -> str:
        """The model's reply; raises (requests errors, RuntimeError) when it cannot answer: the caller reports it."""
        body: dict[str, Any] = {"model": self.model, "messages": chat_messages(self.system_prompt, context, text),
                                "stream": False, "options": {"num_predict": self.max_tokens},
                                "keep_alive": self.keep_alive}
        response = self._session.post(f"{self.url}/api/chat", json=body, timeout=self.timeout_s)
        if response.status_code != 200:
            raise RuntimeError(f"{self.url}/api/chat: HTTP {response.status_code}: {response.text[:160]}")
        return str(response.json()["message"]["content"]).strip()


class OpenAIChat:
    """A chat model behind an OpenAI-compatible endpoint (`base_url` ends in /v1): `POST /chat/completions`."""

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, system_prompt: str | None = None,
                 timeout_s: float = 60.0, max_tokens: int = 200):
        import requests

        self.url = base_url.rstrip("/")
        self.model = model
        self.system_prompt = system_prompt
        self.timeout_s = timeout_s
        self.max_tokens = max_tokens
        self._session = requests.Session()
        if api_key:
            self._session.headers["Authorization"] = f"Bearer {api_key}"

    def answer(self, text: str, context: list[dict] | None = None) -> str:
        body = {"model": self.model, "messages": chat_messages(self.system_prompt, context, text),
                "max_tokens": self.max_tokens}
        response = self._session.post(f"{self.url}/chat/completions", json=body, timeout=self.timeout_s)
        if response.status_code != 200:
            raise RuntimeError(f"{self.url}/chat/completions: HTTP {response.status_code}: {response.text[:160]}")
        return str(response.json()["choices"][0]["message"]["content"] or "").strip()
