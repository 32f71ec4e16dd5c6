"""The fuzz run: generated bad (and some good) payloads on every subject the services serve.

``python -m tests.faults.fuzz`` (``make test-fuzz``) brings up a stack of
its own (``tests.faults.stack``: private NATS and Postgres, the memory
service, 2 runtime replicas, the embedding and evaluator services, the fake
model), then sends ``FUZZ_PAYLOADS`` payloads (default 10,000; seed
``FUZZ_SEED``) spread over every subject a service subscribes to, as
``contracts.subjects.permissions`` lists them: each memory operation, the
message handle, agent management and health, ``agents.changed``, the
embedding queues and the evaluation stream (the last three are published,
not requested: nothing answers them, their consumers must survive them).

Payloads: random bytes and invalid UTF-8, JSON nested 100,000 deep, NUL
characters, integers beyond int64, huge strings, wrong types, unknown fields,
fields of the right names with random values, and random headers.

Checks: every reply is an ``Error`` with a known code or a valid reply,
never ``internal``; no request goes unanswered (a hang); every process is
alive and every service answers its health check after; and the resident
memory of each process, before and after, is printed (bounded: less than
``FUZZ_RSS_GROWTH_MB``, default 150, of growth).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from contracts import Content, Error, HandleMessage, Subjects
from contracts.error import ErrorCode
from contracts.memory import OPERATIONS
from contracts.subjects import permissions, room_lease_bucket
from shared.rooms import FREE
from tests.bench.workload import rss_mb
from tests.faults.stack import AGENT, Stack, stack
from tests.faults.suite import connect, wait_ready

ERROR_TAG = msgspec.json.decode(msgspec.json.encode(Error(code=ErrorCode.INTERNAL, message="")))[
    "type"
]
REQUEST_SECONDS = 15.0
"""How long one request may take before it counts as a hang (a turn may run the model)."""


@dataclass
class Target:
    """One subject to fuzz: requested (a reply is expected), or an event or stream published to."""

    subject: str
    fields: tuple[str, ...] = ()
    base: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    event: bool = False
    """Published on core NATS: its subscribers answer nobody (``agents.changed``)."""


async def replica_ids(nc: Client, subjects: Subjects) -> set[str]:
    """The runtime replicas' ids, read from the room leases while a few turns run."""
    kv = await nc.jetstream().key_value(room_lease_bucket(subjects))
    watcher = await kv.watchall()
    probes = [
        HandleMessage(entity_id="fuzzer", room_id=f"probe-{i}", content=Content(text="hello"))
        for i in range(8)
    ]
    await asyncio.gather(
        *(
            nc.request(subjects.message_handle(AGENT), msgspec.json.encode(p), timeout=60)
            for p in probes
        )
    )
    seen: set[str] = set()
    while True:
        try:
            entry = await watcher.updates(timeout=1)  # type: ignore[no-untyped-call]
        except nats.errors.TimeoutError:
            break
        if entry is not None and entry.value:
            seen.add(entry.value.decode().split()[0])  # "<replica id> <written at> [<last>]"
    seen.discard(FREE)  # a lease its owner freed
    await watcher.stop()  # type: ignore[no-untyped-call]
    return seen


def targets(subjects: Subjects, replicas: set[str] | frozenset[str] = frozenset()) -> list[Target]:
    """Every subject a service subscribes to, with the wildcards filled in.

    Taken from ``permissions``' subscribe lists, so a subject a service
    starts to serve is fuzzed too (an unknown template fails here).
    """
    served = {
        subject
        for role in ("runtime", "memory", "evaluator", "embedding")
        for subject in permissions(subjects, role).subscribe
        if not subject.startswith("_INBOX")
    }
    found: list[Target] = []
    ids = ("someone", "x" * 64, "a-b_c")
    for template in sorted(served):
        if template == subjects.memory_template:
            for name, operation in sorted(OPERATIONS.items()):
                fields = tuple(msgspec.structs.fields(operation.request))
                found.append(
                    Target(
                        subjects.memory_operation(name),
                        tuple(f.encode_name for f in fields),
                        {"for_agent": "fuzz-agent"},
                    )
                )
        elif template == subjects.message_handle_template:
            found.append(Target(subjects.message_handle(AGENT), _HANDLE, {"entity_id": "fuzzer"}))
            found.append(Target(subjects.message_handle("nobody-here"), _HANDLE))
        elif template == subjects.agents_changed:
            found.append(Target(template, ("agent_id",), event=True))
        elif template == subjects.room_probe_template:
            # A liveness probe: its body is a room key (``<agent>.<room>``), so any
            # body is one; the answer is empty (or ``busy``), never an error.
            probe = ("room",)
            found.extend(Target(subjects.room_probe(r), probe) for r in sorted(replicas))
        elif "*" in template:
            found.extend(Target(template.replace("*", i), ("check_model",)) for i in ids)
            found.append(Target(template.replace("*", AGENT), ("check_model",)))
        else:
            found.append(Target(template, ("character", "plugins", "agent_id")))
    found.extend(
        Target(subjects.embedding_queue(priority), ("memory_id", "text"), stream=True)
        for priority in ("high", "normal", "low")
    )
    found.append(Target(subjects.turn_evaluate(AGENT), ("message", "run_id"), stream=True))
    return found


