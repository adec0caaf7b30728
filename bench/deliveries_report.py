"""The delivery bench's report: the `redis-cli monitor` trace, the tables and the exactly-once
checks, apart from the runs (`bench.deliveries`) so each file stays readable."""

from __future__ import annotations

import contextlib
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import report as rep
from bench.harness import Run
from bench.report import fmt, per, print_table, ratio
from watcher.delivery.signing import WebhookVerificationError, verify
from watcher.settings import Settings

if TYPE_CHECKING:
    from bench.deliveries import Batch, Bench

DEFAULT_CAP = int(Settings.model_fields["watcher_webhook_max_in_flight"].default)
POLL_EVERY = 0.005  # seconds between reads of the succeeded counter while waiting

# --- the trace: `redis-cli monitor`, each command's client told by its port --------------------

_MONITOR_LINE = re.compile(r"^\d+\.\d+ \[\d+ ([^\]]+)\] (.*)$")
_ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')
KEY_PURPOSES = (  # (pattern on the command's key, purpose): the first that matches
    (r"_kombu\.binding", "kombu exchange bindings (SMEMBERS)"),
    (r"unacked", "kombu acks_late bookkeeping (unacked*)"),
    (r"watcher\.", "broker queue ({cmd})"),
    (r"\{[^}]*\}:delivery:.*:attempts$", "watcher: delivery attempt log ({cmd})"),
    (r"\{[^}]*\}:delivery:", "watcher: delivery hash ({cmd})"),
    (r"\{[^}]*\}:sub:.*:inflight$", "watcher: in-flight slot ({cmd})"),
    (r"\{[^}]*\}:sub:", "watcher: subscription hash ({cmd})"),
    (r"\{[^}]*\}:schedule:", "watcher: delivery schedules ({cmd})"),
    (r"(?=\{)(?:[^:]*:)?([^:]*)", "watcher: {0} ({cmd})"),
    (r"", "other ({cmd})"),
)


def classify(command: str, args: list[str]) -> str:
    """What a command is for, told by its key."""
    if command in ("MULTI", "EXEC"):
        return "MULTI/EXEC markers"
    if command == "PUBLISH":
        return "celery task events (PUBLISH)" if "celeryev" in args[0] else "PUBLISH, other"
    key = args[0] if args else ""
    if command in ("EVALSHA", "EVAL"):
        key = args[2] if len(args) > 2 and args[1] != "0" else ""
    matches = ((re.match(pattern, key), what) for pattern, what in KEY_PURPOSES)
    return next(what.format(*m.groups(), cmd=command) for m, what in matches if m)


@dataclass
class Trace:
    n: int
    seconds: float
    tasks_sent: int
    by_category: Counter[tuple[str, str]] = field(default_factory=Counter)  # (owner, category)
    round_trips: Counter[str] = field(default_factory=Counter)  # owner -> round trips
    lua: Counter[str] = field(default_factory=Counter)  # command -> count, inside Lua scripts
    unknown: set[str] = field(default_factory=set)


def parse_monitor(trace: Trace, text: str, owners: dict[int, str], counters_key: str) -> None:
    in_multi: set[str] = set()
    for line in text.splitlines():
        match = _MONITOR_LINE.match(line)
        if match is None or not (args := _ARG.findall(match.group(2))):
            continue
        client, command, args = match.group(1), args[0].upper(), args[1:]
        if client == "lua":
            trace.lua[command] += 1
            continue
        port = client.rsplit(":", 1)[-1]
        owner = owners.get(int(port), "other") if port.isdigit() else "other"
        if owner == "other":
            trace.unknown.add(client)
        waiting = owner == "bench" and command == "HGET" and args[:1] == [counters_key]
        if waiting or command == "MONITOR":
            continue  # the bench waiting for the counter
        trace.by_category[(owner, classify(command, args))] += 1
        if command in ("EXEC", "DISCARD"):
            in_multi.discard(client)
        elif client not in in_multi:
            trace.round_trips[owner] += 1
        if command == "MULTI":
            in_multi.add(client)


