"""Offline test doubles that speak the real protocols on loopback: the teacher (OpenAI chat API), Ollama (its
HTTP API and CLI) and the Go-template renderer Ollama's TEMPLATE needs. Never imported by distill.runtime."""
