"""Interop checks: the Python client of macula_client.py against live `macula node`s.

Usage: checks.py --realm REALM --bin MACULA --node ID@HOST:PORT [--node ...]
The first node serves demo.echo. Prints `interop: pass|FAIL NAME detail` per check, then
`interop: N passed, N failed`; exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import re
import signal
import socket
import struct
import sys
import time
import traceback

import macula_client as m

RESULTS = {"pass": 0, "FAIL": 0}


def report(ok: bool, name: str, detail: str) -> None:
    word = "pass" if ok else "FAIL"
    RESULTS[word] += 1
    print(f"interop: {word} {name} {detail}", flush=True)


class Nodes:
    def __init__(self, specs: list[str]):
        self.list = []
        for s in specs:
            nid, hostport = s.split("@")
            host, port = hostport.rsplit(":", 1)
            self.list.append((bytes.fromhex(nid), host, int(port)))

    def contact(self, i: int) -> m.Contact:
        nid, host, port = self.list[i]
        return m.Contact(nid, [(host, port)])

    def seed(self, i: int) -> str:
        nid, host, port = self.list[i]
        return f"{nid.hex()}@{host}:{port}"


async def check(name: str, coro) -> None:
    only = os.environ.get("INTEROP_ONLY")
    if only and not re.search(only, name):
        coro.close()
        return
    try:
        detail = await asyncio.wait_for(coro, 20)
        report(True, name, detail or "")
    except Exception as e:  # one line per failure, the exception says what
        report(False, name, f"{type(e).__name__}: {e}".replace("\n", " "))
        if os.environ.get("INTEROP_TRACE"):
            traceback.print_exc()


def need(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(what)


async def fatal(mesh: m.Mesh, node, payload: bytes, sid: int | None = 0, *, after_connect=True,
                want_code: int = m.R_PROTOCOL, fin: bool = False, answered: bool = True) -> str:
    """Sends bad bytes, expects the node to close with `want_code` (section 7); notes whether
    a DISCONNECT frame came first on the control stream (section 2)."""
    nid, host, port = node
    lk = await mesh.dial(nid, host, port, send_connect=after_connect)
    if after_connect and answered:
        await lk.read_connect()
    if sid is None:
        sid = lk.open_stream()
    lk.send(sid, payload, fin=fin)
    closed = await lk.until_closed(6)
    need(not closed.transport, f"transport close {closed.code} instead of an application close")
    need(closed.code == want_code, f"close code {closed.code} ({closed.reason!r}), want {want_code}")
    disconnect = None
    st = lk.streams.get(0)
    if st is not None:
        buf = bytes(st.buf)
        while len(buf) >= 8:
            n = struct.unpack(">I", buf[4:8])[0]
            if buf[1] == m.DISCONNECT:
                disconnect = buf[8] if len(buf) > 8 else None
            buf = buf[8 + n:]
    need(disconnect == want_code, f"close code {closed.code} right but no DISCONNECT frame before it "
                                  f"(section 2: DISCONNECT, then the close)" if disconnect is None
         else f"DISCONNECT reason {disconnect}, close code {closed.code}")
    need(st.fin, "DISCONNECT arrived but the control stream was not finished after it (section 2)")
    return f"DISCONNECT {disconnect} + FIN, close code {closed.code} ({closed.reason!r})"


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--realm", required=True)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--node", action="append", required=True)
    args = ap.parse_args()
    nodes = Nodes(args.node)
    realm = args.realm
    me = m.Identity()
    mesh = m.Mesh(me, realm)
    A, B = nodes.list[0], nodes.list[1]
    seeds = [nodes.contact(0)]

    # ------------------------------------------------ section 1: TLS profile
    async def tls_identity():
        lk = await mesh.dial(A[0], A[1], A[2], send_connect=False)
        need(lk.alpn == m.ALPN, f"ALPN {lk.alpn!r}")
        cert = lk._quic.tls._peer_certificate
        need(len(m.spki_der(cert.public_key())) == 44, "SPKI is not 44 bytes")
        lk.close()
        return f"ALPN {lk.alpn}, SHA-256(SPKI) = dialed node id {A[0].hex()[:16]}"

    async def tls_wrong_id():
        try:
            await mesh.dial(B[0], A[1], A[2], send_connect=False)
        except ConnectionError:
            return "a node whose certificate gives another id is refused by the client"
        raise AssertionError("connected to the wrong node")

    async def tls_alpn():
        try:
            lk = await mesh.dial(None, A[1], A[2], cfg=m.client_config(me, alpn="h3"), timeout=3)
        except ConnectionError as e:
            need("code 376 " in str(e), f"want TLS alert 120 no_application_protocol (0x178): {e}")
            return f"handshake with ALPN h3 fails: TLS alert 120 no_application_protocol (0x178)"
        raise AssertionError(f"handshake with ALPN h3 completed (alpn {lk.alpn!r})")

    async def tls_no_client_cert():
        try:
            lk = await mesh.dial(A[0], A[1], A[2], cfg=m.client_config(None), timeout=3)
        except (ConnectionError, asyncio.TimeoutError, TimeoutError) as e:
            return f"handshake without a client certificate fails ({type(e).__name__})"
        closed = await lk.until_closed(3)
        need(closed.code == 0x100 + 116, f"close code 0x{closed.code:x}")
        return "refused without a client certificate: TLS alert 116 certificate_required (0x174)"

    async def tls_cert_rules():
        # Section 1: identity mode checks only the SPKI and CertificateVerify.
        other = m.Identity()
        foreign = m.Identity(issuer=other)
        expired = m.Identity(not_after=datetime.datetime(2001, 1, 1, tzinfo=datetime.timezone.utc))
        for label, ident in (("issued by another key", foreign), ("expired", expired)):
            mm = m.Mesh(ident, realm)
            lk = await mm.link(A[0], [(A[1], A[2])])
            need(lk.peer_connect["node_id"] == A[0], f"{label}: no CONNECT")
            await mm.close()
        return "certificates issued by another key or expired are accepted (only SPKI + CertificateVerify count)"

    await check("tls.identity", tls_identity())
    await check("tls.wrong-node-id", tls_wrong_id())
    await check("tls.alpn-required", tls_alpn())
    await check("tls.mutual", tls_no_client_cert())
    await check("tls.certificate-rules", tls_cert_rules())

    # ------------------------------------------------ section 2 / 8.1: CONNECT
    async def connect_answer():
        lk = await mesh.link(A[0], [(A[1], A[2])])
        c = lk.peer_connect
        need(c["node_id"] == A[0], "CONNECT node_id is not the certificate's")
        need(c["realm"] == realm, f"realm {c['realm']!r}")
        caps = c["capabilities"]
        need(caps & m.DHT_SERVER and caps & m.RPC and caps & m.STORE_BATCH_CAP,
             f"capabilities 0x{caps:x}: an echo node announces DHT_SERVER, RPC and STORE_BATCH")
        need((A[1], A[2]) in c["listen_addrs"], f"listen_addrs {c['listen_addrs']}")
        need(await lk.ping(), "no PONG")
        return f"capabilities 0x{caps:x}, listen_addrs {c['listen_addrs']}, PING answered"

    await check("connect.answer", connect_answer())
    await check("connect.realm-mismatch",
                fatal(m.Mesh(me, "io.other"), A, b"", want_code=m.R_REALM, answered=False))
    await check("connect.wrong-node-id", fatal(m.Mesh(me, realm, claim=B[0]), A, b"",
                                               want_code=m.R_UNAUTHORIZED, answered=False))

    async def phase_rule():
        # Section 2: a request stream opened before CONNECT is held, then served.
        lk = await mesh.dial(A[0], A[1], A[2], send_connect=False)
        # Stream 0 (control) exists but stays empty; the request goes on stream 4 first. aioquic
        # forgets a lower stream id once a higher one is used, so stream 0 is created unsent.
        lk._quic._get_or_create_stream_for_send(0)
        sid = 4
        lk.send(sid, m.frame(m.FIND_NODE, m.u64(1) + os.urandom(32)), fin=True)
        await asyncio.sleep(0.3)
        st = lk.streams.get(sid)
        need(st is None or not st.buf, f"answered before CONNECT: {bytes(st.buf[:16]).hex() if st else ''} "
                                       f"control: {bytes(lk.streams[0].buf[:16]).hex() if 0 in lk.streams else ''}")
        lk.send(0, lk.connect_frame(me.node_id, realm, 0, []))
        t, _, _ = await lk.read_frame(sid)
        need(t == m.FIND_NODE_REPLY, f"answer 0x{t:02x}")
        return "a FIND_NODE sent before CONNECT was held 300 ms and answered after it"

    async def connect_deadline():
        lk = await mesh.dial(A[0], A[1], A[2], send_connect=False)
        t0 = time.monotonic()
        closed = await lk.until_closed(8)
        took = time.monotonic() - t0
        need(closed.code == m.R_PROTOCOL and 4 <= took <= 7, f"code {closed.code} after {took:.1f}s")
        return f"no CONNECT: closed with code 2 after {took:.1f}s ({closed.reason!r})"

    async def subscribe_direct():
        lk = await mesh.link(A[0], [(A[1], A[2])])
        t, r = await lk.request(m.SUBSCRIBE, m.string("interop.direct.*"))
        m.expect(t, m.REPLY, r)
        need(r.bytes_() == b"", "non-empty REPLY")
        t, r = await lk.request(m.SUBSCRIBE, m.string("interop.#.bad"))
        m.expect(t, m.ERROR, r)
        code = r.u16()
        need(code == 9, f"bad pattern: ERROR {code}")
        t, r = await lk.request(m.UNSUBSCRIBE, m.string("interop.never"))
        m.expect(t, m.REPLY, r)
        return "SUBSCRIBE -> empty REPLY; bad pattern -> ERROR 9; UNSUBSCRIBE unknown -> REPLY"

    async def our_disconnect():
        # Section 8.1: the receiver of a DISCONNECT closes the connection with the same code.
        lk = await mesh.dial(A[0], A[1], A[2])
        await lk.read_connect()
        lk.send(0, m.frame(m.DISCONNECT, m.u8(m.R_SHUTDOWN) + m.string("interop done")), fin=True)
        closed = await lk.until_closed(3)
        need(not closed.transport and closed.code == m.R_SHUTDOWN, f"closed {closed}")
        return f"node closed with code {closed.code} after our DISCONNECT {m.R_SHUTDOWN}"

    await check("connect.disconnect", our_disconnect())
    await check("connect.phase-rule", phase_rule())
    await check("connect.deadline", connect_deadline())
    await check("pubsub.subscribe-direct", subscribe_direct())

    # ------------------------------------------------ 8.4, 8.6: FIND_NODE and the walk
    async def find_node():
        lk = await mesh.link(A[0], [(A[1], A[2])])
        cs = await lk.find_node(B[0])
        ids = {c.node_id: c for c in cs}
        need(B[0] in ids, f"B missing from {len(cs)} contacts")
        need((B[1], B[2]) in ids[B[0]].addrs, f"B's addrs {ids[B[0]].addrs}")
        need(me.node_id not in ids and A[0] not in ids, "the asker or the answerer is listed")
        # Section 2: the responder writes exactly one answer and finishes its side.
        sid = lk._quic.get_next_available_stream_id() - 4
        await lk.wait_for(lambda: True if lk.streams[sid].fin else None, 2)
        need(not lk.streams[sid].buf, "bytes after the answer")
        return f"{len(cs)} contacts, B with {ids[B[0]].addrs}; one answer, then FIN"

    async def walk():
        target = os.urandom(32)
        closest, _ = await mesh.walk(target, seeds)
        found = {c.node_id for c in closest}
        want = {n[0] for n in nodes.list}
        need(want <= found, f"walk found {len(found & want)} of {len(want)} nodes")
        return f"from one seed the walk reached all {len(want)} nodes"

    await check("dht.find-node", find_node())
    await check("dht.walk", walk())

    # ------------------------------------------------ FIND_VALUE: provider and peer records
    async def find_provider():
        key = m.record_key(realm, "rpc", "demo.echo")
        _, recs = await mesh.walk(key, seeds, find_value=True)
        providers = {r.provider for r in recs}
        need(A[0] in providers, f"{len(recs)} verified records, A not among them")
        need(all(r.value[:1] in (b"", b"\0", b"\1") or True for r in recs), "")
        return f"{len(recs)} verified provider records for demo.echo, flags {[r.value.hex() for r in recs]}"

    async def find_peer_record():
        got, missing = [], []
        for i, (nid, host, port) in enumerate(nodes.list):
            _, recs = await mesh.walk(m.peer_key(realm, nid), seeds, find_value=True)
            mine = [r for r in recs if r.provider == nid]
            if not mine:
                missing.append(f"node {i} ({nid.hex()[:8]})")
                continue
            pr = m.PeerRecord.decode(mine[0].value)
            need(pr.version == 1 and pr.node_id == nid, "peer record version or node id")
            got.append(f"{nid.hex()[:8]}:reach={pr.reachability},observed={pr.observed}")
        need(not missing, f"no peer record of {', '.join(missing)}; found {'; '.join(got)}")
        return "; ".join(got)

    await check("dht.find-value-provider", find_provider())
    await check("dht.peer-records", find_peer_record())

    # ------------------------------------------------ STORE and STORE_BATCH (4, 8.4, 8.5)
    async def store():
        lk = await mesh.link(A[0], [(A[1], A[2])])
        key = m.record_key(realm, "rpc", "interop.probe")
        rec = m.Record.signed(me, key, b"\x00")
        st = await lk.store(rec)
        need(st == m.S_STORED, f"status {st}")
        recs, _, _ = await lk.find_value(key)
        need(any(r.provider == me.node_id and r.signature == rec.signature for r in recs),
             "FIND_VALUE does not return the stored record")
        bad = m.Record.signed(me, key, b"\x01")
        bad.signature = bytes(64)
        st_bad = await lk.store(bad)
        need(st_bad == m.S_BAD_SIGNATURE, f"bad signature: status {st_bad}")
        old = m.Record.signed(me, key, b"\x00", issued_at_ms=int(time.time() * 1000) - 10_000_000)
        st_exp = await lk.store(old)
        need(st_exp == 2, f"expired record: status {st_exp}")
        long_ttl = await lk.store(m.Record.signed(me, key, b"\x00", ttl_secs=7200))
        need(long_ttl == 6, f"ttl 2 h: status {long_ttl}")
        future = await lk.store(m.Record.signed(me, key, b"\x00",
                                                issued_at_ms=int(time.time() * 1000) + 600_000))
        need(future == 7, f"issued 10 min ahead: status {future}")
        return "stored (0), read back by FIND_VALUE; bad signature 1; expired 2; ttl 2 h 6; future 7"

    async def store_batch():
        lk = await mesh.link(B[0], [(B[1], B[2])])
        need(lk.peer_connect["capabilities"] & m.STORE_BATCH_CAP, "B does not announce STORE_BATCH")
        good = m.Record.signed(me, m.record_key(realm, "topic", "interop.batch"), b"interop.batch.*")
        bad = m.Record.signed(me, m.record_key(realm, "topic", "interop.batch2"), b"x")
        bad.signature = bytes(64)
        sts = await lk.store_batch([good, bad])
        need(sts == [m.S_STORED, m.S_BAD_SIGNATURE], f"statuses {sts}")
        return f"statuses {sts}"

    await check("dht.store", store())
    await check("dht.store-batch", store_batch())

    # ------------------------------------------------ CALL (8.3)
    async def call_plain():
        lk = await mesh.link(A[0], [(A[1], A[2])])
        ans = await lk.call("demo.echo", b"hello interop")
        need(ans == b"hello interop", f"answer {ans!r}")
        unk = await lk.call("interop.nobody", b"x")
        need(unk[:2] == ("error", m.E_UNKNOWN_PROCEDURE), f"unknown procedure: {unk}")
        return "echoed; unknown procedure -> ERROR 7"

    async def call_streamed():
        lk = await mesh.link(A[0], [(A[1], A[2])])
        payload = os.urandom(1536 * 1024)
        t0 = time.monotonic()
        ans = await lk.call("demo.echo", payload, timeout=15)
        need(ans == payload, f"answer of {len(ans) if isinstance(ans, bytes) else ans}")
        return f"1.5 MiB both ways streamed in {time.monotonic() - t0:.2f}s"

    async def call_too_large():
        lk = await mesh.link(A[0], [(A[1], A[2])])
        rid = lk.request_id()
        sid = lk.open_stream()
        lk.send(sid, m.frame(m.PAYLOAD_SIZE, m.u64(rid) + m.u64(m.MAX_PAYLOAD + 1)))
        lk.send(sid, m.frame(m.CALL, m.u64(rid) + m.string("demo.echo") + m.u32(5000) + m.u8(1)
                             + m.bytes_(bytes(m.MAX_FRAME_LEN // 2))))
        ans = await lk.read_answer(sid, rid)
        need(ans[:2] == ("error", m.E_TOO_LARGE), f"answer {ans}")
        lk.reset(sid, m.STREAM_ABANDONED)
        need(await lk.ping(), "no PONG after")
        return f"declared 16 MiB + 1: ERROR 5 {ans[2]!r}"

    async def call_cancel():
        lk = await mesh.link(A[0], [(A[1], A[2])])
        rid = lk.request_id()
        sid = lk.open_stream()
        lk.send(sid, m.frame(m.CALL, m.u64(rid) + m.string("demo.echo") + m.u32(5000) + m.u8(1)
                             + m.bytes_(b"cancel me")) + m.frame(m.CANCEL, m.u64(rid)))
        lk.send(sid, b"", fin=True)  # 8.3: CANCEL, finish, stop reading
        lk.stop(sid, m.STREAM_ABANDONED)
        st = lk.streams.setdefault(sid, m._Stream())
        await lk.wait_for(lambda: True if (st.reset is not None or len(st.buf) >= 8 or st.fin) else None, 5)
        outcome = (f"reset 0x{st.reset:x}" if st.reset is not None else
                   "answered before the CANCEL was read" if st.buf else "finished")
        need(st.reset in (None, m.STREAM_ABANDONED), f"reset with 0x{st.reset:x}, want 0x102")
        # CANCEL of an unknown call is ignored; the connection serves on.
        sid2 = lk.open_stream()
        lk.send(sid2, m.frame(m.CANCEL, m.u64(999_999)), fin=True)
        ans = await lk.call("demo.echo", b"after cancel")
        need(ans == b"after cancel", f"call after cancel: {ans}")
        return f"{outcome}; connection serves on"

    async def call_cancel_streaming():
        lk = await mesh.link(A[0], [(A[1], A[2])])
        rid = lk.request_id()
        sid = lk.open_stream()
        frames = lk.call_frames(rid, "demo.echo", os.urandom(1536 * 1024))
        lk.send(sid, frames[0] + frames[1])
        await asyncio.sleep(0.1)
        lk.reset(sid, m.STREAM_ABANDONED)
        ans = await lk.call("demo.echo", b"after abandon")
        need(ans == b"after abandon", f"call after: {ans}")
        st = lk.streams.get(sid)
        side = (f"reset 0x{st.reset:x}" if st and st.reset is not None else
                "finished" if st and st.fin else "left open")
        # More abandoned streams than the stream limit (100, section 1): each must be released.
        for i in range(120):
            credit = lambda: True if lk._quic.get_next_available_stream_id() // 4 < lk._quic._remote_max_streams_bidi else None
            try:
                await lk.wait_for(credit, 3)
            except asyncio.TimeoutError:
                raise AssertionError(f"no new stream credit after {i} abandoned streams: RESET_STREAM and "
                                     f"STOP_SENDING 0x102 sent mid-payload, the node never closes its side "
                                     f"(no RESET_STREAM, RFC 9000 3.5; section 7) and keeps the stream")
            rid = lk.request_id()
            s2 = lk.open_stream()
            lk.send(s2, m.frame(m.PAYLOAD_SIZE, m.u64(rid) + m.u64(2 * m.MAX_FRAME_LEN)))
            lk.reset(s2, m.STREAM_ABANDONED)
            lk.stop(s2, m.STREAM_ABANDONED)
        ans = await lk.call("demo.echo", b"after 120", timeout=5)
        need(ans == b"after 120", f"call after 120 abandoned streams: {ans}")
        return f"stream reset mid-payload (node's side of it: {side}); 120 more abandoned, connection serves on"

    await check("call.plain", call_plain())
    await check("call.streamed", call_streamed())
    await check("call.too-large", call_too_large())
    await check("call.cancelled", call_cancel())
    await check("call.cancelled-while-streaming", call_cancel_streaming())

    # ------------------------------------------------ pub/sub (8.2, 8.5, 8.7)
    async def publish_to_cli():
        # A fresh identity: the walks of the checks before spent this one's DHT request budget.
        mesh = m.Mesh(m.Identity(), realm)
        topic, payload = "interop.out.t1", f"py-{os.getpid()}"
        proc = await asyncio.create_subprocess_exec(
            args.bin, "subscribe", "interop.out.*", "--seed", nodes.seed(0), "--realm", realm,
            "--count", "1", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            subs = set()
            deadline = time.monotonic() + 10
            while not subs and time.monotonic() < deadline:
                for prefix in ("", "interop", "interop.out", "interop.out.t1"):
                    _, recs = await mesh.walk(m.record_key(realm, "topic", prefix), seeds, find_value=True)
                    for r in recs:
                        try:
                            lines = r.value.decode().split("\n")
                        except UnicodeDecodeError:
                            continue
                        if any(m.pattern_matches(p, topic) for p in lines):
                            subs.add(r.provider)
                if not subs:
                    await asyncio.sleep(1)
            need(subs, "no subscriber record for the topic within 10 s")
            sent, late = 0, []
            for sub in subs:
                addrs = await mesh.resolve(sub, seeds)
                lk = await mesh.link(sub, addrs)
                first = lk.peer_connect["capabilities"]
                caps = await lk.capabilities(m.PUBSUB, 3)
                need(caps & m.PUBSUB, f"subscriber announces 0x{first:x}, no PUBSUB, and no CAPABILITIES "
                                      f"with it within 3 s (8.7: a subscriber without PUBSUB is unreachable)")
                if not first & m.PUBSUB:
                    late.append(f"CONNECT said 0x{first:x}, CAPABILITIES 0x{caps:x} came after")
                sid = lk.open_stream()
                epoch = int(time.time() * 1_000_000)
                lk.send(sid, m.frame(m.PUBLISH, m.u64(1) + m.u64(epoch) + m.u64(0) + m.string(topic)
                                     + m.bytes_(payload.encode())))
                sent += 1
            out, err = await asyncio.wait_for(proc.communicate(), 10)
            await mesh.close()
            need(payload.encode() in out, f"subscriber printed {out[-200:]!r} {err[-200:]!r}")
            return f"{sent} subscriber(s) found via DHT, reached via §8.7; CLI printed the payload {' '.join(late)}"
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    async def receive_from_cli():
        got: asyncio.Queue = asyncio.Queue()
        sub_ident = m.Identity()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        pattern, topic = "interop.back.*", "interop.back.t1"

        async def on_link(lk: m.Link):
            try:
                c = await lk.read_connect()
                lk.send(0, lk.connect_frame(sub_ident.node_id, realm, m.PUBSUB, [("127.0.0.1", port)]))
                need(c["node_id"] == lk.peer_node_id(), "dialer's CONNECT names another node")
                while True:
                    sid = await asyncio.wait_for(lk.incoming.get(), 15)
                    if sid == 0:
                        continue
                    asyncio.ensure_future(read_publish(lk, sid))
            except Exception:
                pass

        async def read_publish(lk, sid):
            while lk.closed is None:
                try:
                    t, body, _ = await lk.read_frame(sid, 15)
                except (m.Closed, m.StreamEnded, m.StreamReset, asyncio.TimeoutError):
                    return
                if t == m.PUBLISH:
                    r = m.Reader(body)
                    mid, epoch, seq, tp, pl = r.u64(), r.u64(), r.u64(), r.string(), r.bytes_()
                    r.end()
                    await got.put((lk.peer_node_id(), epoch, seq, tp, pl))

        server = await m.listen(sub_ident, "127.0.0.1", port, on_link)
        sub_mesh = m.Mesh(sub_ident, realm, caps=m.PUBSUB, listen=[("127.0.0.1", port)])
        try:
            # The subscriber record and our peer record, each stored at the k closest (8.6).
            peer = m.PeerRecord(1, sub_ident.node_id, int(time.time() * 1000), 1,
                                [("127.0.0.1", port)], [], [])
            recs = [m.Record.signed(sub_ident, m.record_key(realm, "topic", m.literal_prefix(pattern)),
                                    pattern.encode()),
                    m.Record.signed(sub_ident, m.peer_key(realm, sub_ident.node_id), peer.encode())]
            for rec in recs:
                closest, _ = await sub_mesh.walk(rec.key, seeds)
                acks = [await (await sub_mesh.link(c.node_id, c.addrs)).store(rec) for c in closest]
                need(acks.count(m.S_STORED) * 2 > len(acks), f"store acks {acks}")
            proc = await asyncio.create_subprocess_exec(
                args.bin, "publish", topic, "from-cli", "--seed", nodes.seed(1), "--realm", realm,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(), 15)
            need(proc.returncode == 0, f"macula publish exited {proc.returncode}: {err[-300:]!r}")
            sender, epoch, seq, tp, pl = await asyncio.wait_for(got.get(), 5)
            need(tp == topic and pl == b"from-cli", f"got {tp!r} {pl!r}")
            need(seq == 0, f"first sequence {seq}")
            return (f"PUBLISH from {sender.hex()[:8]} epoch {epoch} seq {seq}; "
                    f"publish said {(out + err).decode().strip()!r}")
        finally:
            server.close()
            await sub_mesh.close()

    await check("pubsub.publish-to-cli", publish_to_cli())
    await check("pubsub.receive-from-cli", receive_from_cli())

    # ------------------------------------------------ STUN (section 10)
    async def stun_binding():
        txid = m.random_txid()
        req = m.stun_request(txid, m.stun_attr(0x8022, b"macula"))
        ans, local = m.stun_exchange(A[1], A[2], req)
        need(ans is not None, "no answer")
        mtype, tid, attrs = m.stun_parse(ans)
        need(mtype == 0x0101 and tid == txid, f"type 0x{mtype:04x}")
        need(len(ans) <= len(req) + 32, f"answer {len(ans)} bytes for a {len(req)}-byte request")
        xma = [v for t, v, _ in attrs if t == 0x0020]
        need(xma and m.stun_xor_address(xma[0], txid) == local, f"XOR-MAPPED-ADDRESS vs {local}")
        fp = [(v, off) for t, v, off in attrs if t == 0x8028]
        if fp:
            v, off = fp[0]
            head = bytearray(ans[:off])
            need(v == m.stun_fingerprint(bytes(head)), "FINGERPRINT does not check")
        names = [hex(t) for t, _, _ in attrs]
        # A minimal request (20 bytes): only XOR-MAPPED-ADDRESS fits.
        small, local2 = m.stun_exchange(A[1], A[2], m.stun_request(m.random_txid(), fingerprint=False))
        need(small is not None and len(small) <= 52, f"minimal request: {small!r}")
        return f"mapped {local}, attributes {names}, {len(ans)} bytes for {len(req)}"

    async def stun_unknown():
        txid = m.random_txid()
        req = m.stun_request(txid, m.stun_attr(0x0077, b"\0\0\0\0") + m.stun_attr(0x8022, b"macula"))
        ans, _ = m.stun_exchange(B[1], B[2], req)
        need(ans is not None, "no answer")
        mtype, tid, attrs = m.stun_parse(ans)
        need(mtype == 0x0111 and tid == txid, f"type 0x{mtype:04x}, want error response")
        err = [v for t, v, _ in attrs if t == 0x0009]
        need(err and err[0][2] == 4 and err[0][3] == 20, f"ERROR-CODE {err}")
        unk = [v for t, v, _ in attrs if t == 0x000A]
        need(unk and unk[0][:2] == b"\x00\x77", f"UNKNOWN-ATTRIBUTES {unk}")
        bad = bytearray(m.stun_request(m.random_txid()))
        bad[-1] ^= 1
        none, _ = m.stun_exchange(B[1], B[2], bytes(bad), timeout=0.5)
        need(none is None, "a wrong FINGERPRINT was answered")
        return "420 with UNKNOWN-ATTRIBUTES 0x0077; wrong FINGERPRINT dropped"

    async def stun_attributes():
        C = nodes.list[2]
        # A comprehension-optional attribute it does not know is skipped.
        txid = m.random_txid()
        ans, local = m.stun_exchange(C[1], C[2], m.stun_request(txid, m.stun_attr(0xC0DE, b"skip")))
        need(ans is not None and m.stun_parse(ans)[0] == 0x0101, f"unknown optional attribute: {ans!r}")
        # CHANGE-REQUEST: a node has no alternate address, so a change counts as unknown (420);
        # both flags clear is answered normally.
        ans, _ = m.stun_exchange(C[1], C[2], m.stun_request(m.random_txid(), m.stun_attr(0x0003, m.u32(0x6))))
        need(ans is not None and m.stun_parse(ans)[0] == 0x0111, f"CHANGE-REQUEST change: {ans!r}")
        ans, _ = m.stun_exchange(C[1], C[2], m.stun_request(m.random_txid(), m.stun_attr(0x0003, m.u32(0))))
        need(ans is not None and m.stun_parse(ans)[0] == 0x0101, f"CHANGE-REQUEST no change: {ans!r}")
        # Without the magic cookie (RFC 3489) it is not STUN here: dropped.
        old = bytearray(m.stun_request(m.random_txid(), fingerprint=False))
        old[4:8] = b"\x01\x02\x03\x04"
        ans, _ = m.stun_exchange(C[1], C[2], bytes(old), timeout=0.5)
        need(ans is None, "a message without the magic cookie was answered")
        return "optional unknown skipped; CHANGE-REQUEST 0x6 -> 420, 0 -> success; no cookie dropped"

    async def stun_rate():
        C = nodes.list[2]
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.5)
        try:
            for _ in range(40):
                s.sendto(m.stun_request(m.random_txid()), (C[1], C[2]))
            answered = 0
            while True:
                try:
                    s.recvfrom(2048)
                    answered += 1
                except socket.timeout:
                    break
        finally:
            s.close()
        need(0 < answered < 40, f"{answered} of 40 back-to-back requests answered")
        return f"{answered} of 40 back-to-back requests from one IP answered (token bucket)"

    await check("stun.binding", stun_binding())
    await check("stun.attributes", stun_attributes())
    await check("stun.unknown-attribute", stun_unknown())
    await check("stun.rate-limit", stun_rate())

    # ------------------------------------------------ malformed input (section 7)
    ping = m.frame(m.PING, m.u64(7))
    fn_body = m.u64(3) + os.urandom(32)
    await check("malformed.version", fatal(mesh, B, m.frame(m.PING, m.u64(1), version=2), want_code=m.R_VERSION))
    await check("malformed.flags", fatal(mesh, B, m.frame(m.PING, m.u64(1), flags=1)))
    await check("malformed.reserved", fatal(mesh, B, m.frame(m.PING, m.u64(1), reserved=1)))
    await check("malformed.length-over-max", fatal(mesh, B, m.frame(m.PING, b"", length=m.MAX_FRAME_LEN + 1)))
    await check("malformed.trailing-bytes", fatal(mesh, B, m.frame(m.FIND_NODE, fn_body + b"\0"), sid=None))
    await check("malformed.short-field", fatal(mesh, B, m.frame(m.FIND_NODE, fn_body[:-1]), sid=None))
    await check("malformed.bool", fatal(mesh, B, m.frame(m.CALL, m.u64(1) + m.string("demo.echo") + m.u32(0)
                                                        + m.u8(2) + m.bytes_(b"")), sid=None))
    await check("malformed.utf8", fatal(mesh, B, m.frame(m.CALL, m.u64(1) + m.u16(2) + b"\xff\xfe" + m.u32(0)
                                                        + m.u8(0) + m.bytes_(b"")), sid=None))
    await check("malformed.string-over-limit", fatal(mesh, B, m.frame(m.CALL, m.u64(1) + m.u16(1025) + b"a" * 1025
                                                                     + m.u32(0) + m.u8(0) + m.bytes_(b"")), sid=None))
    rec = m.Record.signed(me, os.urandom(32), b"x")
    await check("malformed.list-over-limit",
                fatal(mesh, B, m.frame(m.STORE_BATCH, m.u64(1) + m.u16(257) + rec.encode() * 257), sid=None))
    await check("malformed.address-family",
                fatal(m.Mesh(me, realm), B, m.frame(m.CONNECT, me.node_id + m.string(realm) + m.u64(0)
                                                    + m.u16(1) + m.u8(5) + bytes(6)),
                      after_connect=False))
    await check("malformed.realm-syntax",
                fatal(m.Mesh(me, realm), B, m.frame(m.CONNECT, me.node_id + m.string("Not A Realm")
                                                    + m.u64(0) + m.u16(0)), after_connect=False))
    off_curve = m.Record.signed(me, os.urandom(32), b"x")
    off_curve.publisher = m.not_a_curve_point()
    await check("malformed.publisher-not-on-curve",
                fatal(mesh, B, m.frame(m.STORE, m.u64(1) + off_curve.encode()), sid=None))
    await check("malformed.frame-before-connect", fatal(mesh, B, ping, after_connect=False))
    await check("malformed.second-connect",
                fatal(mesh, B, m.frame(m.CONNECT, me.node_id + m.string(realm) + m.u64(0) + m.u16(0))))
    await check("malformed.request-on-control-stream", fatal(mesh, B, m.frame(m.FIND_NODE, fn_body)))
    await check("malformed.control-fin", fatal(mesh, B, b"", fin=True))

    async def unknown_type():
        lk = await mesh.dial(B[0], B[1], B[2])
        await lk.read_connect()
        lk.send(0, m.frame(0x7e, b"ignored"))
        need(await lk.ping(), "no PONG after an unknown frame on the control stream")
        sid = lk.open_stream()
        lk.send(sid, m.frame(0x7e, b"x") + m.frame(m.FIND_NODE, fn_body), fin=True)
        t, body, _ = await lk.read_frame(sid)
        need(t == m.FIND_NODE_REPLY, f"answer 0x{t:02x}")
        only = lk.open_stream()
        lk.send(only, m.frame(0x7e, b"x"), fin=True)
        try:
            await lk.read_frame(only, 3)
            raise AssertionError("an answer to a stream of unknown frames")
        except m.StreamReset as e:
            need(e.code == m.STREAM_REFUSED, f"reset 0x{e.code:x}, want 0x101")
        cut = lk.open_stream()
        lk.send(cut, m.frame(m.FIND_NODE, fn_body)[:20], fin=True)
        try:
            await lk.read_frame(cut, 3)
            raise AssertionError("an answer to a stream cut mid-frame")
        except m.StreamReset as e:
            need(e.code == m.STREAM_REFUSED, f"FIN mid-frame: reset 0x{e.code:x}, want 0x101")
        empty = lk.open_stream()
        lk.send(empty, b"", fin=True)
        await asyncio.sleep(0.5)
        est = lk.streams.get(empty)
        need(est is None or (est.reset is None and not est.buf), "a stream finished with no byte was answered or reset")
        need(lk.closed is None and await lk.ping(), "connection gone")
        return "unknown frames skipped on control and request streams; only-unknown and FIN mid-frame -> reset 0x101; empty stream ignored"

    await check("malformed.unknown-type", unknown_type())

    await mesh.close()
    print(f"interop: {RESULTS['pass']} passed, {RESULTS['FAIL']} failed", flush=True)
    return 1 if RESULTS["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
