from tests.support.runtime import fake_server, smollm2_backend, untrained_student  # noqa: F401 (fixtures)
