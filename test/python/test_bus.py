"""The Python binding: python-bus's API method by method, errno values, the
callback contract, timeouts (relative and on several clocks),
KeyboardInterrupt, raising callbacks, listener threads, a Rust writer's
20,000 messages, and interop with the CLI and the C library."""

import asyncio
import ctypes
import errno
import grp
import os
import pwd
import signal
import stat as stat_module
import subprocess
import threading
import time

import pytest

import bus
from bus import Bus
from conftest import await_listeners, stat

# Generous: the binding looks for signals every 20 ms.
INTERRUPT_BOUND = 1.0


def opened(path, flags=0):
    b = Bus(path)
    b.open(flags)
    return b


class Doing(threading.Thread):
    """`call(*args)` on a thread of its own; `done()` joins it and raises
    what it raised."""

    def __init__(self, call, *args):
        super().__init__(daemon=True)
        self.call, self.args, self.error = call, args, None
        self.start()

    def run(self):
        try:
            self.call(*self.args)
        except BaseException as e:  # raised by done()
            self.error = e

    def done(self):
        self.join(60)
        assert not self.is_alive(), f"{self.call} is stuck"
        if self.error:
            raise self.error


def raises_errno(code, call, *args, **kwargs):
    with pytest.raises(OSError) as info:
        call(*args, **kwargs)
    assert info.value.errno == code, info.value
    return info.value


class Reader(threading.Thread):
    """Bus.read on a thread of its own, until it has `count` messages."""

    def __init__(self, path, count, how="read"):
        super().__init__(daemon=True)
        self.path, self.count, self.how = path, count, how
        self.listening = threading.Event()
        self.messages = []
        self.error = None

    def run(self):
        try:
            getattr(self, "run_" + self.how)()
        except BaseException as e:  # reported by the test
            self.error = e
        finally:
            self.listening.set()

    def callback(self, message, user_data):
        assert user_data is self
        if message is None:
            self.listening.set()
            return 1
        self.messages.append(message)
        return 0 if len(self.messages) == self.count else 1

    def run_read(self):
        b = opened(self.path, Bus.RDONLY)
        b.read(self.callback, self)
        b.close()

    def run_poll(self):
        b = opened(self.path, Bus.RDONLY)
        b.poll_start()
        self.listening.set()
        while len(self.messages) < self.count:
            self.messages.append(b.poll())
        b.poll_stop()
        b.close()

    def run_listen(self):
        with bus.listen(self.path) as listener:
            self.listening.set()
            for message in listener:
                self.messages.append(message)
                if len(self.messages) == self.count:
                    break

    def result(self):
        self.join(60)
        assert not self.is_alive(), "the reader is stuck"
        if self.error:
            raise self.error
        return self.messages


def start(path, count, how="read"):
    reader = Reader(path, count, how)
    reader.start()
    assert reader.listening.wait(30)
    if reader.error:
        raise reader.error
    return reader


# ---- constants, create, open, close, unlink ----

def test_constants_are_python_bus_values():
    assert (Bus.RDONLY, Bus.WRONLY, Bus.RDWR) == (1, 0, 0)
    assert (Bus.EXCL, Bus.INTR, Bus.NOWAIT) == (2, 4, 1)
    assert bus.MAX_MESSAGE_LEN == 2047
    assert Bus("x").RDONLY == 1


def test_subclasses_as_with_python_bus(path):
    class Named(Bus):
        def __init__(self, name, directory):
            super().__init__(os.path.join(directory, name))
            self.name = name

    b = Named(os.path.basename(path), os.path.dirname(path))
    assert (b.pathname, b.name) == (path, "bus")
    b.open()
    b.write("0 from a subclass")
    b.close()
    assert isinstance(b, Bus) and Bus(path).pathname == path
    assert Bus(pathname=path).pathname == path


def test_create_with_a_pathname(tmp_path, cli):
    p = str(tmp_path / "made")
    b = Bus(p)
    assert b.create() == p
    assert b.pathname == p
    assert stat(cli, p)["listeners"] == 0
    # Exists: nothing happens; with EXCL: EEXIST, filename set.
    assert b.create() == p
    e = raises_errno(errno.EEXIST, b.create, Bus.EXCL)
    assert isinstance(e, FileExistsError) and e.filename == p
    b.unlink()
    assert not os.path.exists(p)
    e = raises_errno(errno.ENOENT, b.unlink)
    assert isinstance(e, FileNotFoundError) and e.filename == p


