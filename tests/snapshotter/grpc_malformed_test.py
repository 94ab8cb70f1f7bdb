"""gRPC tests of the shim against malformed input: raw HTTP/2 (python3-h2)
and gRPC framing that containerd would never send -- garbage, truncated or
oversized messages, undecodable protobuf, bad UTF-8, unknown methods, wrong
content types, and clients that stop reading or vanish mid-stream.  The shim
must answer with the status grpc-go gives, store nothing, and keep serving.

Registered into grpc_test.py's list (which imports this module) and run by
run.sh with the other gRPC tests.
"""
import os
import socket
import struct
import sys
import time

import grpc_test as g
from grpc_test import MD, SVC, alive_and_working, check, code_of, test

def raw_call(sock_path, path, body, content_type="application/grpc", end_stream=True, timeout=5):
    """One request on a fresh h2 connection, the body sent as flow control allows.
    Returns (response and trailer headers, response data, RST_STREAM code or None)."""
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(sock_path)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", path),
                            (":authority", "localhost"), ("content-type", content_type), ("te", "trailers"),
                            ("containerd-namespace", "default")])
    st = {"headers": {}, "data": b"", "reset": None, "done": False}

    def pump():
        """Reads once and handles the events; False when nothing more will come."""
        try:
            chunk = s.recv(65536)
        except (socket.timeout, ConnectionResetError):
            return False
        if not chunk:
            return False
        try:
            events = conn.receive_data(chunk)
        except Exception as e:  # a protocol error of the server
            st["headers"].setdefault("h2-error", repr(e))
            return False
        for ev in events:
            if isinstance(ev, (h2.events.ResponseReceived, h2.events.TrailersReceived)) and ev.stream_id == sid:
                st["headers"].update(dict(ev.headers))
            elif isinstance(ev, h2.events.DataReceived):
                if ev.stream_id == sid:
                    st["data"] += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                st["done"] = True
            elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                st["reset"] = ev.error_code
                st["done"] = True
            elif isinstance(ev, h2.events.ConnectionTerminated):
                st["done"] = True
        try:
            s.sendall(conn.data_to_send())
        except OSError:
            return False
        return True

    deadline = time.time() + timeout
    try:
        s.sendall(conn.data_to_send())
        off = 0
        while not st["done"] and time.time() < deadline:
            try:
                n = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size, len(body) - off)
                if n > 0 or off == len(body):
                    last = off + n == len(body)
                    conn.send_data(sid, body[off:off + n], end_stream=end_stream and last)
                    s.sendall(conn.data_to_send())
                    off += n
                    if last:
                        break
                    continue
            except h2.exceptions.H2Error:  # the server ended the stream early
                break
            if not pump():
                break
        while not st["done"] and time.time() < deadline:
            if not pump():
                break
    except OSError:
        pass
    finally:
        s.close()
    return st["headers"], st["data"], st["reset"]


def grpc_frame(msg, declared=None):
    return b"\x00" + struct.pack(">I", len(msg) if declared is None else declared) + msg


def raw_status(headers):
    return headers.get("grpc-status"), headers.get(":status"), headers.get("grpc-message", "")


def malformed_setup(ctx):
    shim = ctx.start()
    return shim, ctx.sock()


@test("malformed: garbage instead of the HTTP/2 preface")
def t_garbage(ctx):
    shim, sock = malformed_setup(ctx)
    for garbage in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"\xff" * 64, bytes(range(256)) * 4):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(sock)
        s.sendall(garbage)
        closed = False
        try:
            deadline = time.time() + 5
            while time.time() < deadline:
                d = s.recv(4096)
                if not d:
                    closed = True
                    break
        except (socket.timeout, ConnectionResetError):
            closed = not isinstance(sys.exc_info()[1], socket.timeout)
        s.close()
        check(closed, "the shim did not close a connection that sent garbage")
        alive_and_working(shim, ctx)
    # a connection that sends half a preface and hangs up
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock)
    s.sendall(b"PRI * HTTP/2.0\r\n")
    s.close()
    alive_and_working(shim, ctx)
    shim.stop_ok()