_HANDLE = ("message_id", "entity_id", "room_id", "world_id", "content", "run_id", "reply_at_once")


_SCALARS: tuple[Callable[[random.Random], Any], ...] = (
    lambda rng: None,
    lambda rng: rng.choice([True, False]),
    lambda rng: rng.choice([0, -1, 1, 2**63, -(2**63) - 1, 10**30, 2**53 + 1, 7]),
    lambda rng: rng.choice([0.5, -1e308, 1e308, 1e-320]),
    lambda rng: rng.choice(["", "x", "eliza", "\x00", "nul\x00in", "ü" * 10, "a\nb"]),
    lambda rng: "y" * rng.choice([65, 256, 4096, 100_001]),
    lambda rng: rng.choice(["123e4567-e89b-12d3-a456-426614174000", "not a uuid", "-1"]),
    lambda rng: f"id-{rng.randrange(1000)}",
)


def _value(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value: every type, edge numbers, odd strings, a little nesting."""
    kind = rng.randrange(len(_SCALARS) + (4 if depth < 3 else 0))
    if kind < len(_SCALARS):
        return _SCALARS[kind](rng)
    if kind < len(_SCALARS) + 2:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {f"k{i}": _value(rng, depth + 1) for i in range(rng.randrange(4))}


def payload(rng: random.Random, target: Target) -> tuple[bytes, dict[str, str] | None]:
    """One generated body for ``target``, and random headers now and then."""
    kind = rng.randrange(10)
    if kind == 0:
        body = rng.randbytes(rng.randrange(1, 300))
    elif kind == 1:
        body = b'{"x": "\xff\xfe\xfd", "text": "\xc3"}'
    elif kind == 2:
        depth = rng.choice([100, 10_000, 100_000])
        body = b"[" * depth + b"]" * depth
    elif kind == 3:
        body = json.dumps({**target.base, rng.choice(target.fields or ("x",)): 10**40}).encode()
    elif kind == 4:
        body = json.dumps({**target.base, "unknown_field": _value(rng)}).encode()
    else:  # the right names, random values: reaches the handlers' own checks
        chosen = {name: _value(rng) for name in target.fields if rng.random() < 0.7}
        body = json.dumps({**target.base, **chosen}).encode()
    headers = None
    if rng.random() < 0.2:
        headers = {
            rng.choice(["correlation_id", "traceparent", "Nats-Msg-Id", "x-junk"]): rng.choice(
                ["", "0" * 200, "00-zz-yy-01", "é", "a b c"]
            )
        }
    return body, headers


@dataclass
class Tally:
    """What the fuzz run saw."""

    sent: int = 0
    subjects: int = 0
    valid: int = 0
    typed: Counter[str] = field(default_factory=Counter)
    untyped: list[str] = field(default_factory=list)
    internal: list[str] = field(default_factory=list)
    hangs: list[str] = field(default_factory=list)
    not_served: list[str] = field(default_factory=list)
    published: int = 0


def judge(tally: Tally, subject: str, data: bytes) -> None:
    """Sort one reply: a valid reply, a typed error, or something else."""
    try:
        decoded = msgspec.json.decode(data)
    except msgspec.DecodeError:
        tally.untyped.append(f"{subject}: {data[:80]!r}")
        return
    if not isinstance(decoded, dict) or not isinstance(decoded.get("type"), str):
        tally.untyped.append(f"{subject}: {data[:80]!r}")
        return
    if decoded["type"] == ERROR_TAG:
        code = str(decoded.get("code"))
        if code not in {c.value for c in ErrorCode}:
            tally.untyped.append(f"{subject}: code {code}")
        tally.typed[code] += 1
        if code == ErrorCode.INTERNAL:
            tally.internal.append(subject)
    else:
        tally.valid += 1


async def fuzz(nc: Client, running: Stack, *, count: int, seed: int) -> Tally:
    """Send ``count`` payloads over every target, 32 at a time."""
    rng = random.Random(seed)  # noqa: S311 - seeded on purpose: a run can be repeated
    every = targets(running.subjects, await replica_ids(nc, running.subjects))
    tally = Tally(subjects=len(every))
    gate = asyncio.Semaphore(32)
    js = nc.jetstream()

    async def one(target: Target, body: bytes, headers: dict[str, str] | None) -> None:
        async with gate:
            if target.event:
                await nc.publish(target.subject, body, headers=headers)
                tally.published += 1
                return
            if target.stream:
                try:
                    await js.publish(target.subject, body, headers=headers, timeout=5)
                except nats.errors.Error as exc:
                    tally.not_served.append(f"{target.subject}: {type(exc).__name__}")
                tally.published += 1
                return
            try:
                reply = await nc.request(
                    target.subject, body, timeout=REQUEST_SECONDS, headers=headers
                )
            except nats.errors.NoRespondersError:
                tally.not_served.append(target.subject)
            except (nats.errors.TimeoutError, TimeoutError):
                tally.hangs.append(target.subject)
            else:
                if target.subject.endswith(".room") and not reply.data:
                    tally.valid += 1  # a replica's answer to a liveness probe
                    return
                judge(tally, target.subject, reply.data)

    tasks = []
    for index in range(count):
        target = every[index % len(every)]
        body, headers = payload(rng, target)
        if len(body) > nc.max_payload:
            body = body[: nc.max_payload]
        tally.sent += 1
        tasks.append(asyncio.create_task(one(target, body, headers)))
    await asyncio.gather(*tasks)
    return tally


async def healthy(nc: Client, running: Stack) -> Counter[str]:
    """Which services answer ``<ns>.health`` as ok, by name (within 2 s)."""
    answers: Counter[str] = Counter()

    async def collect(msg: Msg) -> None:
        if msg.data:
            health = json.loads(msg.data)
            if health.get("ok"):
                answers[health["service"]] += 1

    inbox = nc.new_inbox()
    subscription = await nc.subscribe(inbox, cb=collect)
    await nc.publish(running.subjects.health, b"{}", reply=inbox)
    await asyncio.sleep(2)
    await subscription.unsubscribe()
    return answers


def memory_of(running: Stack) -> dict[str, float]:
    """Resident memory of each process, in MB."""
    return {name: rss_mb(p.pid) for name, p in running.processes.items() if p.poll() is None}


async def run(root: Path, *, count: int, seed: int) -> tuple[bool, list[str]]:
    """Fuzz a fresh stack; return whether every check held, and the lines to print."""
    lines: list[str] = []
    with stack(root) as running:
        running.env["EMBEDDING_PLUGIN"] = "openai"
        running.start("embedding", "embedding")
        running.start("evaluator", "evaluator")
        nc = await connect(running.nats.url)
        try:
            await wait_ready(nc, running, 2)
            await asyncio.sleep(2)  # the embedding and evaluator services join
            before_health = await healthy(nc, running)
            before = memory_of(running)
            started = time.monotonic()
            tally = await fuzz(nc, running, count=count, seed=seed)
            took = time.monotonic() - started
            await asyncio.sleep(2)
            after_health = await healthy(nc, running)
            after = memory_of(running)
            died = running.died()
        finally:
            await nc.close()
    growth = float(os.environ.get("FUZZ_RSS_GROWTH_MB", "150"))
    grown = {n: after.get(n, 0) - before[n] for n in before}
    lines.append(
        f"fuzz: {tally.sent} payloads over {tally.subjects} subjects "
        f"in {took:.0f}s "
        f"(seed {seed}): {tally.valid} valid replies, typed errors {dict(tally.typed)}, "
        f"{tally.published} published (events, streams)"
    )
    lines.append(
        f"      untyped {len(tally.untyped)}, internal {len(tally.internal)}, "
        f"hangs {len(tally.hangs)}, not served {len(tally.not_served)}, died {died}"
    )
    lines.append(f"      healthy before {dict(before_health)}, after {dict(after_health)}")
    lines.append(
        "      RSS MB before -> after: "
        + ", ".join(f"{n} {before[n]:.0f} -> {after.get(n, 0):.0f}" for n in sorted(before))
    )
    for what, items in (("untyped", tally.untyped), ("internal", tally.internal)):
        lines.extend(f"      {what}: {item}" for item in sorted(set(items))[:10])
    unanswered = sorted(set(tally.hangs) | set(tally.not_served))[:10]
    lines.extend(f"      no answer: {item}" for item in unanswered)
    ok = (
        not tally.untyped
        and not tally.internal
        and not tally.hangs
        and not tally.not_served
        and not died
        and after_health == before_health
        and all(g < growth for g in grown.values())
    )
    return ok, lines


def main() -> None:
    """Run the fuzz (``FUZZ_PAYLOADS``, ``FUZZ_SEED``); exit 1 when a check failed."""
    count = int(os.environ.get("FUZZ_PAYLOADS", "10000"))
    # A terminated run still stops its servers (Postgres outlives a killed parent).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    seed = int(os.environ.get("FUZZ_SEED", "16"))
    with tempfile.TemporaryDirectory(prefix="fuzz-") as root:
        ok, lines = asyncio.run(run(Path(root), count=count, seed=seed))
    print("\n".join(lines))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
