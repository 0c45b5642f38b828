"""A gunicorn config file for test/bench/threads' `w3capx`: each gthread worker registers the
shared socket in its epoll set with EPOLLEXCLUSIVE, so that a new connection wakes one waiting
worker instead of all of them. A side experiment (does the thundering herd of a connection per
request cost the workers CPU?), not something the launcher does.

    gunicorn -c test/bench/gunicorn-exclusive-accept.py ...
"""

import select


def post_worker_init(worker):
    poller = getattr(worker, "poller", None)
    if poller is None:
        return
    register = poller.register
    listeners = {s.fileno() for s in worker.sockets}

    def exclusive(fileobj, events, data=None):
        key = register(fileobj, events, data)
        if key.fd in listeners:
            # EPOLL_CTL_MOD cannot add EPOLLEXCLUSIVE: delete and add again. selectors maps the
            # events back to the key by fd.
            poller._selector.unregister(key.fd)
            poller._selector.register(key.fd, select.EPOLLIN | select.EPOLLEXCLUSIVE)
        return key

    poller.register = exclusive