@test("malformed: truncated gRPC message then END_STREAM -> INTERNAL")
def t_truncated(ctx):
    shim, sock = malformed_setup(ctx)
    msg = g.pb.StatSnapshotRequest(snapshotter="fuse-overlayfs", key="x").SerializeToString()
    for body in (grpc_frame(msg, declared=len(msg) + 100), b"\x00\x00\x00", grpc_frame(msg) + b"\x00\x00"):
        h, _, _ = raw_call(sock, SVC + "Stat", body)
        gs, hs, gm = raw_status(h)
        check(gs == "13", "body %r: grpc-status %r (:status %r, %r), expected 13 INTERNAL" % (body[:8], gs, hs, gm))
        alive_and_working(shim, ctx)
    shim.stop_ok()


@test("malformed: declared length > 4 MiB -> RESOURCE_EXHAUSTED")
def t_too_large(ctx):
    shim, sock = malformed_setup(ctx)
    bad = []
    for end in (True, False):
        h, _, reset = raw_call(sock, SVC + "Stat", grpc_frame(b"\x0a\x01x" + b"\0" * 1000, declared=(4 << 20) + 1),
                               end_stream=end)
        if raw_status(h)[0] != "8":
            bad.append("DATA declaring %d bytes (END_STREAM %s): no grpc-status 8 RESOURCE_EXHAUSTED but "
                       "headers %r, RST_STREAM %r" % ((4 << 20) + 1, end, h, reset))
        alive_and_working(shim, ctx)
    # what grpcio (as grpc-go) makes of it
    c = ctx.client()
    code = code_of(c.prepare, "big", labels={"k": "v" * (5 << 20)})
    if code != g.grpc.StatusCode.RESOURCE_EXHAUSTED:
        bad.append("grpcio Prepare of 5 MiB: %s, expected RESOURCE_EXHAUSTED" % code)
    ctx.close_clients()
    alive_and_working(shim, ctx)
    # up to 4 MiB is a request like any other: Stat of a huge key -> NotFound
    big = g.pb.StatSnapshotRequest(key="k" * ((4 << 20) - 64)).SerializeToString()
    check(len(big) <= 4 << 20, "test message too large")
    h, _, reset = raw_call(sock, SVC + "Stat", grpc_frame(big), timeout=20)
    gs, hs, gm = raw_status(h)
    if gs != "5":
        bad.append("a %d-byte request: grpc-status %r (%r), RST_STREAM %r, expected 5 NOT_FOUND" %
                   (len(big), gs, gm[:80], reset))
    alive_and_working(shim, ctx)
    check(not bad, "; ".join(bad))
    shim.stop_ok()


@test("malformed: undecodable protobuf -> INTERNAL")
def t_undecodable(ctx):
    shim, sock = malformed_setup(ctx)
    for junk in (b"\x0a\x20abc", b"\xff" * 11, b"\x12\x85", b"\x0b\x12\x01x"):
        h, _, _ = raw_call(sock, SVC + "Stat", grpc_frame(junk))
        gs, hs, gm = raw_status(h)
        check(gs == "13", "%r: grpc-status %r (:status %r, %r), expected 13 INTERNAL" % (junk, gs, hs, gm))
        alive_and_working(shim, ctx)
    shim.stop_ok()


@test("malformed: a proto3 string that is not UTF-8 -> INTERNAL (as grpc-go), nothing stored")
def t_utf8(ctx):
    shim, sock = malformed_setup(ctx)
    # PrepareSnapshotRequest{key: "\xff\xfe"}: grpc-go refuses to unmarshal it
    h, _, _ = raw_call(sock, SVC + "Prepare", grpc_frame(b"\x12\x02\xff\xfe"))
    gs, hs, gm = raw_status(h)
    # List through raw HTTP/2
    lh, data, _ = raw_call(sock, SVC + "List", grpc_frame(b""))
    saved = os.dup(2)  # the C++ protobuf logs decoding errors on stderr
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        n = 0
        while data:
            ln = struct.unpack(">I", data[1:5])[0]
            n += len(g.pb.ListSnapshotsResponse.FromString(data[5:5 + ln]).info)
            data = data[5 + ln:]
        listed = "List gives %d snapshots" % n
    except Exception as e:
        listed = "List replies cannot be decoded by any client afterwards (%s)" % type(e).__name__
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    check(gs == "13", "Prepare with key b'\\xff\\xfe': grpc-status %r (%r), expected 13 INTERNAL; %s" %
          (gs, gm, listed))
    alive_and_working(shim, ctx)
    shim.stop_ok()


