"""A daemonless broadcast bus between processes on one machine.

``Bus`` is python-bus's class, with its API and semantics (programs
written for python-bus run unchanged), built on the Rust core and its
race-free listener. Beyond it: ``with`` blocks, ``for message in
bus.listen(path)``, ``async for message in bus.listen(path)``, and ``str``
or ``bytes`` messages.
"""

from __future__ import annotations

import asyncio
import os

from . import _bus
from ._bus import MAX_MESSAGE_LEN, Subscription, __version__

__all__ = ["Bus", "Listener", "listen", "MAX_MESSAGE_LEN", "__version__"]


class Bus(_bus.Bus):
    # The methods are the native class's; the constructor is here so that
    # subclasses can call it, as python-bus's class allows.
    __doc__ = _bus.Bus.__doc__
    __slots__ = ()

    def __init__(self, pathname: str | os.PathLike[str] | None = None) -> None:
        self.pathname = pathname


class Listener:
    """Listens to a bus from its creation to ``close()``: every message
    broadcast meanwhile comes out of its iterator, in order, exactly once.

    Messages wait in a queue of ``capacity``; when it is full the bus is
    held (writers wait) until one is taken: nothing is lost. Iterate with
    ``for`` (blocks; Ctrl-C raises ``KeyboardInterrupt`` and leaves the
    bus) or ``async for`` (asyncio: waits on the event loop, no thread).
    Messages are ``bytes``, or ``str`` with ``text=True`` (decoded as UTF-8,
    invalid bytes replaced).
    """

    def __init__(self, pathname: str | os.PathLike[str], *, text: bool = False,
                 capacity: int = 1024) -> None:
        self._sub = Subscription(os.fspath(pathname), capacity)
        self._text = text

    def _out(self, message: bytes) -> bytes | str:
        return message.decode("utf-8", "replace") if self._text else message

    def __iter__(self) -> Listener:
        return self

    def __next__(self) -> bytes | str:
        return self._out(self._sub.next())

    def get_nowait(self) -> bytes | str | None:
        """The next message if one waits, else ``None``."""
        try:
            message = self._sub.try_next()
        except StopAsyncIteration:
            return None
        return None if message is None else self._out(message)

    def __aiter__(self) -> Listener:
        return self

    async def __anext__(self) -> bytes | str:
        loop = asyncio.get_running_loop()
        fd = self._sub.fileno()
        while True:
            # Wake-ups are cleared first: one that comes after is kept.
            self._sub.clear_wakeup()
            message = self._sub.try_next()
            if message is not None:
                return self._out(message)
            woken = loop.create_future()
            loop.add_reader(fd, lambda: woken.done() or woken.set_result(None))
            try:
                await woken
            finally:
                loop.remove_reader(fd)

    def close(self) -> None:
        """Leaves the bus (idempotent). Iteration ends."""
        self._sub.close()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Listener:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


def listen(pathname: str | os.PathLike[str], *, text: bool = False,
           capacity: int = 1024) -> Listener:
    """Starts listening to the bus at ``pathname``; returns once counted on
    it (no later broadcast is missed). See ``Listener``."""
    return Listener(pathname, text=text, capacity=capacity)
