"""Environment files round-trip every value an app container can have."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubepresence.cli.core.envfiles import EnvFileError, parse_dotenv, render_dotenv, render_json

names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True)
values = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"))


@given(st.dictionaries(names, values, max_size=12))
def test_dotenv_round_trip(env: dict[str, str]) -> None:
    assert parse_dotenv(render_dotenv(env)) == env


def test_dotenv_shape() -> None:
    text = render_dotenv({"GREETING": 'say "hi"\nthen $LEAVE', "EMPTY": "", "SPACED": "a b"})
    assert text == ('EMPTY=""\nGREETING="say \\"hi\\"\\nthen \\$LEAVE"\nSPACED="a b"\n')


def test_json_is_sorted_and_exact() -> None:
    env = {"B": "two\nlines", "A": "ünïcode"}
    assert json.loads(render_json(env)) == env
    assert render_json(env).index('"A"') < render_json(env).index('"B"')


def test_reads_common_hand_written_forms() -> None:
    text = "# comment\nexport A=plain # trailing\nB='single $quoted'\n\nC=\"x\\ty\"\n"
    assert parse_dotenv(text) == {"A": "plain", "B": "single $quoted", "C": "x\ty"}


@pytest.mark.parametrize("text", ["NOEQUALS", "1BAD=x", 'A="open', "A='open"])
def test_unreadable_lines(text: str) -> None:
    with pytest.raises(EnvFileError, match="line 1"):
        parse_dotenv(text)


def test_unwritable_names() -> None:
    with pytest.raises(EnvFileError, match="cannot be written"):
        render_dotenv({"HAS SPACE": "x"})
