"""A stand-in for `launcher run`'s fan-out, for test/bench/restart-drops only: what would change
if the launcher took an old copy out of the accept set before stopping it.

    python restart-drops-standin.py PORT WORKERS term|drain -- SERVER ARGS...

Binds 127.0.0.1:PORT, starts WORKERS copies of `SERVER ARGS... --fd N` sharing the socket, and
on SIGHUP restarts them one at a time as the launcher does: a new copy, then, once it waits on
the socket in an epoll set (what the launcher calls serving), SIGTERM to an old one. With
`drain`, the old copy is first taken out of the accept set: the socket is removed from the copy's
epoll set (its epoll fd fetched with pidfd_getfd(2), Linux 5.6, and EPOLL_CTL_DEL under the
number the copy registered it with), then 200 ms pass, in which the copy reads the requests of
the connections it accepted, before SIGTERM. Prints `event=restart_done` after each restart;
SIGTERM stops every copy and exits.
"""

import ctypes
import os
import select
import signal
import socket
import subprocess
import sys
import time

SYS_PIDFD_GETFD = 438
LIBC = ctypes.CDLL(None, use_errno=True)
DRAIN_WAIT = 0.2


def pidfd_getfd(pid, fd):
    """A copy of process pid's descriptor fd."""
    pidfd = os.pidfd_open(pid)
    try:
        got = LIBC.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
        if got < 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))
        return got
    finally:
        os.close(pidfd)


def epoll_holding(pid, inode):
    """(the epoll fd of pid whose set holds the socket `inode`, the number it is registered
    under), from /proc/PID/fdinfo; None when no epoll set holds it."""
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{name}") != "anon_inode:[eventpoll]":
                continue
            with open(f"/proc/{pid}/fdinfo/{name}") as info:
                lines = info.read().splitlines()
        except OSError:
            continue
        for line in lines:
            # tfd:        7 events:       19 data:                7  pos:0 ino:6d24 sdev:8
            fields = line.split()
            inodes = [f[4:] for f in fields if f.startswith("ino:")]
            if fields[:1] == ["tfd:"] and inodes and int(inodes[0], 16) == inode:
                return int(name), int(fields[1])
    return None


def take_out(pid, sock):
    """Removes sock from the epoll set of process pid; False when none holds it."""
    found = epoll_holding(pid, os.fstat(sock.fileno()).st_ino)
    if found is None:
        return False
    their_epoll, number = found
    epoll = select.epoll.fromfd(pidfd_getfd(pid, their_epoll))
    # EPOLL_CTL_DEL finds the entry by (file, number): the socket must be at that number here.
    held = None
    try:
        os.fstat(number)
        held = os.dup(number)
    except OSError:
        pass
    try:
        os.dup2(sock.fileno(), number, inheritable=False)
        epoll.unregister(number)
    finally:
        epoll.close()
        if held is not None:
            os.dup2(held, number)
            os.close(held)
        elif number != sock.fileno():
            os.close(number)
    return True


class StandIn:
    def __init__(self, port, workers, mode, argv):
        self.mode = mode
        self.argv = argv
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(2048)
        self.inode = os.fstat(self.sock.fileno()).st_ino
        self.copies = [self.spawn() for _ in range(workers)]
        self.hup = False
        self.term = False
        signal.signal(signal.SIGHUP, self.on_hup)
        signal.signal(signal.SIGTERM, self.on_term)

    def on_hup(self, *_):
        self.hup = True

    def on_term(self, *_):
        self.term = True

    def spawn(self):
        fd = str(self.sock.fileno())
        # One process per copy, as the launcher's fan-out makes it (uvicorn reads its --workers
        # from WEB_CONCURRENCY).
        env = dict(os.environ, WEB_CONCURRENCY="1")
        return subprocess.Popen(self.argv + ["--fd", fd], pass_fds=[self.sock.fileno()], env=env)

    def serving(self, copy):
        return epoll_holding(copy.pid, self.inode) is not None

    def restart(self):
        started = time.monotonic()
        for slot, old in enumerate(list(self.copies)):
            new = self.spawn()
            while not self.serving(new):
                if new.poll() is not None or self.term:
                    new.kill()
                    sys.exit(f"standin: the new copy did not serve ({new.returncode})")
                time.sleep(0.02)
            if self.mode == "drain" and take_out(old.pid, self.sock):
                time.sleep(DRAIN_WAIT)
            old.send_signal(signal.SIGTERM)
            old.wait(30)
            self.copies[slot] = new
        took = time.monotonic() - started
        print(f"standin: at=info event=restart_done took_s={took:.1f} mode={self.mode}", flush=True)

    def run(self):
        while not self.term:
            if self.hup:
                self.hup = False
                self.restart()
            time.sleep(0.02)
        for copy in self.copies:
            copy.send_signal(signal.SIGTERM)
        for copy in self.copies:
            copy.wait(30)


def main():
    port, workers, mode, separator, *argv = sys.argv[1:]
    if mode not in ("term", "drain") or separator != "--" or not argv:
        sys.exit(__doc__)
    StandIn(int(port), int(workers), mode, argv).run()


if __name__ == "__main__":
    main()
