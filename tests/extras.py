"""Optional extras in the tests: a missing one skips the tests that need it, except where the
extra is meant to be installed (`make test` sets VS2_REQUIRE_EXTRAS=1, as CI runs it): there a
broken install fails loudly instead of passing as a skip."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


def import_extra(module: str, extra: str) -> ModuleType:
    """`module` from the [extra] install, or a skip (a failure under VS2_REQUIRE_EXTRAS)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if os.environ.get("VS2_REQUIRE_EXTRAS"):
            pytest.fail(f"VS2_REQUIRE_EXTRAS is set but the [{extra}] extra is missing: {exc}",
                        pytrace=False)
        pytest.skip(f"the [{extra}] extra is not installed", allow_module_level=True)
