"""DNS on the VIF: which questions the cluster answers, and the replies rootd builds. Sans-IO.

Model
-----
rootd points the system resolver at the cluster's DNS service address, which is routed
into the TUN; every query to `<dns address>:53` (UDP or TCP) arrives at rootd itself.

* A question whose name is `<cluster domain>.` or ends in `.<cluster domain>.`, or is a
  short cluster name (`svc.ns.`, `svc.ns.svc.`; see `DnsPolicy`), is a cluster name: the
  traffic manager resolves it in the cluster (through userd) and hands back the response
  code and each answer record packed alone; `cluster_reply` builds the client's reply
  around them with the client's own id, flags and question, authoritatively: a name that
  does not exist there is NXDOMAIN, never asked upstream (cluster names do not leak).
* Every other question is forwarded byte for byte to the resolver(s) that were configured
  before rootd took over, and their reply goes back unchanged (`is_reply_to` checks that
  it answers this query). SERVFAIL only when none of them answered.
* The user's DNS controls come first: a name in the mapping table (`--dns-map`) is
  answered with its target (an address, or the cluster's answer for another name); the
  longest of the user's `--dns-include-suffix`/`--dns-exclude-suffix` entries that the
  name ends in sends it to the cluster or to the previous resolver.
* A cluster answer's addresses in a translated range (`--vnat`, `--proxy-via`) are
  replaced by their virtual addresses (`core.vnat`).
* A query that cannot be parsed gets FORMERR when its header is readable (so the client
  does not wait for a timeout) and is dropped otherwise; a failed lookup gets SERVFAIL.

UDP replies larger than the client can take (512 bytes, or its EDNS payload size) are
truncated to header + question with TC set, so the client retries over TCP. TCP messages
carry a two-byte length prefix (`TcpFramer`).
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import dnslib

HEADER_SIZE = 12
CLASSIC_UDP_LIMIT = 512
# What we announce and honour at most (the DNS flag day 2020 value).
EDNS_UDP_LIMIT = 1232
MAX_TCP_MESSAGE = 65535

NOERROR = 0
FORMERR = 1
SERVFAIL = 2
NXDOMAIN = 3


class BadQueryError(ValueError):
    """The bytes are not one DNS query we can answer."""


class Route(enum.Enum):
    """Who answers a question."""

    CLUSTER = "cluster"  # the traffic manager, through userd
    UPSTREAM = "upstream"  # the resolver that was configured before rootd


@dataclass(frozen=True, slots=True)
class Query:
    """One parsed query: what routing and reply building need."""

    id: int
    name: str  # as asked (case preserved), fully qualified with the trailing dot
    qtype: int
    udp_limit: int  # the largest UDP reply the client takes
    edns: bool
    record: dnslib.DNSRecord
    raw: bytes

    def __str__(self) -> str:
        return f"{self.name} {dnslib.QTYPE.get(self.qtype, self.qtype)}"


def parse_query(data: bytes) -> Query:
    """Parse a client's query; BadQueryError for anything but one standard question."""
    try:
        record = dnslib.DNSRecord.parse(data)
    except (dnslib.DNSError, ValueError, IndexError, struct.error) as error:
        raise BadQueryError(f"malformed DNS message: {error}") from None
    header = record.header
    if header.qr:
        raise BadQueryError("a response, not a query")
    if header.opcode != dnslib.OPCODE.QUERY:
        raise BadQueryError(f"opcode {header.opcode} is not QUERY")
    if len(record.questions) != 1:
        raise BadQueryError(f"{len(record.questions)} questions, expected 1")
    question = record.questions[0]
    name = str(question.qname)
    if not name.endswith("."):
        name += "."
    udp_limit = CLASSIC_UDP_LIMIT
    edns = False
    for rr in record.ar:
        if rr.rtype == dnslib.QTYPE.OPT:
            edns = True
            # The requester's payload size travels in the CLASS field of OPT.
            udp_limit = max(CLASSIC_UDP_LIMIT, min(int(rr.rclass), EDNS_UDP_LIMIT))
    return Query(
        id=header.id,
        name=name,
        qtype=int(question.qtype),
        udp_limit=udp_limit,
        edns=edns,
        record=record,
        raw=bytes(data),
    )


# Suffixes that never go to the cluster, even where a namespace has that name (as
# Telepresence's default exclude list): a namespace called `com` must not swallow .com.
EXCLUDED_SUFFIXES = ("com", "io", "net", "org", "ru")


