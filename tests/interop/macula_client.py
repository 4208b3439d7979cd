"""A macula client written from docs/PROTOCOL.md alone (no code of the Rust implementation).

Parts, in the spec's order: identity and TLS profile (section 1), frames and field encodings
(sections 3 and 4), the messages (section 8), signed records and their values (sections 4, 8.5,
12.3), a DHT walk (section 8.6), STUN (section 10). Connections run on aioquic.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ipaddress
import os
import socket
import struct
import time
import zlib
from dataclasses import dataclass, field

from aioquic.asyncio import QuicConnectionProtocol, connect, serve
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID

# ---------------------------------------------------------------- constants (sections 5, 6, 8, 9)

ALPN = "macula"
SNI = "macula"
VERSION = 1
MAX_FRAME_LEN = 1048576
MAX_STRING_LEN = 1024
MAX_LIST_LEN = 256
MAX_CONTACTS = 64
MAX_ADDRS = 16
MAX_PAYLOAD = 16 * 1024 * 1024

DHT_SERVER, RELAY, RPC, PUBSUB, STORE_BATCH_CAP = 0x01, 0x02, 0x04, 0x08, 0x10

CONNECT, DISCONNECT, PING, PONG = 0x01, 0x02, 0x03, 0x04
PUBLISH, SUBSCRIBE, UNSUBSCRIBE = 0x10, 0x11, 0x12
CALL, REPLY, ERROR, CANCEL, PAYLOAD_SIZE, PAYLOAD_CHUNK = 0x20, 0x21, 0x22, 0x23, 0x24, 0x25
FIND_NODE, FIND_NODE_REPLY, FIND_VALUE, FIND_VALUE_REPLY = 0x40, 0x41, 0x42, 0x43
STORE, STORE_ACK, STORE_BATCH, STORE_BATCH_ACK = 0x44, 0x45, 0x46, 0x47
CAPABILITIES = 0x5B

# DISCONNECT reasons (9.1), ERROR codes (9.2), store statuses (9.3), stream codes (section 7).
R_NORMAL, R_REALM, R_PROTOCOL, R_VERSION, R_OVERLOADED, R_UNAUTHORIZED, R_SHUTDOWN, R_IDLE = range(8)
E_REFUSED, E_TOO_LARGE, E_OVERLOADED, E_UNKNOWN_PROCEDURE = 4, 5, 6, 7
S_STORED, S_BAD_SIGNATURE = 0, 1
STREAM_TIMED_OUT, STREAM_REFUSED, STREAM_ABANDONED = 0x100, 0x101, 0x102

# ---------------------------------------------------------------- identity (section 1)


def spki_der(public: Ed25519PublicKey) -> bytes:
    """The 44-byte SubjectPublicKeyInfo of an Ed25519 key."""
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def node_id_of_key(public: Ed25519PublicKey) -> bytes:
    """A NodeId: SHA-256 of the SPKI (section 1)."""
    return hashlib.sha256(spki_der(public)).digest()


def raw_key(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def node_id_of_raw(raw: bytes) -> bytes:
    """The NodeId of a raw 32-byte Ed25519 key (a record's publisher, section 4)."""
    return hashlib.sha256(bytes.fromhex("302a300506032b6570032100") + raw).digest()


class Identity:
    """An Ed25519 key and a certificate for it (self-signed, wide validity, as section 1 advises)."""

    def __init__(self, key: Ed25519PrivateKey | None = None, *, issuer: "Identity | None" = None,
                 not_after: datetime.datetime | None = None):
        self.key = key or Ed25519PrivateKey.generate()
        self.public = self.key.public_key()
        self.node_id = node_id_of_key(self.public)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "macula")])
        signer = issuer.key if issuer else self.key
        start = datetime.datetime(1975, 1, 1, tzinfo=datetime.timezone.utc)
        end = not_after or datetime.datetime(4096, 1, 1, tzinfo=datetime.timezone.utc)
        if end < start:
            start = end - datetime.timedelta(days=2)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .sign(signer, None)
        )

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data)

    @property
    def raw_public(self) -> bytes:
        return raw_key(self.public)