def test_create_random(runtime_dir):
    b = Bus()
    assert b.pathname is None
    p = b.create()
    assert b.pathname == p
    assert os.path.dirname(p) == str(runtime_dir / "bus")
    assert os.path.basename(p).startswith("random.")
    b.unlink()


def test_open_failures(tmp_path, path):
    missing = str(tmp_path / "missing")
    e = raises_errno(errno.ENOENT, Bus(missing).open)
    assert e.filename == missing
    raises_errno(errno.EINVAL, Bus(path).open, -1)
    raises_errno(errno.EINVAL, Bus().open)
    not_a_bus = tmp_path / "not-a-bus"
    not_a_bus.write_text("hello\n")
    raises_errno(errno.EINVAL, Bus(str(not_a_bus)).open)


def test_open_twice_and_close(path):
    b = opened(path)
    b.open(Bus.RDONLY)  # closes first, as python-bus
    raises_errno(errno.EBADF, b.write, "0 read-only")
    b.close()
    b.close()  # idempotent
    raises_errno(errno.EINVAL, b.write, "0 closed")
    b.open(Bus.RDWR)
    b.write("0 open again")
    b.close()


def test_context_manager_closes(path):
    with Bus(path) as b:
        assert b.open() is None
        b.write("0 inside")
        assert "open" in repr(b)
    raises_errno(errno.EINVAL, b.write, "0 outside")
    assert "closed" in repr(b)


# ---- write ----

def test_write_str_bytes_and_flags(path):
    reader = start(path, 4)
    b = opened(path, Bus.WRONLY)
    b.write("0 str é")
    b.write(b"0 bytes")
    b.write(bytearray(b"0 bytearray"), Bus.NOWAIT)
    b.write("0 intr", Bus.INTR)
    assert reader.result() == [
        "0 str é".encode(), b"0 bytes", b"0 bytearray", b"0 intr"]
    b.close()


def test_bad_messages_fail_before_anything_is_done(path, cli):
    b = opened(path)
    b.poll_start()
    e = raises_errno(errno.EMSGSIZE, b.write, "a" * 2048)
    assert e.filename == path
    raises_errno(errno.EMSGSIZE, b.write_timed, b"a" * 5000, 10)
    raises_errno(errno.EINVAL, b.write, "0 a\0b")
    raises_errno(errno.EINVAL, b.write, b"\0")
    with pytest.raises(TypeError):
        b.write(12)
    # Nothing was broadcast, the bus is as before.
    raises_errno(errno.EAGAIN, b.poll, Bus.NOWAIT)
    assert stat(cli, path)["semaphores"]["X"] == 1
    writing = Doing(b.write, "a" * 2047)
    assert b.poll() == b"a" * 2047
    writing.done()
    b.poll_stop()
    b.close()


def test_write_nowait_and_timed_while_a_poller_holds_the_bus(path):
    b = opened(path)
    b.poll_start()
    writer = opened(path, Bus.WRONLY)
    done = threading.Event()

    def first():
        writer.write("0 first")
        done.set()

    t = threading.Thread(target=first)
    t.start()
    assert b.poll() == b"0 first"
    t.join()
    # The poller has not polled again: writers wait for it.
    raises_errno(errno.EAGAIN, writer.write, "0 second", Bus.NOWAIT)
    e = raises_errno(errno.EAGAIN, writer.write_timed, "0 second", 0.05)
    assert isinstance(e, BlockingIOError)
    b.poll_stop()
    writer.write("0 free again")
    writer.close()
    b.close()


# ---- read: the callback contract ----

def test_read_callback_contract(path):
    calls = []
    token = object()
    writing = []

    def callback(message, user_data):
        calls.append((message, user_data))
        if message is None:
            writing.append(Doing(lambda: [
                w.write("0 one"), w.write("0 two"), w.write("0 three")]))
            return 1
        return 0 if message == b"0 two" else 1

    w = opened(path, Bus.WRONLY)
    b = opened(path, Bus.RDONLY)
    assert b.read(callback, token) is None
    assert calls == [(None, token), (b"0 one", token), (b"0 two", token)]
    writing[0].done()  # "0 three" went to nobody: the reader had left
    # user_data defaults to None; stopping at None returns at once.
    seen = []
    b.read(lambda m, u: seen.append((m, u)) or 0)
    assert seen == [(None, None)]
    b.close()
    w.close()