class DnsPolicy:
    """Decides who answers a question, and under which name the cluster is asked.

    The cluster answers, authoritatively (NXDOMAIN included, never forwarded, so cluster
    names do not leak to the workstation's resolver):
    * names under the cluster domain, as asked;
    * `<x>.svc.` and `<x>.<ns>.svc.`: the cluster's service names without the domain;
    * `<svc>.<ns>.` and `<pod>.<svc>.<ns>.` for a namespace rootd knows (the session's and
      the mapped ones: those in the search list), asked as `….svc.<domain>`.
    Everything else goes to the previous resolver. The user's suffixes decide before these
    rules (the longest matching one; include wins a tie), and a mapped name before all.
    """

    def __init__(
        self,
        cluster_domain: str,
        namespaces: Sequence[str] = (),
        *,
        include_suffixes: Sequence[str] = (),
        exclude_suffixes: Sequence[str] = (),
        mappings: Mapping[str, str] | None = None,
    ) -> None:
        domain = cluster_domain.strip().strip(".").lower()
        if not domain:
            raise ValueError("the cluster domain is empty")
        self.cluster_domain = domain
        self._suffix = "." + domain + "."
        self.namespaces = frozenset(n.lower() for n in namespaces) - set(EXCLUDED_SUFFIXES)
        self.include_suffixes = tuple(_normal(s) for s in include_suffixes)
        self.exclude_suffixes = tuple(_normal(s) for s in exclude_suffixes)
        self.mappings = {_normal(k): v.strip() for k, v in (mappings or {}).items()}

    def mapped(self, query: Query) -> str | None:
        """The `--dns-map` target of the question's name, or None."""
        return self.mappings.get(_normal(query.name))

    def _user_choice(self, name: str) -> bool | None:
        """True: the cluster (an include suffix), False: upstream, None: no user rule."""
        best: tuple[int, bool] | None = None
        for suffixes, choice in ((self.include_suffixes, True), (self.exclude_suffixes, False)):
            for suffix in suffixes:
                if name == suffix or name.endswith("." + suffix):
                    rank = (len(suffix), choice)
                    if best is None or rank > best:
                        best = rank
        return None if best is None else best[1]

    def cluster_name(self, query: Query) -> str | None:
        """The name to look up in the cluster, or None when the question is not its."""
        return self.cluster_name_of(query.name)

    def cluster_name_of(self, asked: str) -> str | None:
        name = asked.lower()
        if not name.endswith("."):
            name += "."
            asked += "."
        choice = self._user_choice(name.rstrip("."))
        if choice is not None:
            if not choice:
                return None
            if not (name == self._suffix[1:] or name.endswith(self._suffix)):
                return asked
        if name == self._suffix[1:] or name.endswith(self._suffix):
            return asked
        labels = name.rstrip(".").split(".")
        if len(labels) < 2 or labels[-1] in EXCLUDED_SUFFIXES:
            return None
        if labels[-1] == "svc" and len(labels) in (2, 3):
            return f"{asked.rstrip('.')}.{self.cluster_domain}."
        if labels[-1] in self.namespaces and len(labels) in (2, 3):
            return f"{asked.rstrip('.')}.svc.{self.cluster_domain}."
        return None

    def route(self, query: Query) -> Route:
        return Route.UPSTREAM if self.cluster_name(query) is None else Route.CLUSTER


def _normal(name: str) -> str:
    return name.strip().strip(".").lower()


MAPPED_TTL = 30  # seconds: a local override may change with the next connect


def mapped_reply(query: Query, target: str, *, udp: bool) -> bytes | None:
    """The reply for a name mapped to an address (None: the target is a name, not an
    address: the caller looks it up instead). Other types than A/AAAA get an empty NOERROR."""
    try:
        address = ipaddress.ip_address(target)
    except ValueError:
        return None
    reply = _reply_skeleton(query, NOERROR, authoritative=True)
    if query.qtype == dnslib.QTYPE.A and address.version == 4:
        reply.add_answer(
            dnslib.RR(query.name, dnslib.QTYPE.A, rdata=dnslib.A(str(address)), ttl=MAPPED_TTL)
        )
    elif query.qtype == dnslib.QTYPE.AAAA and address.version == 6:
        reply.add_answer(
            dnslib.RR(
                query.name, dnslib.QTYPE.AAAA, rdata=dnslib.AAAA(str(address)), ttl=MAPPED_TTL
            )
        )
    return _fit(query, reply, udp)


AddressTranslation = Callable[
    [ipaddress.IPv4Address | ipaddress.IPv6Address],
    ipaddress.IPv4Address | ipaddress.IPv6Address | None,
]


def _reply_skeleton(query: Query, rcode: int, *, authoritative: bool = False) -> dnslib.DNSRecord:
    request = query.record.header
    header = dnslib.DNSHeader(
        id=query.id,
        qr=1,
        aa=int(authoritative),
        ra=1,
        rd=request.rd,
        opcode=request.opcode,
        rcode=rcode,
    )
    reply = dnslib.DNSRecord(header, questions=list(query.record.questions))
    if query.edns:
        reply.add_ar(dnslib.EDNS0(udp_len=EDNS_UDP_LIMIT))
    return reply


