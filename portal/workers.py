"""The gunicorn worker of production: uvicorn's (`uvicorn_worker.UvicornWorker`), with a
listening socket of its own beside the one gunicorn shares among its workers.

    gunicorn portal.asgi:application -k portal.workers.UvicornWorker --reuse-port -w 4 ...

Why: a keep-alive connection stays with the worker that accepted it, and a worker runs Python
on one core at a time. On the one socket gunicorn shares, every worker waits for connections and
uvloop accepts all those pending when it wakes, so connections opened in a burst (a proxy's pool
filling up, a load generator's) land mostly on the first worker to wake: 26 of 32 and 32 of 32
on one of two workers in the benchmark (docs/performance.md, run 14), the other worker idle.

How: with gunicorn's `--reuse-port` (`SO_REUSEPORT` on its socket), each worker also binds a
socket of its own to the same address, and the kernel spreads new connections over the port's
sockets by a hash of each connection's addresses: with n workers, about 1/(n + 1) of them reach
the shared socket (whichever worker wakes takes those) and the rest each worker's own. The
shared socket stays served, so nothing waits on a socket no worker accepts from. Without
`--reuse-port` the worker is uvicorn's, unchanged.

A worker's own socket closes with it: connections still queued on it when it stops are reset
(on Linux 5.14 and later, `net.ipv4.tcp_migrate_req = 1` moves them to another socket of the
port). The shared socket keeps its queue across worker restarts, as before."""

from __future__ import annotations

import socket

from uvicorn_worker import UvicornWorker as _UvicornWorker


def own_listeners(shared: list, backlog: int) -> list[socket.socket]:
    """A listening socket bound to the address of each TCP socket of `shared` that has
    `SO_REUSEPORT` set, with the same option (and `IPV6_V6ONLY` as the shared one's); sockets
    without it (gunicorn without `--reuse-port`, a Unix socket) get none. Raises OSError when
    the address cannot be bound."""
    out = []
    for listener in shared:
        sock = getattr(listener, "sock", listener)  # gunicorn's listener wraps its socket
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            continue
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT):
            continue
        own = socket.socket(sock.family, socket.SOCK_STREAM)
        try:
            own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if sock.family == socket.AF_INET6:
                v6only = sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
                own.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
            own.bind(sock.getsockname())
            own.listen(backlog)
            own.setblocking(False)
        except OSError:
            own.close()
            raise
        out.append(own)
    return out


class UvicornWorker(_UvicornWorker):
    """uvicorn's worker, serving gunicorn's sockets and, with `--reuse-port`, one of its own
    for each (see the module docstring)."""

    def run(self) -> None:
        self.sockets = [*self.sockets, *own_listeners(self.sockets, self.cfg.backlog)]
        return super().run()
