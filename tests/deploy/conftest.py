from tests.support.deploy import sandbox, sshd  # noqa: F401 (fixtures)