def not_a_curve_point() -> bytes:
    """32 bytes that are no Ed25519 point (RFC 8032 5.1.3: x^2 has no square root)."""
    p = 2**255 - 19
    d = (-121665 * pow(121666, p - 2, p)) % p
    y = 2
    while True:
        u, v = (y * y - 1) % p, (d * y * y + 1) % p
        x2 = u * pow(v, p - 2, p) % p
        if x2 != 0 and pow(x2, (p - 1) // 2, p) != 1:
            return y.to_bytes(32, "little")
        y += 1


# ---------------------------------------------------------------- encodings (sections 3, 4)


class DecodeError(Exception):
    """A frame body that breaks section 4."""


class Reader:
    """Reads a frame body field by field; every read checks the bytes left."""

    def __init__(self, body: bytes):
        self.b = body
        self.i = 0

    def take(self, n: int) -> bytes:
        if n > len(self.b) - self.i:
            raise DecodeError(f"field runs past the body ({n} > {len(self.b) - self.i})")
        v = self.b[self.i:self.i + n]
        self.i += n
        return v

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack(">H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack(">Q", self.take(8))[0]

    def boolean(self) -> bool:
        v = self.u8()
        if v > 1:
            raise DecodeError(f"bool {v}")
        return v == 1

    def string(self) -> str:
        n = self.u16()
        if n > MAX_STRING_LEN:
            raise DecodeError(f"string of {n} bytes")
        return self.take(n).decode("utf-8")

    def bytes_(self) -> bytes:
        return self.take(self.u32())

    def id(self) -> bytes:
        return self.take(32)

    def lst(self, limit: int, item):
        n = self.u16()
        if n > limit:
            raise DecodeError(f"list of {n} over {limit}")
        return [item() for _ in range(n)]

    def addr(self) -> tuple[str, int]:
        fam = self.u8()
        if fam == 4:
            ip = str(ipaddress.IPv4Address(self.take(4)))
        elif fam == 6:
            ip = str(ipaddress.IPv6Address(self.take(16)))
        else:
            raise DecodeError(f"address family {fam}")
        return (ip, self.u16())

    def contact(self) -> "Contact":
        nid = self.id()
        return Contact(nid, self.lst(MAX_ADDRS, self.addr))

    def record(self) -> "Record":
        return Record(self.id(), self.id(), self.u64(), self.u32(), self.bytes_(), self.take(64))

    def end(self) -> None:
        if self.i != len(self.b):
            raise DecodeError(f"{len(self.b) - self.i} bytes after the last field")


def u8(v: int) -> bytes:
    return struct.pack(">B", v)


def u16(v: int) -> bytes:
    return struct.pack(">H", v)


def u32(v: int) -> bytes:
    return struct.pack(">I", v)


def u64(v: int) -> bytes:
    return struct.pack(">Q", v)


def string(s: str) -> bytes:
    b = s.encode()
    return u16(len(b)) + b


def bytes_(b: bytes) -> bytes:
    return u32(len(b)) + b


def lst(items: list, enc) -> bytes:
    return u16(len(items)) + b"".join(enc(i) for i in items)


def addr(a: tuple[str, int]) -> bytes:
    ip = ipaddress.ip_address(a[0])
    return (u8(4) if ip.version == 4 else u8(6)) + ip.packed + u16(a[1])


def frame(ftype: int, body: bytes, *, version: int = VERSION, flags: int = 0, reserved: int = 0,
          length: int | None = None) -> bytes:
    """Header (section 3) and body; the keyword arguments make malformed frames for tests."""
    return bytes([version, ftype, flags, reserved]) + u32(len(body) if length is None else length) + body


@dataclass
class Contact:
    node_id: bytes
    addrs: list


def contact(c: Contact) -> bytes:
    return c.node_id + lst(c.addrs, addr)


# ---------------------------------------------------------------- signed records (sections 4, 8.5, 12.3)


def record_key(realm: str, kind: str, name: str) -> bytes:
    return hashlib.sha256(f"{realm}/{kind}/{name}".encode()).digest()


def peer_key(realm: str, node_id: bytes) -> bytes:
    return record_key(realm, "peer", node_id.hex())


@dataclass
class Record:
    key: bytes
    publisher: bytes
    issued_at_ms: int
    ttl_secs: int
    value: bytes
    signature: bytes

    def signed_bytes(self) -> bytes:
        return (b"macula-record-v1" + self.key + self.publisher + u64(self.issued_at_ms)
                + u32(self.ttl_secs) + u32(len(self.value)) + self.value)

    def verify(self) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.publisher).verify(self.signature, self.signed_bytes())
            return True
        except Exception:
            return False

    @property
    def provider(self) -> bytes:
        return node_id_of_raw(self.publisher)

    def encode(self) -> bytes:
        return (self.key + self.publisher + u64(self.issued_at_ms) + u32(self.ttl_secs)
                + bytes_(self.value) + self.signature)

    @staticmethod
    def signed(ident: Identity, key: bytes, value: bytes, ttl_secs: int = 300,
               issued_at_ms: int | None = None) -> "Record":
        r = Record(key, ident.raw_public, issued_at_ms or int(time.time() * 1000), ttl_secs, value, b"")
        r.signature = ident.sign(r.signed_bytes())
        return r


@dataclass
class PeerRecord:
    version: int
    node_id: bytes
    seq: int
    reachability: int
    observed: list
    lan: list
    relays: list

    @staticmethod
    def decode(value: bytes) -> "PeerRecord":
        r = Reader(value)
        p = PeerRecord(r.u8(), r.id(), r.u64(), r.u8(), r.lst(MAX_ADDRS, r.addr),
                       r.lst(MAX_ADDRS, r.addr), r.lst(MAX_CONTACTS, r.contact))
        r.end()
        return p

    def encode(self) -> bytes:
        return (u8(self.version) + self.node_id + u64(self.seq) + u8(self.reachability)
                + lst(self.observed, addr) + lst(self.lan, addr) + lst(self.relays, contact))


def literal_prefix(pattern: str) -> str:
    """Section 8.5: the segments up to the first wildcard."""
    out = []
    for seg in pattern.split("."):
        if seg in ("*", "#"):
            break
        out.append(seg)
    return ".".join(out)


def pattern_matches(pattern: str, topic: str) -> bool:
    p, t = pattern.split("."), topic.split(".")
    for i, seg in enumerate(p):
        if seg == "#" and i == len(p) - 1:
            return True
        if i >= len(t) or (seg != "*" and seg != t[i]):
            return False
    return len(p) == len(t)


# ---------------------------------------------------------------- connections (sections 1, 2)


class Closed(Exception):
    """The QUIC connection closed: `code` is the application error code, `reason` the phrase."""

    def __init__(self, code: int, reason: str, transport: bool):
        super().__init__(f"closed code {code} {'transport' if transport else 'app'} {reason!r}")
        self.code, self.reason, self.transport = code, reason, transport


class StreamReset(Exception):
    def __init__(self, code: int):
        super().__init__(f"stream reset 0x{code:x}")
        self.code = code


class StreamEnded(Exception):
    """The peer finished the stream (FIN) with no further frame."""


@dataclass
class _Stream:
    buf: bytearray = field(default_factory=bytearray)
    fin: bool = False
    reset: int | None = None
    stop: int | None = None


class Link(QuicConnectionProtocol):
    """One QUIC connection: bytes per stream, frames read from them, closes and resets seen."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.streams: dict[int, _Stream] = {}
        self.cond = asyncio.Condition()
        self.closed: Closed | None = None
        self.alpn: str | None = None
        self.incoming: asyncio.Queue[int] = asyncio.Queue()
        self.next_request_id = 1
        self.peer_connect: dict | None = None

    def quic_event_received(self, ev: events.QuicEvent) -> None:
        if isinstance(ev, events.HandshakeCompleted):
            self.alpn = ev.alpn_protocol
        elif isinstance(ev, events.StreamDataReceived):
            new = ev.stream_id not in self.streams
            st = self.streams.setdefault(ev.stream_id, _Stream())
            st.buf += ev.data
            st.fin |= ev.end_stream
            peer_opened = (ev.stream_id % 2 == 1) == self._quic._is_client
            if new and peer_opened:
                self.incoming.put_nowait(ev.stream_id)
        elif isinstance(ev, events.StreamReset):
            self.streams.setdefault(ev.stream_id, _Stream()).reset = ev.error_code
        elif isinstance(ev, events.StopSendingReceived):
            self.streams.setdefault(ev.stream_id, _Stream()).stop = ev.error_code
        elif isinstance(ev, events.ConnectionTerminated):
            self.closed = Closed(ev.error_code, ev.reason_phrase, ev.frame_type is not None)
        self._notify()

    def _notify(self) -> None:
        async def wake():
            async with self.cond:
                self.cond.notify_all()
        asyncio.ensure_future(wake())

    def peer_node_id(self) -> bytes | None:
        cert = self._quic.tls._peer_certificate
        return node_id_of_key(cert.public_key()) if cert is not None else None

    def request_id(self) -> int:
        self.next_request_id += 1
        return self.next_request_id

    def open_stream(self) -> int:
        return self._quic.get_next_available_stream_id()

    def send(self, sid: int, data: bytes, fin: bool = False) -> None:
        self._quic.send_stream_data(sid, data, end_stream=fin)
        self.transmit()

    def reset(self, sid: int, code: int) -> None:
        self._quic.reset_stream(sid, code)
        self.transmit()

    def stop(self, sid: int, code: int) -> None:
        self._quic.stop_stream(sid, code)
        self.transmit()

    async def wait_for(self, pred, timeout: float):
        async def loop():
            async with self.cond:
                while True:
                    v = pred()
                    if v is not None:
                        return v
                    await self.cond.wait()
        return await asyncio.wait_for(loop(), timeout)

    async def read_frame(self, sid: int, timeout: float = 5.0) -> tuple[int, bytes, bytes]:
        """The next whole frame on a stream: (type, body, header). Raises Closed, StreamReset,
        StreamEnded, TimeoutError."""
        st = self.streams.setdefault(sid, _Stream())

        def ready():
            if len(st.buf) >= 8:
                n = struct.unpack(">I", st.buf[4:8])[0]
                if len(st.buf) >= 8 + n:
                    return True
            if st.reset is not None or st.fin or self.closed is not None:
                return True
            return None

        await self.wait_for(ready, timeout)
        if len(st.buf) >= 8:
            n = struct.unpack(">I", st.buf[4:8])[0]
            if len(st.buf) >= 8 + n:
                head = bytes(st.buf[:8])
                body = bytes(st.buf[8:8 + n])
                del st.buf[:8 + n]
                if head[0] != VERSION or head[2] or head[3]:
                    raise DecodeError(f"bad header {head.hex()}")
                return head[1], body, head
        if st.reset is not None:
            raise StreamReset(st.reset)
        if st.fin:
            raise StreamEnded()
        raise self.closed

    async def until_closed(self, timeout: float) -> Closed:
        return await self.wait_for(lambda: self.closed, timeout)

    # ------------------------------------------------ CONNECT (8.1)

    def connect_frame(self, node_id: bytes, realm: str, caps: int, listen: list) -> bytes:
        return frame(CONNECT, node_id + string(realm) + u64(caps) + lst(listen, addr))

    @staticmethod
    def decode_connect(body: bytes) -> dict:
        r = Reader(body)
        d = {"node_id": r.id(), "realm": r.string(), "capabilities": r.u64(),
             "listen_addrs": r.lst(MAX_ADDRS, r.addr)}
        r.end()
        return d

    async def capabilities(self, want: int = 0, timeout: float = 0.0) -> int:
        """The peer's capabilities: its CONNECT's, replaced by every CAPABILITIES (12.2) read
        from the control stream since; waits up to `timeout` for the bits in `want`."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.streams.get(0)
            while st is not None and len(st.buf) >= 8 and len(st.buf) >= 8 + struct.unpack(">I", st.buf[4:8])[0]:
                t, body, _ = await self.read_frame(0, 0.1)
                if t == CAPABILITIES:
                    r = Reader(body)
                    self.peer_connect["capabilities"] = r.u64()
                    r.end()
            caps = self.peer_connect["capabilities"]
            left = deadline - time.monotonic()
            if caps & want == want or left <= 0:
                return caps
            try:
                await self.wait_for(lambda: True if len(self.streams[0].buf) >= 8 else None, left)
            except asyncio.TimeoutError:
                pass

    async def read_connect(self, timeout: float = 5.0) -> dict:
        t, body, _ = await self.read_frame(0, timeout)
        if t != CONNECT:
            raise DecodeError(f"first frame on the control stream is 0x{t:02x}, not CONNECT")
        self.peer_connect = self.decode_connect(body)
        return self.peer_connect

    # ------------------------------------------------ requests (section 2: one stream each)

    async def request(self, ftype: int, body_after_id: bytes, timeout: float = 5.0):
        rid = self.request_id()
        sid = self.open_stream()
        self.send(sid, frame(ftype, u64(rid) + body_after_id), fin=True)
        t, body, _ = await self.read_frame(sid, timeout)
        r = Reader(body)
        got = r.u64()
        if got != rid:
            raise DecodeError(f"answer echoes request id {got}, not {rid}")
        return t, r

    async def find_node(self, target: bytes) -> list[Contact]:
        t, r = await self.request(FIND_NODE, target)
        expect(t, FIND_NODE_REPLY, r)
        cs = r.lst(MAX_CONTACTS, r.contact)
        r.end()
        return cs

    async def find_value(self, key: bytes):
        t, r = await self.request(FIND_VALUE, key)
        expect(t, FIND_VALUE_REPLY, r)
        recs = r.lst(MAX_LIST_LEN, r.record)
        omitted = r.u16()
        closer = r.lst(MAX_CONTACTS, r.contact)
        r.end()
        return recs, omitted, closer

    async def store(self, rec: Record) -> int:
        t, r = await self.request(STORE, rec.encode())
        expect(t, STORE_ACK, r)
        s = r.u8()
        r.end()
        return s

    async def store_batch(self, recs: list[Record]) -> list[int]:
        t, r = await self.request(STORE_BATCH, lst(recs, Record.encode))
        expect(t, STORE_BATCH_ACK, r)
        s = r.lst(MAX_LIST_LEN, r.u8)
        r.end()
        return s

    # ------------------------------------------------ CALL (8.3)

    def call_frames(self, rid: int, proc: str, payload: bytes, timeout_ms: int = 5000,
                    idempotent: bool = True) -> list[bytes]:
        """A CALL, streamed when its frame would pass max_frame_len (8.3)."""
        fixed = 8 + 2 + len(proc.encode()) + 4 + 1 + 4
        if fixed + len(payload) <= MAX_FRAME_LEN:
            return [frame(CALL, u64(rid) + string(proc) + u32(timeout_ms) + u8(idempotent) + bytes_(payload))]
        half = MAX_FRAME_LEN // 2
        out = [frame(PAYLOAD_SIZE, u64(rid) + u64(len(payload))),
               frame(CALL, u64(rid) + string(proc) + u32(timeout_ms) + u8(idempotent) + bytes_(payload[:half]))]
        for i in range(half, len(payload), half):
            out.append(frame(PAYLOAD_CHUNK, u64(rid) + bytes_(payload[i:i + half])))
        return out

    async def read_answer(self, sid: int, rid: int, timeout: float = 10.0):
        """REPLY payload (reassembled if streamed) or ('error', code, message)."""
        t, body, _ = await self.read_frame(sid, timeout)
        total = None
        if t == PAYLOAD_SIZE:
            r = Reader(body)
            if r.u64() != rid:
                raise DecodeError("PAYLOAD_SIZE of another request")
            total = r.u64()
            r.end()
            t, body, _ = await self.read_frame(sid, timeout)
        r = Reader(body)
        if r.u64() != rid:
            raise DecodeError("answer of another request")
        if t == ERROR:
            code, msg = r.u16(), r.string()
            r.end()
            return ("error", code, msg)
        expect(t, REPLY, r)
        data = bytearray(r.bytes_())
        r.end()
        while total is not None and len(data) < total:
            t, body, _ = await self.read_frame(sid, timeout)
            r = Reader(body)
            expect(t, PAYLOAD_CHUNK, r)
            if r.u64() != rid:
                raise DecodeError("chunk of another request")
            data += r.bytes_()
            r.end()
        if total is not None and len(data) != total:
            raise DecodeError(f"streamed reply of {len(data)} bytes, {total} declared")
        return bytes(data)

    async def call(self, proc: str, payload: bytes, timeout: float = 10.0):
        rid = self.request_id()
        sid = self.open_stream()
        for f in self.call_frames(rid, proc, payload):
            self.send(sid, f)
        ans = await self.read_answer(sid, rid, timeout)
        self.send(sid, b"", fin=True)
        return ans

    async def ping(self, timeout: float = 5.0) -> bool:
        rid = self.request_id()
        self.send(0, frame(PING, u64(rid)))
        while True:
            t, body, _ = await self.read_frame(0, timeout)
            if t == PONG and Reader(body).u64() == rid:
                return True


def expect(t: int, want: int, r: Reader) -> None:
    if t == ERROR and want != ERROR:
        code, msg = r.u16(), r.string()
        raise DecodeError(f"ERROR {code} {msg!r} instead of 0x{want:02x}")
    if t != want:
        raise DecodeError(f"frame 0x{t:02x} instead of 0x{want:02x}")


def client_config(ident: Identity | None, alpn: str | None = ALPN) -> QuicConfiguration:
    import ssl
    cfg = QuicConfiguration(is_client=True, alpn_protocols=[alpn] if alpn else None,
                            server_name=SNI, verify_mode=ssl.CERT_NONE,
                            max_data=16 * 1024 * 1024, max_stream_data=4 * 1024 * 1024,
                            idle_timeout=30.0)
    if ident is not None:
        cfg.certificate = ident.cert
        cfg.private_key = ident.key
    return cfg


class Mesh:
    """A client of one realm: dials nodes by NodeId and address, sends CONNECT, walks the DHT."""

    def __init__(self, ident: Identity, realm: str, caps: int = 0, listen: list | None = None,
                 claim: bytes | None = None):
        self.ident, self.realm, self.caps, self.listen = ident, realm, caps, listen or []
        self.claim = claim or ident.node_id  # the node id CONNECT names (another one for tests)
        self.links: dict[bytes, Link] = {}
        self._cms = []

    async def dial(self, node_id: bytes | None, host: str, port: int, *, send_connect: bool = True,
                   cfg: QuicConfiguration | None = None, timeout: float = 5.0) -> Link:
        """A connection whose peer proves `node_id` (identity mode, section 1); CONNECT sent."""
        made: list[Link] = []

        def create(*a, **kw) -> Link:
            made.append(Link(*a, **kw))
            return made[-1]

        cm = connect(host, port, configuration=cfg or client_config(self.ident), create_protocol=create)
        try:
            link: Link = await asyncio.wait_for(cm.__aenter__(), timeout)
        except ConnectionError as e:
            raise ConnectionError(f"handshake failed: {made[-1].closed if made else e}") from e
        self._cms.append(cm)
        got = link.peer_node_id()
        if node_id is not None and got != node_id:
            link.close()
            raise ConnectionError(f"node certificate gives {got.hex() if got else None}, "
                                  f"dialed {node_id.hex()}")
        if send_connect:
            link.send(0, link.connect_frame(self.claim, self.realm, self.caps, self.listen))
        return link

    async def link(self, node_id: bytes, addrs: list) -> Link:
        """A ready connection (both CONNECTs) to a node, pooled by NodeId."""
        have = self.links.get(node_id)
        if have is not None and have.closed is None:
            return have
        last = None
        for host, port in addrs:
            try:
                lk = await self.dial(node_id, host, port)
                c = await lk.read_connect()
                if c["node_id"] != node_id:
                    raise ConnectionError("CONNECT names another node")
                self.links[node_id] = lk
                return lk
            except Exception as e:  # try the next address
                last = e
        raise ConnectionError(f"no address of {node_id.hex()[:16]} answered: {last}")

    async def walk(self, target: bytes, seeds: list[Contact], find_value: bool = False,
                   k: int = 20, alpha: int = 3):
        """Section 8.6: the lookup; returns (k closest answered contacts, verified records)."""
        dist = lambda c: int.from_bytes(bytes(a ^ b for a, b in zip(c.node_id, target)), "big")
        known = {c.node_id: c for c in seeds if c.node_id != self.ident.node_id}
        asked, answered, failed = set(), set(), set()
        records: dict[bytes, Record] = {}

        async def ask(c: Contact):
            try:
                lk = await self.link(c.node_id, c.addrs)
                if find_value:
                    recs, _, closer = await lk.find_value(target)
                    for rec in recs:
                        if rec.key == target and rec.verify():
                            old = records.get(rec.publisher)
                            if old is None or old.issued_at_ms < rec.issued_at_ms:
                                records[rec.publisher] = rec
                else:
                    closer = await lk.find_node(target)
                for cc in closer:
                    if cc.node_id != self.ident.node_id and cc.node_id not in known:
                        known[cc.node_id] = cc
                answered.add(c.node_id)
            except Exception:
                failed.add(c.node_id)

        while True:
            live = sorted((c for c in known.values() if c.node_id not in failed), key=dist)[:k]
            todo = [c for c in live if c.node_id not in asked][:alpha]
            if not todo:
                break
            for c in todo:
                asked.add(c.node_id)
            await asyncio.gather(*(ask(c) for c in todo))
        closest = sorted((known[n] for n in answered), key=dist)[:k]
        return closest, list(records.values())

    async def resolve(self, node_id: bytes, seeds: list[Contact]) -> list:
        """Section 8.7: addresses of a node: a pooled connection, FIND_NODE, its peer record."""
        if node_id in self.links:
            return []
        closest, _ = await self.walk(node_id, seeds)
        for c in closest:
            if c.node_id == node_id:
                return c.addrs
        _, recs = await self.walk(peer_key(self.realm, node_id), seeds, find_value=True)
        for rec in recs:
            if rec.provider == node_id:
                pr = PeerRecord.decode(rec.value)
                if pr.node_id == node_id and pr.reachability != 2:
                    return pr.observed
        return []

    async def close(self) -> None:
        for cm in self._cms:
            try:
                await asyncio.wait_for(cm.__aexit__(None, None, None), 2)
            except Exception:
                pass


# ---------------------------------------------------------------- accepting connections (section 2)


def _request_client_certificates() -> None:
    """aioquic's server asks for a client certificate only through a private switch; section 1
    requires mutual authentication, so the server side of this client turns it on."""
    if getattr(QuicConnection, "_macula_patched", False):
        return
    original = QuicConnection._initialize

    def initialize(self, peer_cid):
        original(self, peer_cid)
        if not self._is_client:
            self.tls._request_client_certificate = True

    QuicConnection._initialize = initialize
    QuicConnection._macula_patched = True


async def listen(ident: Identity, host: str, port: int, on_link) -> object:
    """A QUIC server for macula: `on_link(link)` runs for each accepted connection."""
    import ssl
    _request_client_certificates()
    cfg = QuicConfiguration(is_client=False, alpn_protocols=[ALPN], verify_mode=ssl.CERT_NONE,
                            max_data=16 * 1024 * 1024, max_stream_data=4 * 1024 * 1024)
    cfg.certificate = ident.cert
    cfg.private_key = ident.key

    def create(*a, **kw):
        lk = Link(*a, **kw)
        asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(on_link(lk)))
        return lk

    return await serve(host, port, configuration=cfg, create_protocol=create)


