#!/usr/bin/python3
"""Helper of rootless_e2e.sh: plays systemd's side of sd_notify(3).

  sd_notify_listen.py SOCKET [SECONDS]
      Binds the datagram socket SOCKET (what NOTIFY_SOCKET names), prints each
      message it receives as one line, "pid=PID uid=UID MESSAGE" with
      the sender's credentials (SCM_CREDENTIALS, as systemd checks them for
      NotifyAccess=), until a message holds READY=1 or SECONDS (15) pass;
      removes SOCKET.  Exits 0 once READY=1 came, 1 otherwise.
"""
import os
import socket
import struct
import sys


def main(argv):
    if len(argv) not in (2, 3):
        sys.stderr.write(__doc__)
        return 2
    path = argv[1]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    s.bind(path)
    s.settimeout(float(argv[2]) if len(argv) == 3 else 15.0)
    ready = False
    try:
        while not ready:
            try:
                msg, anc, _, _ = s.recvmsg(4096, socket.CMSG_SPACE(12))
            except socket.timeout:
                break
            pid = uid = "?"
            for level, kind, data in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid, uid, _ = struct.unpack("iII", data[:12])
            text = msg.decode(errors="replace").replace("\n", " ").strip()
            print("pid=%s uid=%s %s" % (pid, uid, text), flush=True)
            ready = "READY=1" in text.split()
    finally:
        os.unlink(path)
    return 0 if ready else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