def test_read_callback_error_and_bad_answer(path, cli):
    b = opened(path, Bus.RDONLY)
    raises_errno(errno.ECANCELED, b.read, lambda m, u: -1)
    with pytest.raises(TypeError):
        b.read(lambda m, u: "yes")
    with pytest.raises(TypeError):
        b.read(lambda m: 1)  # wrong arity: the call raises
    assert stat(cli, path)["listeners"] == 0
    b.close()


def test_raising_callback_ends_the_read_and_leaves_the_bus(path, cli):
    class Boom(Exception):
        pass

    w = opened(path, Bus.WRONLY)
    writing = []

    def callback(message, user_data):
        if message is None:
            writing.append(Doing(w.write, "0 boom"))
            return 1
        raise Boom(message)

    b = opened(path, Bus.RDONLY)
    with pytest.raises(Boom) as info:
        b.read(callback)
    assert info.value.args == (b"0 boom",)
    writing[0].done()
    assert stat(cli, path)["listeners"] == 0
    w.write("0 nobody listens")  # returns at once
    b.close()
    w.close()


# ---- timeouts ----

def count_calls(calls):
    def callback(message, user_data):
        calls.append(message)
        return 1
    return callback


def test_relative_timeouts_are_monotonic_raw(path, cli):
    b = opened(path)
    calls = []
    e = raises_errno(errno.EAGAIN, b.read_timed, count_calls(calls), 0.05)
    assert e.filename == path
    assert calls == [None]
    b.poll_start()
    raises_errno(errno.EAGAIN, b.poll_timed, 0.05)
    raises_errno(errno.EAGAIN, b.poll_timed, -1)
    writing = Doing(b.write, "0 in time")
    assert b.poll_timed(30) == b"0 in time"
    writing.done()
    b.poll_stop()
    b.write_timed("0 nobody listens", 0.05)
    assert stat(cli, path)["listeners"] == 0
    b.close()


CLOCKS = [time.CLOCK_MONOTONIC, time.CLOCK_REALTIME, time.CLOCK_MONOTONIC_RAW,
          time.CLOCK_BOOTTIME, time.CLOCK_TAI]


@pytest.mark.parametrize("clock", CLOCKS)
def test_absolute_timeouts_on_any_clock(path, clock):
    b = opened(path)
    now = time.clock_gettime(clock)
    # Past: EAGAIN before anything is done.
    raises_errno(errno.EAGAIN, b.write_timed, "0 late", now - 1, clock)
    raises_errno(errno.EAGAIN, b.read_timed, count_calls([]), 0, clock)
    b.write_timed("0 nobody", now + 30, clock)
    calls = []
    raises_errno(errno.EAGAIN, b.read_timed, count_calls(calls),
                 time.clock_gettime(clock) + 0.05, clock, None)
    assert calls == [None]
    b.poll_start()
    raises_errno(errno.EAGAIN, b.poll_timed, time.clock_gettime(clock) + 0.05, clock)
    writing = Doing(b.write, "0 within")
    assert b.poll_timed(time.clock_gettime(clock) + 30, clock) == b"0 within"
    writing.done()
    b.poll_stop()
    b.close()


def test_cpu_time_clock_waits_the_difference_once(path):
    b = opened(path)
    b.poll_start()
    clock = time.CLOCK_PROCESS_CPUTIME_ID
    raises_errno(errno.EAGAIN, b.poll_timed, time.clock_gettime(clock) + 0.05, clock)
    raises_errno(errno.EAGAIN, b.read_timed, count_calls([]),
                 time.clock_gettime(clock) + 0.05, clock)
    b.poll_stop()
    b.close()


def test_unknown_clock_is_einval(path):
    b = opened(path)
    raises_errno(errno.EINVAL, b.write_timed, "0 x", 1.0, 1000)
    raises_errno(errno.EINVAL, b.read_timed, count_calls([]), 1.0, 1000)
    b.poll_start()
    raises_errno(errno.EINVAL, b.poll_timed, 1.0, -1000000)
    b.poll_stop()
    b.close()


# ---- poll ----

def test_poll(path, cli):
    b = opened(path, Bus.RDONLY)
    raises_errno(errno.EINVAL, b.poll)  # not started
    b.poll_stop()  # not polling: nothing to do
    b.poll_start()
    b.poll_start()  # again: counted once
    assert stat(cli, path)["listeners"] == 1
    raises_errno(errno.EAGAIN, b.poll, Bus.NOWAIT)
    w = opened(path, Bus.WRONLY)
    writing = Doing(lambda: [w.write(m) for m in ("0 a", "0 b", "0 c")])
    assert b.poll() == b"0 a"
    assert b.poll(0) == b"0 b"
    assert b.poll_timed(30) == b"0 c"
    writing.done()
    b.poll_stop()
    assert stat(cli, path)["listeners"] == 0
    b.poll_start()
    b.close()  # leaves the bus too
    assert stat(cli, path)["listeners"] == 0
    w.close()


