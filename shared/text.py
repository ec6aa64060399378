"""Text a user typed: printable only, so no NUL or control byte reaches a database or a log."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

# C0 controls except tab, newline and carriage return; DEL; C1 controls. NUL is among them:
# PostgreSQL refuses it in text columns, which would otherwise surface as a 500.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# A one-line field (a name, an address) takes no line breaks or tabs either.
_CONTROL_OR_BREAK = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _no_controls(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters or NUL bytes")
    return value


def _one_line(value: str) -> str:
    if _CONTROL_OR_BREAK.search(value):
        raise ValueError("must be one line without control characters or NUL bytes")
    return value


# Free text over several lines (a description).
PlainText = Annotated[str, AfterValidator(_no_controls)]
# One line of text (a name, an address, an id a client chose).
OneLine = Annotated[str, AfterValidator(_one_line)]
