"""The command lines the quick commands run without typer (see `cli.quick`).

A line is taken only when it is, word for word, one typer would parse the same way:
`version`, `status` or `list` with their own options in the usual spellings. Anything
else (help, a typo, a missing value, combined short flags) is left to typer, which gives
it the same answer or its usual error; being left out costs only time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kubepresence.cli.core.rendering import OutputFormat

QUICK_COMMANDS = ("version", "status", "list")
COMPLETION_VARIABLE = "_KUBEPRESENCE_COMPLETE"  # set: the shell asks typer to complete
_FORMATS = {f.value: f for f in OutputFormat}
# option spellings → the field they set; per command
_VALUED = {
    "version": {"--output": "output", "-o": "output"},
    "status": {"--output": "output", "-o": "output"},
    "list": {"--output": "output", "-o": "output", "--namespace": "namespace", "-n": "namespace"},
}
_FLAGS = {"list": {"--intercepts": "intercepts_only", "-i": "intercepts_only"}}


@dataclass(frozen=True)
class QuickCommand:
    name: str  # one of QUICK_COMMANDS
    output: OutputFormat = OutputFormat.TEXT
    namespace: str = ""  # list
    intercepts_only: bool = False  # list


def parse(argv: Sequence[str], environment: Mapping[str, str]) -> QuickCommand | None:
    """The quick command `argv` (the words after the program's name) asks for; None
    when typer must read it (also for every completion: the words are the shell's)."""
    if COMPLETION_VARIABLE in environment or not argv or argv[0] not in QUICK_COMMANDS:
        return None
    name = argv[0]
    valued, flags = _VALUED[name], _FLAGS.get(name, {})
    values: dict[str, str] = {}
    set_flags: set[str] = set()
    words = list(argv[1:])
    while words:
        word = words.pop(0)
        if word in flags:
            set_flags.add(flags[word])
            continue
        spelling, value = _split(word, valued)
        if spelling is None:
            return None
        if value is None:
            if not words or words[0].startswith("-"):
                return None  # a missing value, or one that looks like an option
            value = words.pop(0)
        values[valued[spelling]] = value  # the last one wins, as in click
    output = _FORMATS.get(values.get("output", OutputFormat.TEXT.value))
    if output is None:
        return None
    return QuickCommand(
        name,
        output,
        namespace=values.get("namespace", ""),
        intercepts_only="intercepts_only" in set_flags,
    )


def _split(word: str, valued: dict[str, str]) -> tuple[str | None, str | None]:
    """(`--output`, "json") for `--output=json`, (`-o`, "json") for `-ojson`,
    (`-o`, None) for `-o` alone; (None, None) for anything else."""
    if word in valued:
        return word, None
    if word.startswith("--"):
        spelling, equals, value = word.partition("=")
        if equals and spelling in valued:
            return spelling, value
        return None, None
    if len(word) > 2 and word[:2] in valued:
        return word[:2], word[2:]
    return None, None
