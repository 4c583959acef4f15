"""The command line's own checks of names and subnets."""

from __future__ import annotations

import pytest

from kubepresence.cli.core.arguments import (
    MAX_LABEL,
    address_problem,
    cidr_problem,
    first_problem,
    label_problem,
)


@pytest.mark.parametrize("name", ["a", "web", "my-app-2", "0x", "a" * MAX_LABEL])
def test_valid_names(name: str) -> None:
    assert label_problem("namespace", name) is None


@pytest.mark.parametrize(
    "name", ["", "Web", "my_app", "-web", "web-", "a b", "a.b", "ns/web", "a" * (MAX_LABEL + 1)]
)
def test_invalid_names_say_what_and_why(name: str) -> None:
    problem = label_problem("--name", name)
    assert problem is not None
    assert problem.startswith(f"--name {name!r} is not a valid name")


@pytest.mark.parametrize("cidr", ["10.0.0.0/16", "10.1.2.3/32", "10.1.2.3", "fd00::/64", "::1"])
def test_valid_cidrs(cidr: str) -> None:
    assert cidr_problem("--also-proxy", cidr) is None


@pytest.mark.parametrize(
    "cidr", ["", "10.1.2", "10.0.0.0/33", "everything", "fd00::/129", "1.2.3.4/x"]
)
def test_invalid_cidrs_say_which_option(cidr: str) -> None:
    problem = cidr_problem("--never-proxy", cidr)
    assert problem is not None
    assert problem.startswith(f"--never-proxy {cidr!r} is not a CIDR")


def test_first_problem() -> None:
    assert first_problem([None, None]) is None
    assert first_problem([None, "b", "c"]) == "b"


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "localhost", "db.example.test", "h-1."])
def test_valid_addresses(address: str) -> None:
    assert address_problem("--address", address) is None


@pytest.mark.parametrize("address", ["", "not an address", "a_b", "-x", "x" * 64, "a..b"])
def test_invalid_addresses(address: str) -> None:
    problem = address_problem("--address", address)
    assert problem == f"--address {address!r} is neither an IP address nor a host name"
