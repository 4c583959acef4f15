"""core.answering: which destinations answered a dial recently."""

from __future__ import annotations

import ipaddress

from kubepresence.rootd.core.answering import AnsweringDestinations

WEB = (ipaddress.ip_address("10.96.5.5"), 80)
DB = (ipaddress.ip_address("10.96.5.6"), 5432)


def test_nothing_answers_before_a_dial_did() -> None:
    assert not AnsweringDestinations().answers(WEB, 0.0)


def test_an_answer_counts_for_the_ttl_and_is_renewed_by_the_next() -> None:
    table = AnsweringDestinations(ttl=30.0)
    table.answered(WEB, 100.0)
    assert table.answers(WEB, 130.0)
    table.answered(WEB, 125.0)
    assert table.answers(WEB, 155.0)
    assert not table.answers(WEB, 155.1)
    assert len(table) == 0  # an expired answer is dropped when asked


def test_a_failure_forgets_the_destination() -> None:
    table = AnsweringDestinations()
    table.answered(WEB, 1.0)
    table.answered(DB, 1.0)
    table.failed(WEB)
    table.failed(WEB)  # twice: nothing to forget
    assert not table.answers(WEB, 2.0)
    assert table.answers(DB, 2.0)


def test_the_least_recently_answering_go_first() -> None:
    table = AnsweringDestinations(capacity=2)
    third = (ipaddress.ip_address("10.96.5.7"), 8080)
    table.answered(WEB, 1.0)
    table.answered(DB, 2.0)
    table.answered(WEB, 3.0)  # WEB is now the newest
    table.answered(third, 4.0)
    assert (table.answers(WEB, 5.0), table.answers(DB, 5.0), table.answers(third, 5.0)) == (
        True,
        False,
        True,
    )
