"""Type stubs of the module ``bus`` (python-bus's API and more)."""

import os
from types import EllipsisType, TracebackType
from typing import Any, Callable, Final, TypeVar

_U = TypeVar("_U")
_Path = str | os.PathLike[str]
_Message = str | bytes

__version__: Final[str]
MAX_MESSAGE_LEN: Final[int]
"""The longest message, in bytes (2047)."""

class Bus:
    """A bus, as python-bus's ``Bus``. Failures raise ``OSError`` (the
    subclass its ``errno`` selects) with ``errno`` and ``filename``; a
    timed call that runs out raises it with ``EAGAIN``
    (``BlockingIOError``)."""

    RDONLY: Final[int]
    """``open``: listen only."""
    WRONLY: Final[int]
    RDWR: Final[int]
    EXCL: Final[int]
    """``create``: fail with ``EEXIST`` if the file exists."""
    INTR: Final[int]
    NOWAIT: Final[int]
    """``write``, ``poll``: fail with ``EAGAIN`` rather than wait."""

    pathname: str | None

    def __init__(self, pathname: _Path | None = None) -> None: ...
    def create(self, flags: int = 0) -> str:
        """Creates the bus (a random one in ``$XDG_RUNTIME_DIR/bus`` without
        a pathname) and returns its pathname."""
    def unlink(self) -> None:
        """Removes the bus."""
    def open(self, flags: int = 0) -> None:
        """Opens the bus (closing it first if open)."""
    def close(self) -> None:
        """Leaves the bus if polling, and closes it. Idempotent."""
    def write(self, message: _Message, flags: int = 0) -> None:
        """Broadcasts ``message`` (``str`` is sent as UTF-8; at most 2047
        bytes and no NUL, else ``EMSGSIZE`` / ``EINVAL`` before anything
        is done) and returns once every listener has it."""
    def write_timed(self, message: _Message, timeout: float,
                    clock_id: int | None = None) -> None:
        """``write`` with a time limit: ``timeout`` seconds from now on
        ``CLOCK_MONOTONIC_RAW`` if ``clock_id`` is ``None``, else the
        absolute time ``timeout`` on clock ``clock_id`` (any clock
        ``time.clock_gettime`` reads)."""
    def read(self, callback: Callable[[bytes | None, _U], int],
             user_data: _U = ...) -> None:
        """Listens: ``callback(None, user_data)`` once counted on the bus,
        then ``callback(message, user_data)`` for each message, until it
        returns 0 (stop), or -1 (``OSError`` with ``ECANCELED``); 1
        continues. An exception from the callback (or a signal's, such as
        ``KeyboardInterrupt``) ends the read, having left the bus."""
    def read_timed(self, callback: Callable[[bytes | None, _U], int],
                   timeout: float, clock_id: int | None = None,
                   user_data: _U = ...) -> None:
        """``read`` until a time limit (as ``write_timed``)."""
    def poll_start(self) -> None:
        """Joins the bus to ``poll`` it."""
    def poll(self, flags: int = 0) -> bytes:
        """The next message (``NOWAIT``: only if one waits, else
        ``EAGAIN``). A signal's exception leaves the bus (``poll_stop``)."""
    def poll_timed(self, timeout: float, clock_id: int | None = None) -> bytes:
        """``poll`` until a time limit (as ``write_timed``)."""
    def poll_stop(self) -> None:
        """Leaves the bus."""
    def chown(self, owner: int | str | None = None,
              group: int | str | EllipsisType | None = None) -> None:
        """Changes the owner and group (ids or names; ``None`` keeps the
        current one; ``...`` is the owner's group)."""
    def chmod(self, mode: int, mask: int | None = None) -> None:
        """Sets who may use the bus (any bit of a class grants it); with
        ``mask``, only the classes in ``mask`` change."""
    def __enter__(self) -> Bus: ...
    def __exit__(self, exc_type: type[BaseException] | None,
                 exc: BaseException | None, tb: TracebackType | None) -> bool: ...

class Subscription:
    def __init__(self, pathname: _Path, capacity: int = 1024) -> None: ...
    def next(self) -> bytes: ...
    def try_next(self) -> bytes | None: ...
    def fileno(self) -> int: ...
    def clear_wakeup(self) -> None: ...
    def close(self) -> None: ...

class Listener:
    """Listens to a bus until ``close()``; iterate with ``for`` or
    ``async for``. Messages are ``bytes``, or ``str`` with ``text=True``."""
    def __init__(self, pathname: _Path, *, text: bool = False,
                 capacity: int = 1024) -> None: ...
    def __iter__(self) -> Listener: ...
    def __next__(self) -> Any: ...
    def get_nowait(self) -> Any: ...
    def __aiter__(self) -> Listener: ...
    async def __anext__(self) -> Any: ...
    def close(self) -> None: ...
    def __enter__(self) -> Listener: ...
    def __exit__(self, *exc: object) -> None: ...
    async def __aenter__(self) -> Listener: ...
    async def __aexit__(self, *exc: object) -> None: ...

def listen(pathname: _Path, *, text: bool = False, capacity: int = 1024) -> Listener:
    """Starts listening to the bus at ``pathname`` (returns once counted on
    it)."""
