from tests.support.runtime import fake_server, smollm2_backend, untrained_student  # noqa: F401 (fixtures)
from tests.support.service import fake_ollama, standin_ollama, tiny_gguf  # noqa: F401 (fixtures)