# ---------------------------------------------------------------- STUN (section 10)

MAGIC = bytes.fromhex("2112a442")


def stun_fingerprint(msg: bytes) -> bytes:
    return u32((zlib.crc32(msg) ^ 0x5354554E) & 0xFFFFFFFF)


def stun_request(txid: bytes, attrs: bytes = b"", fingerprint: bool = True) -> bytes:
    """A Binding request: header, attributes, optional FINGERPRINT."""
    length = len(attrs) + (8 if fingerprint else 0)
    msg = u16(0x0001) + u16(length) + MAGIC + txid + attrs
    if fingerprint:
        msg += u16(0x8028) + u16(4) + stun_fingerprint(msg)
    return msg


def stun_attr(t: int, v: bytes) -> bytes:
    return u16(t) + u16(len(v)) + v + b"\0" * (-len(v) % 4)


def stun_parse(msg: bytes) -> tuple[int, bytes, list]:
    """(message type, transaction id, [(attribute type, value)]), checking length and cookie."""
    mtype, length = struct.unpack(">HH", msg[:4])
    if msg[4:8] != MAGIC or length != len(msg) - 20:
        raise DecodeError("not a STUN message of this length")
    attrs, i = [], 20
    while i < len(msg):
        t, n = struct.unpack(">HH", msg[i:i + 4])
        attrs.append((t, msg[i + 4:i + 4 + n], i))
        i += 4 + n + (-n % 4)
    return mtype, msg[8:20], attrs


def stun_xor_address(value: bytes, txid: bytes) -> tuple[str, int]:
    fam, port = value[1], struct.unpack(">H", value[2:4])[0] ^ 0x2112
    if fam == 1:
        ip = bytes(a ^ b for a, b in zip(value[4:8], MAGIC))
        return str(ipaddress.IPv4Address(ip)), port
    ip = bytes(a ^ b for a, b in zip(value[4:20], MAGIC + txid))
    return str(ipaddress.IPv6Address(ip)), port


def stun_exchange(host: str, port: int, msg: bytes, timeout: float = 1.0) -> tuple[bytes | None, tuple]:
    """Sends one datagram from a fresh socket, returns (answer or None, our local address)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    s.bind(("127.0.0.1", 0))
    try:
        s.sendto(msg, (host, port))
        try:
            data, src = s.recvfrom(2048)
            return (data if src == (host, port) else None), s.getsockname()
        except socket.timeout:
            return None, s.getsockname()
    finally:
        s.close()


def random_txid() -> bytes:
    return os.urandom(12)