@test("malformed: unknown method -> UNIMPLEMENTED")
def t_unknown(ctx):
    shim, sock = malformed_setup(ctx)
    msg = grpc_frame(g.pb.StatSnapshotRequest(key="x").SerializeToString())
    for path in (SVC + "Nope", "/containerd.services.snapshots.v1.Snapshot/Stat", "/x/Stat",
                 SVC + "Stat/extra", "/", SVC + "S" * 400):
        h, _, _ = raw_call(sock, path, msg)
        gs, hs, gm = raw_status(h)
        check(gs == "12", "%s: grpc-status %r (:status %r, %r), expected 12 UNIMPLEMENTED" % (path[:60], gs, hs, gm))
        alive_and_working(shim, ctx)
    # and grpcio's view of it
    ch = g.grpc.insecure_channel("unix:" + sock)
    try:
        fn = ch.unary_unary(SVC + "Nope", request_serializer=lambda m: m.SerializeToString(),
                            response_deserializer=g.empty_pb2.Empty.FromString)
        code = code_of(fn, g.pb.StatSnapshotRequest(key="x"), metadata=MD, timeout=10)
        check(code == g.grpc.StatusCode.UNIMPLEMENTED, "grpcio sees %s" % code)
    finally:
        ch.close()
    shim.stop_ok()


@test("malformed: wrong content-type -> HTTP 415")
def t_content_type(ctx):
    shim, sock = malformed_setup(ctx)
    msg = grpc_frame(g.pb.StatSnapshotRequest(key="x").SerializeToString())
    for ct in ("text/plain", "application/json", "application/grpcx"):
        h, _, _ = raw_call(sock, SVC + "Stat", msg, content_type=ct)
        check(h.get(":status") == "415", "content-type %s: :status %r, expected 415" % (ct, h.get(":status")))
        alive_and_working(shim, ctx)
    h, _, _ = raw_call(sock, SVC + "Stat", msg, content_type="application/grpc+proto")
    gs, hs, gm = raw_status(h)
    check(hs == "200" and gs == "5", "application/grpc+proto: :status %r grpc-status %r (%r), expected 200/5" % (hs, gs, gm))
    shim.stop_ok()


@test("malformed: clients that stop reading or vanish in the middle of large List replies")
def t_slow_clients(ctx):
    import h2.config
    import h2.connection
    shim, sock = malformed_setup(ctx)
    c = ctx.client()
    errs = g.prepare_many(c, 250, lambda i: {"big": "x" * 3000, "b2": "y" * 1000})
    check(not errs, "Prepare failed: %s" % errs[:2])
    sizes = [len(m.info) for m in c.list_msgs()]
    check(sum(sizes) == 250 and max(sizes) <= 100, "List of ~1 MB: batches %r" % sizes)

    def flood(n_streams):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(sock)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        for _ in range(n_streams):
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", SVC + "List"),
                                    (":authority", "x"), ("content-type", "application/grpc")])
            conn.send_data(sid, grpc_frame(b""), end_stream=True)
        s.sendall(conn.data_to_send())
        return s
    slow = flood(20)  # never reads
    time.sleep(0.3)
    t0 = time.time()
    check(len(c.names()) == 250, "another client during a slow reader")
    check(time.time() - t0 < 2, "a slow reader holds up other clients (%.1fs)" % (time.time() - t0))
    slow.close()
    for _ in range(10):
        s = flood(3)
        s.recv(100)
        s.close()
    time.sleep(0.2)
    ctx.close_clients()
    alive_and_working(shim, ctx)
    shim.stop_ok()