def client_ports(pids: Sequence[int], server_port: int) -> set[int]:
    """Local ports of the TCP connections these processes hold to `server_port`."""
    inodes: set[str] = set()
    for fd in (fd for pid in pids for fd in Path(f"/proc/{pid}/fd").glob("*")):
        with contextlib.suppress(OSError):
            if (target := os.readlink(fd)).startswith("socket:["):
                inodes.add(target[8:-1])
    rows = [line.split() for t in ("/proc/net/tcp", "/proc/net/tcp6")
            for line in Path(t).read_text().splitlines()[1:]]  # fmt: skip
    ours = [c for c in rows if len(c) > 9 and c[9] in inodes]
    return {int(c[1].rsplit(":", 1)[1], 16) for c in ours if int(c[2][-4:], 16) == server_port}


# --- the tables and checks ------------------------------------------------------------------


def kinds(runs: list[Run], kind: str) -> list[Run]:
    return [r for r in runs if r.kind == kind]


def first(runs: list[Run], kind: str) -> Run | None:
    return next(iter(kinds(runs, kind)), None)


def throughput_table(a: Any, runs: list[Run]) -> None:
    one, many = (kinds(runs, "plain")[i].rate for i in (0, -1))
    rows = [[str(r.n), f"{a.pool} / {a.concurrency}", str(r.info["cap"]), fmt(r.rate), fmt(one),
             fmt(many), ratio(r.rate, many), ratio(r.rate, one)]
            for r in kinds(runs, "watcher")]  # fmt: skip
    heads = "N|pool / concurrency|in-flight cap|watcher deliveries/s per worker process|"
    heads += "plain 1 thread /s|plain {c} threads /s|ratio vs plain {c}|ratio vs plain 1"
    title = "Throughput (watcher: exactly one `celery -A watcher worker` process)"
    print_table(title, heads.format(c=a.concurrency).split("|"), rows)


def runs_table(runs: list[Run]) -> None:
    nproc, rows = rep.usable_cpus(), []
    for run in runs:
        d = run.delta
        worker = d.groups.get("worker") if run.kind == "watcher" else 0.0
        parts = [worker, d.bench, d.redis, d.groups.get("receiver")]
        total = None if None in parts else sum(x or 0.0 for x in parts)
        busy = 100 * total / (run.seconds * nproc) if total and run.seconds else None
        cpu = [worker if run.kind == "watcher" else None, d.bench, d.redis, parts[3], total]
        rows.append([
            run.label, f"{run.done}/{run.n}", fmt(run.seconds, 2), fmt(run.rate),
            fmt(per(run.seconds, run.done, 1000), 3), *(fmt(run.ms(x), 3) for x in cpu),
            fmt(busy), fmt(per(d.total_commands, run.done), 1),
            fmt(per(d.total_usec, run.done), 1),
        ])  # fmt: skip
    heads = "run|done|seconds|per s|wall ms/item|worker|bench|redis|receiver|CPU total|"
    heads += f"% of {nproc} CPUs|Redis cmds/item|Redis usec/item"
    print_table("All runs: wall time and CPU per item (CPU ms per delivery/post; `bench` = this "
                  "process: the plain loops, the direct threads, or the dispatcher + counter "
                  "polling)", heads.split("|"), rows)  # fmt: skip


def commands_table(runs: list[Run], batch: Batch) -> None:
    columns = [(r.info["short"], r.delta, r.done) for r in runs if r.kind != "plain" and r.done]
    columns.append((f"fan-out ({batch.subscriptions} subs)", batch.fan_out, len(batch.events)))
    names: dict[str, float] = {}
    for _, delta, n in columns:
        for name, (calls, _) in delta.commands.items():
            names[name] = max(names.get(name, 0.0), calls / max(n, 1))

    def cell(calls: int, usec: int, n: int) -> str:
        return f"{calls / n:.2f} ({usec / n:.0f}us)" if calls else "-"

    rows = [[name, *(cell(*d.commands.get(name, (0, 0)), n) for _, d, n in columns)]
            for name in sorted(names, key=lambda c: -names[c])[:18]]  # fmt: skip
    rows.append(["TOTAL", *(cell(d.total_commands, d.total_usec, n) for _, d, n in columns)])
    title = "Redis commands per item from INFO commandstats: calls (Redis-side usec) per "
    title += "delivery or per fanned-out event; broker traffic included, the bench's INFO/counter "
    print_table(title + "reads not", ["command", *(c[0] for c in columns)], rows)