# ---- KeyboardInterrupt ----

def interrupt_main_when_waiting(cli, path):
    """Sends SIGINT to the main thread once a listener waits on the bus;
    returns a list holding the time it was sent."""
    sent = []

    def run():
        await_listeners(cli, path, 1)
        deadline = time.monotonic() + 30
        while stat(cli, path)["waiting"] != 1:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        sent.append(time.monotonic())
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    threading.Thread(target=run, daemon=True).start()
    return sent


def check_interrupted(cli, path, sent):
    elapsed = time.monotonic() - sent[0]
    assert elapsed < INTERRUPT_BOUND, f"KeyboardInterrupt after {elapsed:.3f} s"
    assert stat(cli, path)["listeners"] == 0


BLOCKING = {
    "read": lambda b: b.read(count_calls([])),
    "read_timed": lambda b: b.read_timed(count_calls([]), 60),
    "poll": lambda b: b.poll(),
    "poll_timed": lambda b: b.poll_timed(60, None),
}


@pytest.mark.parametrize("call", list(BLOCKING))
def test_keyboard_interrupt_in_a_blocked_call(path, cli, call):
    assert threading.current_thread() is threading.main_thread()
    b = opened(path, Bus.RDONLY)
    if call.startswith("poll"):
        b.poll_start()
    sent = interrupt_main_when_waiting(cli, path)
    with pytest.raises(KeyboardInterrupt):
        BLOCKING[call](b)
    check_interrupted(cli, path, sent)
    raises_errno(errno.EINVAL, b.poll, Bus.NOWAIT)  # not polling (any more)
    b.close()


def test_keyboard_interrupt_in_listen(path, cli):
    with bus.listen(path) as listener:
        sent = interrupt_main_when_waiting(cli, path)
        with pytest.raises(KeyboardInterrupt):
            next(listener)
        check_interrupted(cli, path, sent)
        with pytest.raises(StopIteration):
            next(listener)


# ---- listeners in threads; a Rust writer ----

def test_several_listener_threads_in_one_process(path, cli):
    hows = ["read", "read", "poll", "poll", "listen", "listen"]
    readers = [start(path, 200, how) for how in hows]
    assert stat(cli, path)["listeners"] == len(hows)
    w = opened(path, Bus.WRONLY)
    expected = [f"0 message {i}".encode() for i in range(200)]
    for m in expected:
        w.write(m)
    for r in readers:
        assert r.result() == expected, r.how
    assert stat(cli, path)["listeners"] == 0
    w.close()


def test_20000_messages_from_a_rust_writer_to_4_python_listeners(path, cli, peer):
    n = 20000
    readers = [start(path, n, how) for how in ("read", "poll", "listen", "read")]
    out = subprocess.run([peer, "write", path, str(n), "m"], check=True,
                         capture_output=True, text=True, timeout=600).stdout
    assert out == "done\n"
    expected = [f"m {i}".encode() for i in range(n)]
    for r in readers:
        got = r.result()
        assert len(got) == n, r.how
        assert got == expected, r.how  # in order, exactly once
    assert stat(cli, path)["listeners"] == 0


# ---- beyond python-bus: listen, text, asyncio ----

def test_listen_iterator_text_and_get_nowait(path):
    w = opened(path, Bus.WRONLY)
    with bus.listen(path, text=True) as listener:
        assert listener.get_nowait() is None
        w.write("0 héllo")
        w.write(b"0 \xff")
        assert next(listener) == "0 héllo"
        assert listener.get_nowait() == "0 \ufffd"
        assert listener.get_nowait() is None
    assert listener.get_nowait() is None
    with pytest.raises(StopIteration):
        next(listener)
    w.close()


def test_listen_failures(tmp_path, path):
    missing = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError) as info:
        bus.listen(missing)
    assert info.value.filename == missing
    # The bus removed under a listener: the iterator raises.
    listener = bus.listen(path)
    Bus(path).unlink()
    with pytest.raises(OSError) as info:
        next(listener)
    assert info.value.errno == errno.EIDRM
    listener.close()


