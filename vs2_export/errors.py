"""Boundary errors: every one says what was expected and what came (docs/design.md, Conventions).

The CLI turns them into one line and exit code 2; a failed check (parity) is exit code 1.
"""


class Vs2Error(ValueError):
    """Bad input at a boundary: a file, an option, an array, a model."""


class CheckFailed(Exception):
    """A check ran and its verdict is 'fail' (parity, tolerances). Exit code 1.

    `report` carries the full result (verify's VerifyReport), so a caller that wants the report
    on failure, like `vs2 verify --json`, still has it."""

    def __init__(self, message: str, report: object = None):
        super().__init__(message)
        self.report = report
