"""The ``minimal`` spec fixture is shared with tests/spec (spec files: ``tests.support.write_spec``)."""

from tests.spec.conftest import minimal  # noqa: F401
