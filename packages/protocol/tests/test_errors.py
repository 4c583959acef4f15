"""Error categories survive the trip through a gRPC status."""

from __future__ import annotations

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from kubepresence.protocol.errors import (
    Category,
    ClusterError,
    ConfigError,
    InternalError,
    KubepresenceError,
    NotFoundError,
    UserError,
    from_grpc_error,
    to_grpc_error,
)


@pytest.mark.parametrize(
    "error",
    [
        UserError("bad port"),
        ConfigError("no kubeconfig"),
        ClusterError("apiserver down"),
        InternalError("bug"),
    ],
)
def test_category_and_message_round_trip(error: KubepresenceError) -> None:
    back = from_grpc_error(to_grpc_error(error))
    assert back.category is error.category
    assert back.message == error.message


@pytest.mark.parametrize("category", Category)
def test_every_category_has_its_own_status_and_comes_back(category: Category) -> None:
    sent = to_grpc_error(KubepresenceError("x", category))
    assert from_grpc_error(sent).category is category
    others = [c for c in Category if c is not category]
    assert all(to_grpc_error(KubepresenceError("x", c)).status != sent.status for c in others)


@pytest.mark.parametrize("status", [s for s in Status if s is not Status.OK])
def test_every_status_a_peer_sends_maps_to_a_category(status: Status) -> None:
    assert from_grpc_error(GRPCError(status, "x")).category in Category


def test_an_rpc_the_peer_lacks_blames_the_cluster() -> None:
    """An older traffic manager: the daemons come from the CLI's own installation."""
    assert from_grpc_error(GRPCError(Status.UNIMPLEMENTED)).category is Category.CLUSTER


def test_foreign_statuses_map_to_a_category() -> None:
    assert from_grpc_error(GRPCError(Status.NOT_FOUND, "x")).category is Category.USER
    assert from_grpc_error(GRPCError(Status.DEADLINE_EXCEEDED)).category is Category.CLUSTER
    assert from_grpc_error(GRPCError(Status.UNKNOWN, "boom")).category is Category.INTERNAL


def test_status_without_message_still_says_something() -> None:
    assert from_grpc_error(GRPCError(Status.UNAVAILABLE)).message == "unavailable"


def test_specific_status_overrides_the_category_status() -> None:
    error = to_grpc_error(NotFoundError("session expired"))
    assert error.status is Status.NOT_FOUND
    assert from_grpc_error(error).category is Category.USER


def test_explicit_category_overrides_the_class_default() -> None:
    assert KubepresenceError("x", Category.USER).category is Category.USER
    assert KubepresenceError("x").category is Category.INTERNAL
