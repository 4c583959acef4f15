"""Where the CLI writes: results on stdout as plain lines, messages for people on stderr.

Results are written without rich, so `version`, `status` and `list` do not pay for
importing it. Messages (colour, spinners) go through one rich console on stderr, made on
first use.
"""

from __future__ import annotations

import functools
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console


def say(text: str) -> None:
    """One result on stdout, as it is (no markup, no wrapping)."""
    sys.stdout.write(f"{text}\n")


@functools.cache
def err() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def plain(text: str) -> str:
    """`text` as rich markup that shows it as it is: "[Errno 111]" is data, not a style."""
    from rich.markup import escape

    return escape(text)


def fail(message: str) -> None:
    """The one line of a failed command, `kubepresence:` in red."""
    err().print(f"[red]kubepresence:[/red] {plain(message)}", markup=True)
