"""`kubepresence` console script."""

from __future__ import annotations

import os
import sys

# Help and errors are drawn by rich, which takes 80 columns when the output is not a
# terminal: option names get cut (`--manager-namesp…`) in `--help | less` or a script.
# Piped, draw them as wide as they need; a COLUMNS the user set still wins.
PIPED_COLUMNS = "200"


def main() -> None:
    if "COLUMNS" not in os.environ and not sys.stdout.isatty():
        os.environ["COLUMNS"] = PIPED_COLUMNS
    from kubepresence.cli.app import app  # after COLUMNS: rich reads it when it draws

    app(prog_name="kubepresence")


if __name__ == "__main__":
    main()
