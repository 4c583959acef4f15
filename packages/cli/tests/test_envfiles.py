"""Environment files are read back exactly by the tool of their syntax.

Scenarios:
- `--env-file` (dotenv): python-dotenv's `dotenv_values` (default interpolation, reading the
  file from disk) gives back every value: `$`, `${NAME}`, quotes, backslashes (a trailing one
  too), newlines, carriage returns, unicode;
- `--env-syntax sh`: `. FILE` in /bin/sh exports every value exactly (one shell per example);
- `--env-syntax docker`: docker's `--env-file` reader (a faithful port of docker's
  `opts.parseKeyValueFile` below; no docker engine here) gives back every value it can
  carry; a value with a newline, one ending in a carriage return and a line too long are
  refused, naming the variable;
- `--env-json`: JSON, sorted;
- a name a syntax cannot carry is refused naming it; an unknown syntax is refused.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from dotenv import dotenv_values
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubepresence.cli.core.envfiles import (
    DOCKER_MAX_LINE,
    EnvFileError,
    render_docker,
    render_dotenv,
    render_json,
    render_sh,
    renderer,
)

# What sh itself sets or reads (the test reads `env` after `. FILE`).
SHELL_OWN = {"PWD", "OLDPWD", "IFS", "PS1", "PS2", "PS4", "OPTIND", "PPID", "ENV", "HOME", "_"}
shell_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True).filter(
    lambda n: n not in SHELL_OWN
)
# Kubernetes allows any printable name without '='; dotenv and docker carry more than sh.
dotenv_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-]{0,20}", fullmatch=True)
# Values as a container can have them: any text but NUL (and no lone surrogates: not UTF-8).
tricky = st.sampled_from(["$", "{", "}", "${", "${A}", "\\", "'", '"', "\n", "\r", ":-", "#", " "])
values = st.lists(
    st.one_of(tricky, st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0")))
).map("".join)
fast = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- dotenv: python-dotenv itself -----------------------------------------------------------


@fast
@given(st.dictionaries(dotenv_names, values, max_size=8))
def test_python_dotenv_reads_back_every_value(
    tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]
) -> None:
    path = tmp_path_factory.mktemp("dotenv") / "app.env"
    path.write_text(render_dotenv(env), encoding="utf-8")
    assert dotenv_values(path) == env


@pytest.mark.parametrize(
    "value",
    ["$HOME", "${HOME}", "${HOME:-x}", "$${X}", "a\\", "\\", "\\'", "it's", "x\r\ny", "${:-$}"],
)
def test_python_dotenv_reads_back_the_hard_cases(tmp_path: Path, value: str) -> None:
    path = tmp_path / "app.env"
    path.write_text(render_dotenv({"V": value, "W": "after"}), encoding="utf-8")
    assert dotenv_values(path) == {"V": value, "W": "after"}


def test_dotenv_shape() -> None:
    text = render_dotenv({"GREETING": "say 'hi'\nthen $LEAVE", "EMPTY": "", "CR": "a\rb"})
    assert text == "CR=\"a\\rb\"\nEMPTY=''\nGREETING='say \\'hi\\'\nthen $LEAVE'\n"


# --- sh: /bin/sh itself ---------------------------------------------------------------------


def sh_reads(path: Path) -> dict[str, str]:
    """What `. FILE` exports in /bin/sh, from an empty environment (env -0: exact)."""
    done = subprocess.run(
        ["/bin/sh", "-c", '. "$1" && exec /usr/bin/env -0', "sh", str(path)],
        env={},
        capture_output=True,
        timeout=10,
        check=True,
    )
    pairs = (item.split(b"=", 1) for item in done.stdout.split(b"\0") if item)
    return {k.decode(): v.decode() for k, v in pairs if k.decode() not in SHELL_OWN}


@pytest.mark.timeout(30)  # a shell per example
@fast
@given(st.dictionaries(shell_names, values, max_size=12))
def test_sh_reads_back_every_value(
    tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]
) -> None:
    path = tmp_path_factory.mktemp("sh") / "app.sh"
    path.write_text(render_sh(env), encoding="utf-8")
    assert sh_reads(path) == env


def test_sh_refuses_names_a_shell_cannot_set() -> None:
    with pytest.raises(EnvFileError, match=r"'my\.var' cannot be written for sh"):
        render_sh({"my.var": "x"})


# --- docker: docker's own rules -------------------------------------------------------------

# Go's unicode.IsSpace (White_Space), which TrimLeftFunc strips from each line's start.
GO_SPACE = set("\t\n\v\f\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | {
    chr(c) for c in range(0x2000, 0x200B)
}


def docker_reads(data: bytes) -> dict[str, str]:
    """docker's `opts.parseKeyValueFile` (cli/opts/file.go), its bufio.Scanner included:
    lines split at \\n, one trailing \\r dropped, a line of 64 KiB or more is an error, the
    first line's BOM dropped, leading white space dropped, `#` lines and empty lines
    skipped, NAME=VALUE cut at the first `=`, the value kept verbatim; a name with a space
    or tab is an error. (A line without `=` reads the caller's environment: not written.)"""
    raw_lines = data.split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()  # ScanLines: the final empty token is not a line
    env: dict[str, str] = {}
    for number, raw in enumerate(raw_lines, start=1):
        if len(raw) >= DOCKER_MAX_LINE:
            raise ValueError("bufio.Scanner: token too long")
        raw = raw.removesuffix(b"\r")
        if number == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        line = raw.decode("utf-8").lstrip("".join(GO_SPACE))
        if not line or line[0] == "#":
            continue
        key, sep, value = line.partition("=")
        if not key:
            raise ValueError(f"no variable name on line {line!r}")
        if " " in key or "\t" in key:
            raise ValueError(f"variable {key!r} contains whitespaces")
        assert sep, "kubepresence never writes a NAME without a value"
        env[key] = value
    return env


docker_values = values.filter(lambda v: "\n" not in v and not v.endswith("\r"))


@pytest.mark.timeout(30)  # a reader process per example
@fast
@given(st.dictionaries(dotenv_names, docker_values, max_size=12))
def test_docker_reads_back_every_value_it_can_carry(env: dict[str, str]) -> None:
    assert docker_reads(render_docker(env).encode()) == env


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"CERT": "line1\nline2"}, "CERT has a newline, which docker's --env-file cannot carry"),
        ({"TRAIL": "dos\r"}, "TRAIL ends with a carriage return, which docker's --env-file drops"),
        ({"BIG": "x" * DOCKER_MAX_LINE}, "BIG is longer than docker's --env-file reads"),
        ({"#NAME": "x"}, "'#NAME' cannot be written as a docker env-file variable name"),
    ],
)
def test_docker_refuses_what_it_cannot_carry(env: dict[str, str], reason: str) -> None:
    with pytest.raises(EnvFileError) as raised:
        render_docker({"OK": "fine", **env})
    assert str(raised.value).startswith(reason)


def test_the_docker_reader_is_docker_s() -> None:
    """The port keeps docker's edges (so the round trip above could fail)."""
    text = "\ufeff  A= spaced \r\n# c\n\n\tB=x=y\nC=\n"
    assert docker_reads(text.encode()) == {"A": " spaced ", "B": "x=y", "C": ""}
    with pytest.raises(ValueError, match="whitespaces"):
        docker_reads(b"A B=1\n")


# --- json, names, syntaxes ------------------------------------------------------------------


def test_json_is_sorted_and_exact() -> None:
    env = {"B": "two\nlines", "A": "ünïcode"}
    assert json.loads(render_json(env)) == env
    assert render_json(env).index('"A"') < render_json(env).index('"B"')


def test_unwritable_dotenv_names() -> None:
    with pytest.raises(EnvFileError, match="'HAS SPACE' cannot be written as a dotenv"):
        render_dotenv({"HAS SPACE": "x"})


def test_syntaxes() -> None:
    assert renderer("sh") is render_sh
    assert renderer("docker") is render_docker
    assert renderer("dotenv") is render_dotenv
    with pytest.raises(EnvFileError, match="unknown env syntax 'yaml'"):
        renderer("yaml")