def _fit(query: Query, reply: dnslib.DNSRecord, udp: bool) -> bytes:
    packed = bytes(reply.pack())
    if not udp or len(packed) <= query.udp_limit:
        return packed
    truncated = _reply_skeleton(query, reply.header.rcode, authoritative=bool(reply.header.aa))
    truncated.header.tc = 1
    return bytes(truncated.pack())


def cluster_reply(
    query: Query,
    rcode: int,
    answers: Sequence[bytes],
    *,
    udp: bool,
    age: int = 0,
    looked_up: str | None = None,
    translate: AddressTranslation | None = None,
) -> bytes:
    """The client's reply from the cluster's answer: each of `answers` one packed record,
    looked up `age` seconds ago (counted off each record's TTL), authoritative.

    `looked_up`: the name the cluster was asked when it differs from the question (a short
    name completed with the cluster domain); its records are renamed to the question's name,
    so the reply answers what was asked.

    `translate`: the virtual address for a cluster address (None: keep it), applied to
    A and AAAA records.

    BadQueryError when an answer record does not parse (the manager sent garbage): the
    caller answers SERVFAIL instead.
    """
    if not 0 <= rcode <= 15:
        raise BadQueryError(f"response code {rcode} out of range")
    reply = _reply_skeleton(query, rcode, authoritative=True)
    renamed = looked_up.lower() if looked_up and looked_up != query.name else None
    for packed in answers:
        try:
            record = dnslib.RR.parse(dnslib.DNSBuffer(packed))
        except (dnslib.DNSError, ValueError, IndexError, struct.error) as error:
            raise BadQueryError(f"malformed answer record from the cluster: {error}") from None
        record.ttl = max(0, record.ttl - age)
        if renamed is not None and str(record.rname).lower().rstrip(".") == renamed.rstrip("."):
            record.rname = dnslib.DNSLabel(query.name)
        if translate is not None and record.rtype in (dnslib.QTYPE.A, dnslib.QTYPE.AAAA):
            virtual = translate(ipaddress.ip_address(str(record.rdata)))
            if virtual is not None:
                kind = dnslib.A if virtual.version == 4 else dnslib.AAAA
                record.rdata = kind(str(virtual))
        reply.add_answer(record)
    return _fit(query, reply, udp)


def error_reply(query: Query, rcode: int) -> bytes:
    """An empty reply with `rcode` (SERVFAIL when a lookup failed)."""
    return bytes(_reply_skeleton(query, rcode).pack())


def formerr_for(data: bytes) -> bytes | None:
    """FORMERR for an unparseable query whose header can be read, else None (drop it)."""
    if len(data) < HEADER_SIZE:
        return None
    query_id, flags = struct.unpack_from("!HH", data)
    if flags & 0x8000:  # a response: never answer those
        return None
    # QR=1, the request's opcode and RD, RCODE=FORMERR, no sections.
    reply_flags = 0x8000 | (flags & 0x7900) | 0x0080 | FORMERR
    return struct.pack("!HHHHHH", query_id, reply_flags, 0, 0, 0, 0)


def is_reply_to(query: Query, data: bytes) -> bool:
    """Whether `data` looks like the upstream's reply to `query` (id and QR bit)."""
    if len(data) < HEADER_SIZE:
        return False
    reply_id, flags = struct.unpack_from("!HH", data)
    return reply_id == query.id and bool(flags & 0x8000)


def truncated(reply: bytes) -> bool:
    """Whether a reply has the TC bit: the whole answer needs TCP."""
    return len(reply) >= HEADER_SIZE and bool(reply[2] & 0x02)


class TcpFramer:
    """Splits a TCP byte stream into DNS messages (RFC 1035 §4.2.2 length prefix)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """The complete messages that `data` finishes, in order."""
        self._buffer += data
        messages: list[bytes] = []
        while len(self._buffer) >= 2:
            (length,) = struct.unpack_from("!H", self._buffer)
            if len(self._buffer) < 2 + length:
                break
            messages.append(bytes(self._buffer[2 : 2 + length]))
            del self._buffer[: 2 + length]
        return messages

    @property
    def pending(self) -> int:
        """Bytes of an incomplete message held back."""
        return len(self._buffer)

    @staticmethod
    def frame(message: bytes) -> bytes:
        if len(message) > MAX_TCP_MESSAGE:
            raise ValueError(f"a DNS message of {len(message)} bytes does not fit TCP framing")
        return struct.pack("!H", len(message)) + message