def trace_table(t: Trace) -> None:
    owners = ["worker", "bench", "other"]

    def per_n(v: int) -> str:
        return fmt(v / t.n, 2) if v else "-"

    totals = {o: sum(v for (w, _), v in t.by_category.items() if w == o) for o in owners}
    categories: Counter[str] = Counter[str]()
    for (_, cat), v in t.by_category.items():
        categories[cat] += v
    rows = [[cat, *(per_n(t.by_category[(o, cat)]) for o in owners)] for cat, _ in
            categories.most_common()]  # fmt: skip
    rows.append(["TOTAL commands", *(fmt(totals[o] / t.n, 2) for o in owners)])
    rows.append(["ROUND TRIPS", *(fmt(t.round_trips[o] / t.n, 2) for o in owners)])
    print_table(f"Trace: Redis commands per delivery by purpose and client, from `redis-cli "
                  f"monitor` over {t.n} deliveries ({t.tasks_sent} sent in deliver tasks, "
                  f"{t.seconds:.2f}s; bench = the dispatcher here; a MULTI..EXEC block is one "
                  "round trip)", ["purpose (command)", *owners], rows)  # fmt: skip
    inside = ", ".join(f"{c} {v / t.n:.2f}" for c, v in t.lua.most_common())
    print(f"  inside Lua scripts, per delivery: {inside or '-'}")
    if t.unknown:
        print(f"  clients not attributed (closed or foreign connections): {len(t.unknown)}")
    print()


def breakdown(a: Any, runs: list[Run], trace: Trace | None) -> None:
    """CPU per delivery, layer by layer: a plain post, + the watcher's bookkeeping, + Celery."""
    plain, direct, watcher = kinds(runs, "plain")[-1], first(runs, "direct"), first(runs, "watcher")
    if watcher is None or watcher.delta.groups.get("worker") is None:
        return
    post, worker = plain.ms(plain.delta.bench) or 0.0, watcher.ms(watcher.delta.groups["worker"])
    rate, worker = watcher.rate or 0, worker or 0.0
    print(f"Where the time goes (CPU ms per delivery, main runs; one worker process at "
          f"{rate:,.0f}/s x {worker:.2f} ms = {rate * worker / 10:.0f}% of a CPU)")  # fmt: skip
    lines = [(f"a plain post (requests, signing: {plain.info['short']})", f"{post:7.3f}")]
    if direct is not None and direct.done:
        own, cmds = direct.ms(direct.delta.bench) or 0.0, direct.delta.total_commands / direct.done
        more = watcher.delta.total_commands / watcher.done - cmds
        lines += [(f"+ watcher bookkeeping ({direct.info['short']})",
                   f"{own - post:+7.3f}  ({cmds:.1f} Redis commands per delivery)"),
                  ("+ Celery/kombu in the worker (worker - direct)",
                   f"{worker - own:+7.3f}  ({more:+.1f} Redis commands per delivery)")]  # fmt: skip
    what = "dispatcher (claim + apply_async) + counter polling, bench"
    if a.dispatch != "bench":
        what = "counter polling, bench (dispatch ticks: in the worker)"
    lines += [(f"= the worker process ({watcher.info['short']})", f"{worker:7.3f}"),
              (what, f"{watcher.ms(watcher.delta.bench) or 0.0:7.3f}"),
              ("redis-server", f"{watcher.ms(watcher.delta.redis) or 0.0:7.3f}")]  # fmt: skip
    for label, value in lines:
        print(f"  {label:<58} {value}")
    if trace is not None:
        trips = [trace.round_trips[o] / trace.n for o in ("worker", "bench")]
        print(f"  Redis round trips per delivery (trace): worker {trips[0]:.1f}, dispatcher "
              f"{trips[1]:.1f}; a plain post makes none")  # fmt: skip
    print()


def verify_sample(received: dict[str, Any], secret: str) -> str:
    if not (sample := received.get("sample")):
        return "no sample"
    try:
        verify(secret, sample["headers"], sample["body"].encode(), tolerance=3600)
    except WebhookVerificationError as exc:
        return f"INVALID ({exc})"
    return "signature ok"


def sent_note(sent: int, n: int) -> str:
    """What the dispatcher's count says: re-sends above N, deliveries it never sent below."""
    if sent > n:
        return f"at least {sent - n} re-sent after 'postponed': no free slot"
    if sent < n:
        return f"{n - sent} fewer than N: the worker's delivery threads took those as they came due"
    return "as many as N"


