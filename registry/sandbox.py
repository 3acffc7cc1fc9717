"""A first load of an untrusted artifact in a throwaway process with a memory limit and a time limit.

A hostile upload (a zip bomb, an ONNX graph that folds into gigabytes) then costs that process, which is killed or
runs out of its own address space, never the web worker answering predictions. Processes are forked from a
forkserver that has Django and the model libraries imported already, so one check costs a fork and a load, not an
interpreter start-up (that is paid once per web process, at its first registration).
"""

from __future__ import annotations

import multiprocessing
import os
import resource
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

_context: Any = None


@dataclass(frozen=True)
class Limits:
    memory_mb: int  # address space the load may add on top of the worker's own
    seconds: float
    skops_allowed_types: frozenset[str]
    unpacked_bytes: int


class SandboxRefusal(Exception):
    """The artifact failed its check in the worker; the message says why in one line."""


def _forkserver() -> Any:
    global _context
    if _context is None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["registry.sandbox_boot"])
        _context = context
    return _context


def check(data: bytes, fmt: str, limits: Limits) -> None:
    """Load `data` once in a worker process; raise SandboxRefusal with the reason when it cannot be loaded there."""
    parent, child = multiprocessing.Pipe()
    process = _forkserver().Process(target=_check_in_worker, args=(child, fmt, limits), daemon=True)
    try:
        process.start()
    except OSError as exc:
        raise SandboxRefusal(f"the worker process that checks artifacts could not start ({exc}); try again") from None
    child.close()
    try:
        parent.send_bytes(data)
        answered = parent.poll(limits.seconds)
        outcome = parent.recv() if answered else None
    except (EOFError, BrokenPipeError, ConnectionResetError):
        outcome = None
        answered = True
    finally:
        parent.close()
        if process.is_alive():
            process.kill()
        process.join(5)
    if not answered:
        raise SandboxRefusal(
            f"the artifact took longer than {limits.seconds:g} s to load (MODELWORKS_ARTIFACT_CHECK_SECONDS)"
        )
    if outcome is None:
        raise SandboxRefusal(f"the artifact crashed the process loading it (exit code {process.exitcode})")
    kind, message = outcome
    if kind == "memory":
        raise SandboxRefusal(
            f"the artifact needs more than {limits.memory_mb} MB of memory to load "
            "(MODELWORKS_ARTIFACT_CHECK_MEMORY_MB)"
        )
    if kind != "ok":
        raise SandboxRefusal(message)


def _address_space_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def warm() -> None:
    """Start the forkserver now (it imports Django and the model libraries), not at the first registration."""
    _forkserver().Process(target=int, daemon=True).start()


def _check_in_worker(conn: Connection, fmt: str, limits: Limits) -> None:
    import registry.sandbox_boot  # noqa: F401 - preloaded by the forkserver; here in case its preload failed

    data = conn.recv_bytes()
    limit = _address_space_bytes() + limits.memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        from registry import artifacts

        loaded = artifacts.load_untrusted(
            data, fmt, allowed_types=limits.skops_allowed_types, unpacked_bytes=limits.unpacked_bytes
        )
        if hasattr(loaded, "predict"):
            outcome = ("ok", "")
        else:  # refused here, so the web process never loads what it would refuse anyway
            outcome = ("refused", f"the artifact holds a {type(loaded).__name__}, which cannot predict")
        del loaded
    except MemoryError:
        outcome = ("memory", "")
    except artifacts.ArtifactError as exc:
        outcome = ("refused", str(exc))
    except Exception as exc:  # anything else a hostile file provokes is a refusal too, never a 500
        outcome = ("refused", f"the artifact could not be loaded: {type(exc).__name__}: {exc}")
    del data
    try:
        conn.send(outcome)
    except MemoryError:
        conn.send(("memory", ""))
    conn.close()