def test_asyncio_iterator(path):
    w = opened(path, Bus.WRONLY)
    expected = [f"0 async {i}".encode() for i in range(50)]

    async def main():
        got = []
        async with bus.listen(path) as listener:
            writer = asyncio.get_running_loop().run_in_executor(
                None, lambda: [w.write(m) for m in expected])
            async for message in listener:
                got.append(message)
                if len(got) == len(expected):
                    break
            await writer
        return got

    assert asyncio.run(main()) == expected
    w.close()


def test_asyncio_iterator_ends_on_close_and_is_cancellable(path):
    async def main():
        listener = bus.listen(path, text=True)
        task = asyncio.ensure_future(listener.__anext__())
        await asyncio.sleep(0)  # the task now waits on the event loop
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        listener.close()
        with pytest.raises(StopAsyncIteration):
            await listener.__anext__()

    asyncio.run(main())


# ---- chmod, chown ----

def test_chmod(path, cli):
    b = Bus(path)
    b.chmod(0o640)  # any bit of a class grants it read and write
    assert stat(cli, path)["mode"] == "660"
    assert stat_module.S_IMODE(os.stat(path).st_mode) == 0o640
    b.chmod(0o001, mask=0o007)  # others added, user and group kept
    assert stat(cli, path)["mode"] == "666"
    b.chmod(0o000, mask=0o070)  # group removed
    assert stat(cli, path)["mode"] == "606"
    b.chmod(0o600)
    assert stat(cli, path)["mode"] == "600"
    raises_errno(errno.ENOENT, Bus(path + ".missing").chmod, 0o600)


def test_chown(path, cli):
    b = Bus(path)
    nobody = pwd.getpwnam("nobody")
    b.chown(nobody.pw_uid, 0)
    assert (stat(cli, path)["uid"], stat(cli, path)["gid"]) == (nobody.pw_uid, 0)
    b.chown(None, ...)  # the owner's own group
    assert stat(cli, path)["gid"] == nobody.pw_gid
    b.chown("root", grp.getgrgid(0).gr_name)
    assert (stat(cli, path)["uid"], stat(cli, path)["gid"]) == (0, 0)
    b.chown(group=nobody.pw_gid)
    assert (stat(cli, path)["uid"], stat(cli, path)["gid"]) == (0, nobody.pw_gid)
    b.chown(owner=0, group=0)
    assert os.stat(path).st_uid == 0 and os.stat(path).st_gid == 0
    with pytest.raises(KeyError):
        b.chown("no-such-user-here")
    raises_errno(errno.ENOENT, Bus(path + ".missing").chown, 0, 0)


# ---- interop: the CLI and the C library on one bus ----

def test_cli_broadcasts_to_python_and_python_to_cli(path, cli):
    reader = start(path, 1)
    subprocess.run([cli, "broadcast", path, "0 from the CLI"], check=True)
    assert reader.result() == [b"0 from the CLI"]
    with subprocess.Popen([cli, "listen", path], stdout=subprocess.PIPE, text=True) as listener:
        try:
            await_listeners(cli, path, 1)
            opened(path).write("0 from Python")
            assert listener.stdout.readline() == "0 from Python\n"
        finally:
            listener.terminate()
    assert stat(cli, path)["listeners"] == 0


def test_c_library_in_the_same_process(path, libbus):
    c = ctypes.CDLL(libbus, use_errno=True)
    c.bus_poll_timed.restype = ctypes.c_char_p
    bus_t = ctypes.create_string_buffer(128)
    assert c.bus_open(bus_t, path.encode(), 0) == 0
    # C writes, Python reads.
    reader = start(path, 1, "listen")
    assert c.bus_write(bus_t, b"0 from C", 0) == 0
    assert reader.result() == [b"0 from C"]
    # Python writes, C polls with a deadline on CLOCK_MONOTONIC_RAW.
    assert c.bus_poll_start(bus_t) == 0
    writing = Doing(lambda: opened(path).write("0 to C"))

    class Timespec(ctypes.Structure):
        _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]

    now = time.clock_gettime(time.CLOCK_MONOTONIC_RAW)
    deadline = Timespec(int(now) + 30, 0)
    m = c.bus_poll_timed(bus_t, ctypes.byref(deadline), time.CLOCK_MONOTONIC_RAW)
    assert m == b"0 to C", os.strerror(ctypes.get_errno())
    writing.done()
    assert c.bus_poll_stop(bus_t) == 0
    assert c.bus_close(bus_t) == 0
