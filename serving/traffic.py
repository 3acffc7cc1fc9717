"""Traffic splits: how rollouts and experiments plug into the router.

A split divides a model's default (production) traffic between versions by bucket. A request's bucket comes from a
stable cryptographic hash (keyed BLAKE2b) of the split's salt and the request's routing key, so a key lands in the
same bucket in every process, on every machine and after every restart (Python's `hash()` is salted per process
and is never used). Keyless requests get a random bucket (the same proportions, no stickiness) or go to a named arm.

Apps that own splits register a split source when they start (in `AppConfig.ready`): model id -> the active Split
for that model, or None. Who may hold a model's traffic at all is the registry's question (registry/traffic.py:
each such app also registers an owner check there, and every change of who serves asks it under the model's lock).
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field

BUCKETS = 10_000


def _salt_bytes(salt: str) -> bytes:
    # BLAKE2b's key is at most 64 bytes: a longer salt is itself hashed down to one.
    raw = salt.encode()
    return raw if len(raw) <= 64 else hashlib.blake2b(raw).digest()


def bucket(salt: str, key: str) -> int:
    """The key's bucket in 0..9999 for this salt: an 8-byte BLAKE2b digest of the key keyed by the salt, modulo 10,000.

    BLAKE2b is a cryptographic hash like SHA-256 (in Python's standard library, identical on every platform and
    version), with a native key parameter for the salt, and about twice as fast here on the request path."""
    digest = hashlib.blake2b(key.encode(), digest_size=8, key=_salt_bytes(salt)).digest()
    return int.from_bytes(digest, "big") % BUCKETS


@dataclass(frozen=True)
class Arm:
    name: str
    version_id: int
    ranges: tuple[tuple[int, int], ...]  # half-open bucket ranges [low, high)

    def holds(self, position: int) -> bool:
        return any(low <= position < high for low, high in self.ranges)


@dataclass(frozen=True)
class Split:
    owner: str  # "rollout:7", "experiment:3": recorded as the route reason
    salt: str
    arms: tuple[Arm, ...]
    keyless_arm: str | None = None  # None: keyless requests get a random bucket
    # Called with (arm, routing key or None) after each routed request; must be cheap and never raise.
    on_route: Callable[[Arm, str | None], None] | None = field(default=None, compare=False)
    # A version that receives a copy of a share of the traffic off the request path (answers logged, never returned).
    shadow_version_id: int | None = None
    shadow_share: float = 0.0

    def __post_init__(self) -> None:
        # Precomputed for the hot path: the salted hash state, and range starts in order for a binary search.
        starts = sorted((low, high, arm) for arm in self.arms for low, high in arm.ranges if high > low)
        object.__setattr__(self, "_salt_key", _salt_bytes(self.salt))
        object.__setattr__(self, "_lows", [low for low, _, _ in starts])
        object.__setattr__(self, "_ranges", starts)

    def bucket_of(self, key: str) -> int:
        """bucket(self.salt, key), with the salt prepared once."""
        digest = hashlib.blake2b(key.encode(), digest_size=8, key=self._salt_key).digest()
        return int.from_bytes(digest, "big") % BUCKETS

    def arm_for(self, key: str | None) -> Arm:
        if key is None and self.keyless_arm is not None:
            return next(arm for arm in self.arms if arm.name == self.keyless_arm)
        position = self.bucket_of(key) if key is not None else random.randrange(BUCKETS)
        index = bisect.bisect_right(self._lows, position) - 1
        if index >= 0:
            _, high, arm = self._ranges[index]
            if position < high:
                return arm
        return self.arms[0]  # ranges that do not cover every bucket: the first arm is the control


SplitSource = Callable[[int], Split | None]

_sources: list[SplitSource] = []


def register_split_source(source: SplitSource) -> None:
    if source not in _sources:
        _sources.append(source)


def active_split(model_id: int) -> Split | None:
    for source in _sources:
        split = source(model_id)
        if split is not None:
            return split
    return None