def check_runs(b: Bench, runs: list[Run], batches: dict[str, Batch]) -> list[str]:
    """Exactly once at the receiver for every delivery; returns the problems found."""
    stats, problems = b.receiver_stats(), []
    print("Checks (receiver counts per path; signature of the first request verified)")
    for run in runs:
        i, extra = run.info, ""
        got = stats.get(i["path"], {})
        total, distinct = int(got.get("total", 0)), int(got.get("distinct", 0))
        secret = next((x.secret for x in batches.values() if x.path == i["path"]), None)
        if run.kind == "watcher":
            extra = "; counters " + ", ".join(f"{k}=+{v}" for k, v in i["counters"].items())
            if (sent := i["tasks_sent"]) is not None:
                extra += f"; deliveries sent in deliver tasks {sent} ({sent_note(sent, run.n)})"
            if i["first_post_after"] is not None:
                extra += f"; first POST {i['first_post_after'] * 1000:.0f} ms after dispatch began"
        if run.kind == "direct":
            extra = "; outcomes " + ", ".join(f"{k}={v}" for k, v in sorted(i["outcomes"].items()))
        signature = verify_sample(got, secret or batches["main"].secret)
        print(f"  {run.label}: {i['path']} total={total} distinct webhook-ids={distinct} "
              f"(expected {run.n}), errors={i.get('errors', 0)}, {signature}{extra}")  # fmt: skip
        if run.kind != "plain" and (total != run.n or distinct != run.n or run.done != run.n):
            problems.append(f"{run.label}: {total} requests, {distinct} distinct, {run.done} done")
        if run.kind == "plain" and (run.done != run.n or total != run.n):
            problems.append(f"{run.label}: {run.done} ok of {run.n}, receiver saw {total}")
    print()
    return problems


def report(b: Bench, runs: list[Run], batches: dict[str, Batch], trace: Trace | None) -> list[str]:
    a, sizes = b.a, [len(body) for _, body in batches["main"].events]
    rep.header("delivery throughput benchmark", b.stack)
    dispatch = (
        f"this process calls watcher.tasks.dispatch_due_deliveries_now(rt) every "
        f"{a.dispatch_interval:g}s (claim with leases + apply_async; its CPU shows as `bench`)"
        if a.dispatch == "bench"
        else f"`celery -A watcher beat` with WATCHER_DISPATCH_INTERVAL={a.dispatch_interval:g}"
        " (dispatch ticks run in the worker)"
    )
    print(
        f"setup: receiver = stdlib ThreadingHTTPServer in its own process on 127.0.0.1 "
        f"(keep-alive, one write per answer, 200 'ok'); private redis-server "
        f"{b.stack.redis.url} is also the Celery broker; one `celery -A watcher worker --pool "
        f"{a.pool} --concurrency {a.concurrency} --without-mingle --without-gossip`\n"
        f"dispatch: {dispatch}\nthroughput run: WATCHER_WEBHOOK_MAX_IN_FLIGHT={a.cap} (>= "
        f"concurrency {a.concurrency}; default {DEFAULT_CAP}); bodies: {len(sizes)} "
        f"payment.completed events, {min(sizes)}-{max(sizes)} bytes, all fanned out before the "
        "worker started; plain loops post the main batch's bodies, signed per request with its "
        "subscription secret (webhook_headers), to their own paths of the same receiver\n"
        "time: watcher = first POST at the receiver -> `deliveries:succeeded` reached N "
        f"(polled every {POLL_EVERY * 1000:g} ms); plain/direct = loop start -> end\n"
    )
    throughput_table(a, runs)
    runs_table(runs)
    commands_table(runs, batches["main"])
    if trace is not None:
        trace_table(trace)
    breakdown(a, runs, trace)
    for x in batches.values():
        n = len(x.events)
        print(f"fan-out of '{x.label}' (before its run, not timed in it): {n} events in "
              f"{x.fan_out_seconds:.2f}s ({n / x.fan_out_seconds:,.0f}/s) with "
              f"{x.subscriptions} enabled subscriptions: "
              f"{x.fan_out.total_commands / n:.1f} Redis commands per event")  # fmt: skip
    print()
    return check_runs(b, runs, batches)
