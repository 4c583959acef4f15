"""Resolving a client's DNS question inside the cluster: the wire format only.

The manager asks the cluster's DNS service the client's question (name and type) and
hands back the response code and each answer record packed on its own (uncompressed), so
the workstation can build its reply for whatever id and flags its own client used.
"""

from __future__ import annotations

import dnslib

MAX_NAME_LENGTH = 253


class BadQuestionError(ValueError):
    """The client's question is not a DNS question we can ask."""


def build_query(name: str, qtype: int, query_id: int) -> bytes:
    """A recursive query for `name` of type `qtype`."""
    label = name.rstrip(".")
    if not label or len(label) > MAX_NAME_LENGTH or any(not part for part in label.split(".")):
        raise BadQuestionError(f"{name!r} is not a valid DNS name")
    if not 0 < qtype < 65536:
        raise BadQuestionError(f"{qtype} is not a DNS query type")
    record = dnslib.DNSRecord(
        dnslib.DNSHeader(id=query_id, rd=1), q=dnslib.DNSQuestion(label + ".", qtype)
    )
    return bytes(record.pack())


def parse_response(data: bytes, query_id: int) -> tuple[int, list[bytes], bool]:
    """(rcode, answers each packed alone, truncated) of the reply to our query."""
    try:
        reply = dnslib.DNSRecord.parse(data)
    except dnslib.DNSError as error:
        raise BadQuestionError(f"malformed DNS reply: {error}") from error
    if reply.header.id != query_id:
        raise BadQuestionError("DNS reply for another query")
    answers = [_pack_alone(rr) for rr in reply.rr]
    return int(reply.header.rcode), answers, bool(reply.header.tc)


def _pack_alone(rr: dnslib.RR) -> bytes:
    buffer = dnslib.DNSBuffer()
    rr.pack(buffer)
    return bytes(buffer.data)
