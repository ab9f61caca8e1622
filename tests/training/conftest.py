from tests.support.data import small_routes  # noqa: F401 (fixture)
