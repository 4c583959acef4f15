"""The quick commands' own reading of a command line (`core.quickargs`) agrees with
typer's: every line it takes, typer parses to the same values; every line typer refuses,
it leaves to typer."""

from __future__ import annotations

import itertools

import pytest
import typer

from kubepresence.cli.app import app
from kubepresence.cli.core.quickargs import COMPLETION_VARIABLE, QuickCommand, parse
from kubepresence.cli.core.rendering import OutputFormat

GROUP = typer.main.get_command(app)  # a click group (typer vendors click)

WORDS = [
    "-o", "json", "--output", "--output=yaml", "-ojson", "xml", "-n", "shop", "--namespace",
    "--namespace=web", "-i", "--intercepts", "-in", "--", "--help", "", "-o=json", "--out",
]  # fmt: skip
# Every command line of up to three of these words after each quick command.
LINES = [
    (command, *words)
    for command in ("version", "status", "list")
    for size in range(4)
    for words in itertools.product(WORDS, repeat=size)
]


def typer_reads(argv: tuple[str, ...]) -> QuickCommand | None:
    """What typer's parser makes of `argv` as a QuickCommand; None when it refuses it
    (or would print help instead of running the command)."""
    name, *rest = argv
    try:
        parent = GROUP.make_context("kubepresence", [name], resilient_parsing=False)
        command = GROUP.get_command(parent, name)  # type: ignore[attr-defined]
        context = command.make_context(name, list(rest), parent=parent)
    except typer.Exit:  # --help: drawn, not run
        return None
    except typer.TyperException:  # click's usage errors are typer's exceptions
        return None
    if context.args:
        return None
    params = context.params
    return QuickCommand(
        name,
        OutputFormat(params["output"]),
        namespace=params.get("namespace", ""),
        intercepts_only=params.get("intercepts_only", False),
    )


def test_every_line_taken_is_read_as_typer_reads_it() -> None:
    taken = 0
    for argv in LINES:
        quick = parse(argv, {})
        if quick is not None:
            taken += 1
            assert quick == typer_reads(argv), argv
    assert taken > 300  # the corpus does exercise the quick reading


def test_every_line_typer_refuses_is_left_to_it() -> None:
    for argv in LINES:
        if typer_reads(argv) is None:
            assert parse(argv, {}) is None, argv


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["status"], QuickCommand("status")),
        (["version", "-o", "json"], QuickCommand("version", OutputFormat.JSON)),
        (["status", "--output=yaml"], QuickCommand("status", OutputFormat.YAML)),
        (
            ["list", "-n", "shop", "-i", "-ojson"],
            QuickCommand("list", OutputFormat.JSON, namespace="shop", intercepts_only=True),
        ),
        (["list", "--namespace", "a", "--namespace", "b"], QuickCommand("list", namespace="b")),
    ],
)
def test_the_usual_spellings_are_quick(argv: list[str], expected: QuickCommand) -> None:
    assert parse(argv, {}) == expected


@pytest.mark.parametrize(
    "argv",
    [[], ["connect"], ["status", "--help"], ["list", "-in", "shop"], ["status", "-o"]],
)
def test_other_lines_are_typers(argv: list[str]) -> None:
    assert parse(argv, {}) is None


def test_a_completion_is_never_quick() -> None:
    assert parse(["status"], {COMPLETION_VARIABLE: "complete_bash"}) is None
