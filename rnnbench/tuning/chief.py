"""How a worker reaches the sweep's chief, and keeps reaching it when the chief moves.

keras-tuner's own client dials one fixed ``address:port`` and, when the chief is gone,
waits there for up to an hour. On a cluster a chief can be requeued (preempted, its node
lost) and come back on another port or node. With ``tuner.distributed.address_file``
the chief writes ``<address> <port>`` to that file once it listens, whole (a rename),
and a worker reads it: at the start it waits for the file and for a chief answering at
the address in it; when a call finds the chief gone (gRPC ``UNAVAILABLE``) it reads the
file again and calls the chief that answers there, for up to ``tuner.distributed.wait_s``
seconds, then gives up with a message naming the chief and the file.

A call is repeated only when it never reached a chief (``UNAVAILABLE``); the chief
ignores a second end of a trial it has already ended
(:class:`rnnbench.tuning.tuner.HookedOracle`), so a reply lost with the chief cannot
end a trial twice.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rnnbench import paths
from rnnbench.errors import TrackingError

# Find a dead connection in seconds, not at the next call's one-hour deadline.
CHANNEL_OPTIONS = [("grpc.keepalive_time_ms", 10_000), ("grpc.keepalive_timeout_ms", 5_000),
                   ("grpc.keepalive_permit_without_calls", 1)]


def write_address(path: str | Path, address: str, port: int) -> None:
    """The chief's ``<address> <port>``, written whole to ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        paths.atomic_write_text(path, f"{address} {int(port)}\n")
    except OSError as exc:
        raise TrackingError(
            f"the chief cannot write its address to tuner.distributed.address_file={path} "
            f"({exc.strerror or exc}); point it at a writable file on a filesystem the "
            "workers see.") from None


def read_address(path: str | Path) -> tuple[str, int] | None:
    """``(address, port)`` from an address file; None while it is absent or not whole."""
    try:
        parts = Path(path).read_text().split()
    except OSError:
        return None
    if len(parts) != 2 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


class ChiefLink:
    """A worker's connection to the chief, found at ``address:port`` or through
    ``address_file``.

    Args:
        address, port: the chief's address when there is no ``address_file``.
        address_file: the file the chief writes its address to (None: fixed address).
        wait_s: how long to look for a chief that answers before giving up.
        say: prints a progress line.
    """

    def __init__(self, address: str | None, port: int, address_file: str | None,
                 wait_s: float, say: Any = print) -> None:
        self.fixed = (address or "127.0.0.1", int(port))
        self.address_file = address_file
        self.wait_s = float(wait_s)
        self.say = say
        self.target: tuple[str, int] | None = None
        self._channel: Any = None
        self._stub: Any = None

    def _where(self) -> tuple[str, int] | None:
        return read_address(self.address_file) if self.address_file else self.fixed

    def _drop(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel = self._stub = None

    def _give_up(self) -> TrackingError:
        where = (f"{self.target[0]}:{self.target[1]}" if self.target else
                 f"{self.fixed[0]}:{self.fixed[1]}")
        if self.address_file and read_address(self.address_file) is None:
            return TrackingError(
                f"no sweep chief wrote its address to {self.address_file} within "
                f"{self.wait_s:g} s. Start the chief first (rnnbench-tune ... "
                f"tuner.distributed.role=chief tuner.distributed.address_file="
                f"{self.address_file}), make sure that file is on a filesystem this machine "
                f"sees, or wait longer with tuner.distributed.wait_s=<seconds>.")
        via = f" (read from {self.address_file})" if self.address_file else ""
        return TrackingError(
            f"no sweep chief answered at {where}{via} within {self.wait_s:g} s. Start the "
            f"chief first (rnnbench-tune ... tuner.distributed.role=chief), check "
            f"tuner.distributed.address and tuner.distributed.port, or wait longer with "
            f"tuner.distributed.wait_s=<seconds>.")

    def connect(self) -> Any:
        """keras-tuner's Oracle stub on a channel to a chief that answers; waits up to
        ``wait_s`` seconds for one."""
        import grpc
        from keras_tuner.src import protos

        if self._stub is not None:
            return self._stub
        deadline = time.monotonic() + self.wait_s
        while True:
            where = self._where()
            if where is not None:
                self.target = where
                channel = grpc.insecure_channel(f"{where[0]}:{where[1]}",
                                                options=CHANNEL_OPTIONS)
                remaining = deadline - time.monotonic()
                try:
                    grpc.channel_ready_future(channel).result(
                        timeout=max(0.1, min(2.0, remaining)))
                except grpc.FutureTimeoutError:
                    channel.close()
                else:
                    self._channel = channel
                    self._stub = protos.get_service_grpc().OracleStub(channel)
                    return self._stub
            if time.monotonic() >= deadline:
                raise self._give_up()
            time.sleep(0.5)

    def call(self, name: str, request: Any, **kwargs: Any) -> Any:
        """``stub.<name>(request)`` on the chief, found again (address file) when the
        call could not reach it."""
        import grpc

        kwargs["wait_for_ready"] = False  # fail fast on a lost chief, then look again
        while True:
            stub = self.connect()
            try:
                return getattr(stub, name)(request, **kwargs)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                lost = self.target
                self._drop()
                self.say(f"lost the chief at {lost[0]}:{lost[1]} ({name}); looking for it "
                         + (f"again in {self.address_file}" if self.address_file else "again")
                         + f" for up to {self.wait_s:g} s")


class ChiefStub:
    """Stands in for keras-tuner's ``OracleStub`` on a worker: each method goes through
    :meth:`ChiefLink.call`."""

    def __init__(self, link: ChiefLink) -> None:
        self._link = link

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda request, **kwargs: self._link.call(name, request, **kwargs)
