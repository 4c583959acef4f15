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
    from kubepresence.cli.core.quickargs import parse

    quick_command = parse(sys.argv[1:], os.environ)
    if quick_command is not None:  # no typer: it costs a quick command most of its time
        from kubepresence.cli import quick

        sys.exit(quick.run(quick_command))
    import typer

    from kubepresence.cli import app as cli  # after COLUMNS: rich reads it when it draws
    from kubepresence.cli.unexpected import report_unexpected

    try:
        code = cli.app(prog_name="kubepresence", standalone_mode=False)
    except typer.Abort:
        sys.stderr.write("kubepresence: aborted\n")
        sys.exit(130)
    except typer.TyperException as error:
        # Usage errors: click would draw a usage line, a hint and a boxed message; a bad
        # flag gets one line, like every other failure, naming where the help is.
        line = usage_error_line(error)
        if line:  # empty: the help was shown for a bare command (no_args_is_help)
            sys.stderr.write(f"kubepresence: {line}\n")
        sys.exit(int(getattr(error, "exit_code", 2)))
    except Exception as error:  # noqa: BLE001 - the outermost boundary: a bug outside a command
        sys.exit(report_unexpected(error))
    sys.exit(code if isinstance(code, int) else 0)


def usage_error_line(error: Exception) -> str:
    format_message = getattr(error, "format_message", None)
    message = format_message() if callable(format_message) else str(error)
    context = getattr(error, "ctx", None)
    if not message or context is None:
        return str(message)
    return f"{message} (see '{context.command_path} --help')"


if __name__ == "__main__":
    main()
