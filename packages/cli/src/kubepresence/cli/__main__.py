"""`kubepresence` console script."""

from __future__ import annotations

from kubepresence.cli.app import app


def main() -> None:
    app(prog_name="kubepresence")


if __name__ == "__main__":
    main()
