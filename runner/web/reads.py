"""The daemon's one thread of long reads (a new page of GET /jobs, a job's charts, one series),
shared among the people asking: runner/http.py and the dashboard's routes hand their reads here."""

from __future__ import annotations

import asyncio
import collections
import functools
import threading

from fastapi import HTTPException


class Reads:
    """Reads that may take long (a page of 1,000 jobs with 1,000 metric names each, the charts of a
    job of 1,000 metrics), made off the event loop in a thread of their own, one after another,
    while the loop answers /healthz and the rest. bench_http_load, 200 clients each asking a page of
    /jobs no one asked before: p50 260-320 ms, p99 444-527 ms, /healthz meanwhile 17-42 ms; on the
    loop p50 381-397, p99 381-395, /healthz 336-353 ms; in FastAPI's 40 threads (which convoy on the
    GIL) p50 534-910, p99 933-1646 ms; in 2, p99 ~800.

    The thread is shared fairly among the people asking (`who`: the uid of the request's token or
    session, else of its loopback socket: reader()): each person's reads wait in a line of her own
    and the thread takes one from each line in turn, so a teammate who keeps many long reads waiting
    delays another person's read by the one being made, not by all of hers (first come, first
    served, 8 of his 2 s pages held hers 16 s). At most WAITING reads of one person wait at once; one
    more is refused (429). A read whose client went away is not made. Reads of one `key` asked
    while one of them waits or is made share its answer and take no place in anyone's line (200
    clients asking the same page at once: one read, not 184 of them refused)."""

    WAITING = 16

    def __init__(self):
        self.lock = threading.Lock()
        self.ready = threading.Condition(self.lock)
        self.lines: dict = {}  # who -> her reads waiting: deque of (loop, future, call)
        self.turns = collections.deque()  # who has reads waiting, in the order they get the thread
        self.served = None  # whose read was taken last: her next one waits behind everyone already waiting
        self.shared: dict = {}  # key -> the future of the read of it that waits or is being made
        self.thread = None

    def waiting(self, who) -> int:
        with self.lock:
            return len(self.lines.get(who, ()))

    async def __call__(self, fn, *args, who=None, request=None, key=None):
        loop = asyncio.get_running_loop()
        while key is not None:
            same = self.shared.get(key)
            if same is None or same.done() or same.get_loop() is not loop:
                break
            try:
                return await asyncio.shield(same)  # (the same read asked already: its answer)
            except asyncio.CancelledError:
                if not same.cancelled():
                    raise  # this request was cancelled
                # its asker went away before it was made: ask for it anew
        fut = loop.create_future()
        if key is not None:
            self.shared[key] = fut
            fut.add_done_callback(lambda f: self.shared.pop(key) if self.shared.get(key) is f else None)
        with self.lock:
            line = self.lines.get(who)
            if line is not None and len(line) >= self.WAITING:  # (those whose clients went away do not count)
                line = self.lines[who] = collections.deque(i for i in line if not i[1].cancelled())
            if line is not None and len(line) >= self.WAITING:
                raise HTTPException(429, f"{len(line)} long reads of yours are waiting already (at most {self.WAITING}): "
                                         "ask again once they are answered")
            if line is None:
                line = self.lines[who] = collections.deque()
                if who != self.served:  # (she goes back in line once her read in the making is done: _next)
                    self.turns.append(who)
            line.append((loop, fut, functools.partial(fn, *args)))
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._serve, name="runner-read", daemon=True)
                self.thread.start()
            self.ready.notify()
        if request is None:
            return await fut
        gone = asyncio.ensure_future(_gone(request))  # the client closing its connection while hers waits
        try:
            await asyncio.wait({fut, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not fut.done():  # (a read already in the making is finished, and its answer dropped)
            fut.cancel()
            raise HTTPException(499, "the client closed its connection")
        return fut.result()

    def _next(self):
        with self.lock:
            if self.served is not None and self.served in self.lines:
                self.turns.append(self.served)  # after everyone who came while her read was made
            self.served = None
            while True:
                while not self.turns:
                    self.ready.wait()
                who = self.turns.popleft()
                line = self.lines[who]
                while line and line[0][1].cancelled():  # its client went away while it waited: not made, no turn spent
                    line.popleft()
                if not line:
                    del self.lines[who]
                    continue
                self.served = who
                item = line.popleft()
                if not line:
                    del self.lines[who]
                return item

    def _serve(self):
        while True:
            loop, fut, call = self._next()
            try:
                result, error = call(), None
            except BaseException as e:  # handed to the request, as run_in_executor would
                result, error = None, e
            try:
                loop.call_soon_threadsafe(_settle, fut, result, error)
            except RuntimeError:  # its loop is closed (the server stopped)
                pass


async def _gone(request):
    """Returns once the request's client has closed its connection (ASGI's http.disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _settle(fut, result, error):
    if not fut.done():
        fut.set_exception(error) if error is not None else fut.set_result(result)


