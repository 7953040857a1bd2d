"""The spec fixtures (``minimal``, ``write_spec``) are shared with tests/spec."""

from tests.spec.conftest import minimal, write_spec  # noqa: F401
