#!/usr/bin/env python3
"""The chaos cluster's checker: reads the merged histories of every node
(cluster_node's JSON lines) and the fault log of tests/cluster/run, checks the
invariants, measures recovery and the direct share, prints the violations it
found and one summary line, and exits 1 on any violation.

Invariants (a violation each):
- double_exec: a call of the non-idempotent procedure executed more than once;
- hung: a call with no reply (nor typed error) within its timeout (+1 s of slack)
  while its caller lived;
- phantom: a reply naming a provider that never executed that request;
- duplicates: a publication delivered twice to one subscription (of one
  incarnation of the subscriber), plus double_exec;
- reordered: a subscription got a publisher's messages out of order;
- lost: a publication not delivered to a subscriber that was subscribed
  (and known to publishers: subscribed `--settle-ms` before), with neither it
  nor the publisher touched by a fault from `--window-ms` before the
  publication to `--window-ms` after it (a fault's touch lasts until
  `--grace-ms` after it healed; the kill or stop of a node touches the pair
  at the two ends of every circuit open through it, since every public node
  relays); hung calls count as lost too.

Also printed (no invariant): the DHT lookups' hops and latency (`lookup`
events), beside the simulator's prediction for the same N when `--dht-sim`
hands over dht_scale's line, and the routing-table sizes (each node's last
`stats`).

Recovery, per fault: from its end (the restart, the heal; the fault itself
for a NAT reboot or an address change) to the first successful call or
delivery made by, served by, sent to or published by a node it touched.
"""

import argparse
import json
import sys
from collections import defaultdict


def load(path):
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass  # a line cut by kill -9
    return out


def percentile(values, p):
    if not values:
        return -1
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(p / 100 * len(values) + 0.5)) - 1))
    return values[k]


def matches(pattern, topic):
    p, t = pattern.split("."), topic.split(".")
    for i, seg in enumerate(p):
        if seg == "#":
            return True
        if i >= len(t) or (seg != "*" and seg != t[i]):
            return False
    return len(p) == len(t)


class Lives:
    """Each node's incarnations: start times, and when each ended (kill, stop)."""

    def __init__(self, history, faults, end):
        self.starts = defaultdict(list)
        for e in history:
            if e["ev"] == "start":
                self.starts[e["n"]].append(e["t"])
        for ts in self.starts.values():
            ts.sort()
        self.deaths = defaultdict(list)
        for f in faults:
            if f["kind"] in ("kill9", "stop"):
                for n in f["nodes"]:
                    self.deaths[n].append(f["t"])
        self.end = end

    def incarnation(self, n, t):
        """Index of the incarnation of node n running at t (-1: none yet)."""
        k = -1
        for i, s in enumerate(self.starts.get(n, [])):
            if s <= t:
                k = i
        return k

    def alive_until(self, n, t):
        """When the incarnation of n running at t ended (its next kill or stop)."""
        later = [d for d in self.deaths.get(n, []) if d >= t]
        return min(later) if later else self.end


def touches(faults, private, window, grace, end):
    """(from, to, nodes) spans during which a fault touches those nodes."""
    spans = []
    open_ = {}
    seeds = {0, 1, 2}
    for f in faults:
        kind, t, nodes = f["kind"], f["t"], set(f["nodes"])
        wider = set(private) if nodes & seeds else set()
        if kind in ("kill9", "stop"):
            for n in nodes:
                open_[("node", n)] = (t, nodes | wider)
        elif kind == "restart":
            for n in nodes:
                start, touched = open_.pop(("node", n), (t, nodes))
                spans.append((start - window, t + grace, touched))
        elif kind == "partition":
            hosts = tuple(f["hosts"])
            seeded = any(h.startswith("pub") for h in hosts)
            open_[("part", hosts)] = (t, nodes | (set(private) if seeded else set()))
        elif kind == "heal":
            start, touched = open_.pop(("part", tuple(f["hosts"])), (t, nodes))
            spans.append((start - window, t + grace, touched))
        elif kind in ("nat_reboot", "readdress"):
            spans.append((t - window, t + grace, nodes))
    for start, touched in open_.values():
        spans.append((start - window, end + grace, touched))
    return spans


def pair_context(history, faults, a, b, t0, t1, begin, before_s=20, after_s=10, most=40):
    """What a CI log needs to explain a loss between publisher `a` and subscriber
    `b` over [t0, t1]: the faults, and each side's events about the other (its
    connection, path, circuits, disconnects, the publisher's subscriber view) and
    its counters, from `before_s` before to `after_s` after; at most `most` lines,
    times in seconds from `begin`."""
    short = {e["n"]: e["id"][:8] for e in history if e["ev"] == "start" and "id" in e}
    lo, hi = t0 - before_s * 1_000_000, t1 + after_s * 1_000_000
    lines = [f"pair publisher {a} ({short.get(a, '?')}) -> subscriber {b} ({short.get(b, '?')}), "
             f"loss from {(t0 - begin) / 1e6:.1f} s to {(t1 - begin) / 1e6:.1f} s"]
    for f in faults:
        if lo <= f["t"] <= hi:
            lines.append(f"{(f['t'] - begin) / 1e6:7.1f} s fault {f['kind']} nodes={f['nodes']} hosts={f['hosts']}")
    about = {a: short.get(b, "-"), b: short.get(a, "-")}
    for e in history:
        n = e["n"]
        if n not in about or not lo <= e["t"] <= hi or e["ev"] in ("pub", "dlv", "call", "reply", "exec"):
            continue
        at = f"{(e['t'] - begin) / 1e6:7.1f} s node {n}:"
        if e["ev"] == "stats":
            # published/sent/delivered/dropped, as the pub/sub metric's labels
            counts = e.get("pubsub", "").partition("values: [")[2].partition("]")[0]
            lines.append(f"{at} stats conns={e.get('conns')} pubsub={counts.replace(', ', '/')}")
            continue
        text = json.dumps({k: v for k, v in e.items() if k not in ("t", "n")})
        if about[n] in text or e["ev"] in ("start", "subs"):
            lines.append(f"{at} {text[:300]}")
    return lines[:most]


def relayed_through(history, faults, window, grace, end):
    """(from, to, pairs) spans during which the kill or stop of a node touches the
    pairs of nodes whose circuits ran through it (every public node relays): the two
    ends of each circuit opened through it before the fault, not closed by then and
    whose connection was still on it (not moved to a direct path), both ways, from
    `window` before the fault to `grace` after its restart (or the end)."""
    short = {}
    for e in history:
        if e["ev"] == "start" and "id" in e:
            short[e["id"][:16]] = e["n"]
    opened = defaultdict(list)  # relay node -> [(t, node, peer node)]
    closed = defaultdict(list)  # (node, peer node) -> [t of a close of a circuit through relay]
    for e in history:
        text = e.get("event", "") if e["ev"] == "relay" else e.get("reason", "")
        if "relay: NodeId(" not in text:
            continue
        relay = short.get(text.split("relay: NodeId(")[1][:16])
        if e["ev"] == "relay" and text.startswith("CircuitOpened") and "peer: NodeId(" in text:
            peer = short.get(text.split("peer: NodeId(")[1][:16])
            if relay is not None and peer is not None:
                opened[relay].append((e["t"], e["n"], peer))
        elif e["ev"] == "disc" and "CircuitClosed" in text and relay is not None:
            closed[(e["n"], relay)].append(e["t"])
    paths = defaultdict(list)  # (node, peer node) -> [(t, kind)] of its connection's path
    for e in history:
        if e["ev"] in ("conn", "path") and "peer" in e:
            peer = next((n for sid, n in short.items() if sid.startswith(e["peer"])), None)
            if peer is not None:
                paths[(e["n"], peer)].append((e["t"], e["kind"]))

    def relayed_at(node, peer, t):
        """Neither end had seen the connection move to a direct path by `t`."""
        for pair in ((node, peer), (peer, node)):
            kinds = [k for at, k in paths.get(pair, []) if at <= t]
            if kinds and kinds[-1] == "direct":
                return False
        return True

    spans = []
    downs = {}
    for f in sorted(faults, key=lambda f: f["t"]):
        if f["kind"] in ("kill9", "stop"):
            for n in f["nodes"]:
                downs[n] = f["t"]
        elif f["kind"] == "restart":
            for n in f["nodes"]:
                t0 = downs.pop(n, None)
                if t0 is not None:
                    spans.append((t0, f["t"], n))
    spans += [(t0, end, n) for n, t0 in downs.items()]
    out = []
    for t0, t1, relay in spans:
        touched = set()
        for t, node, peer in opened.get(relay, []):
            gone = any(t < c <= t0 for c in closed.get((node, relay), []))
            if t <= t0 and not gone and relayed_at(node, peer, t0):
                touched |= {(node, peer), (peer, node)}
        if touched:
            out.append((t0 - window, t1 + grace, touched))
    return out


def recovery_points(faults):
    """(fault kind, recovery start t, touched nodes) for each fault."""
    points = []
    pending = {}
    for f in faults:
        kind, t, nodes = f["kind"], f["t"], f["nodes"]
        if kind in ("kill9", "stop"):
            for n in nodes:
                pending[n] = kind
        elif kind == "restart":
            for n in nodes:
                points.append((pending.pop(n, "restart"), t, set(nodes)))
        elif kind == "heal":
            points.append(("partition", t, set(nodes)))
        elif kind in ("nat_reboot", "readdress"):
            points.append((kind, t, set(nodes)))
    return points


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--history", required=True)
    ap.add_argument("--faults", required=True)
    ap.add_argument("--topology", required=True)
    ap.add_argument("--call-timeout-ms", type=int, default=5000)
    ap.add_argument("--window-ms", type=int, default=5000)
    ap.add_argument("--grace-ms", type=int, default=5000)
    ap.add_argument("--settle-ms", type=int, default=35000)
    ap.add_argument("--dht-sim", default="", help="dht_scale's key=value line for the same N")
    args = ap.parse_args()
    ms = 1000
    history = load(args.history)
    faults = sorted(load(args.faults), key=lambda f: f["t"])
    topology = load(args.topology)
    private = [e["n"] for e in topology if e["private"]]
    history.sort(key=lambda e: e["t"])
    first, last = (history[0]["t"], history[-1]["t"]) if history else (0, 0)
    begin = next((f["t"] for f in faults if f["kind"] == "begin"), first)
    end = next((f["t"] for f in faults if f["kind"] == "end"), last)
    lives = Lives(history, faults, end)
    by_ev = defaultdict(list)
    for e in history:
        by_ev[e["ev"]].append(e)
    problems = []

    # --- calls -------------------------------------------------------------------
    timeout = args.call_timeout_ms * ms
    replies = {e["rid"]: e for e in by_ev["reply"]}
    execs = defaultdict(list)
    for e in by_ev["exec"]:
        execs[e["rid"]].append(e)
    calls = by_ev["call"]
    ok = typed = hung = excused = 0
    errors = defaultdict(int)
    for c in calls:
        r = replies.get(c["rid"])
        if r is None or r["t"] - c["t"] > timeout + 1000 * ms:
            if lives.alive_until(c["n"], c["t"]) < c["t"] + timeout + 1000 * ms:
                excused += 1  # the caller was killed before the timeout
                continue
            hung += 1
            problems.append(f"hung call {c['rid']} ({c['proc']}) at t={c['t']}")
        elif "err" in r:
            typed += 1
            errors[r["err"].removeprefix("Rpc(").split("(")[0].split(" ")[0].rstrip(")")] += 1
        else:
            ok += 1
            if not any(str(x["n"]) == r["by"] for x in execs.get(c["rid"], ())):
                problems.append(f"phantom reply {c['rid']} by {r['by']}")
    phantom = sum(1 for p in problems if p.startswith("phantom"))
    double_exec = 0
    for rid, xs in execs.items():
        if len(xs) > 1 and xs[0]["proc"] == "work.once":
            double_exec += 1
            problems.append(f"work.once {rid} executed {len(xs)} times: nodes {[x['n'] for x in xs]}")

    # --- publications --------------------------------------------------------------
    pubs = by_ev["pub"]
    subs = defaultdict(list)  # node -> [(t, pattern, incarnation)]
    first_sub = {}
    for e in by_ev["sub"]:
        subs[e["n"]].append((e["t"], e["pat"], lives.incarnation(e["n"], e["t"])))
        first_sub.setdefault((e["n"], e["pat"]), e["t"])
    got = defaultdict(list)  # (sub node, sub incarnation, pattern) -> [(t, msg)]
    for e in by_ev["dlv"]:
        got[(e["n"], lives.incarnation(e["n"], e["t"]), e["pat"])].append((e["t"], e["msg"]))
    duplicates = reordered = 0
    delivered = set()
    for key, items in got.items():
        seen = set()
        last = {}
        for t, msg in items:
            if msg in seen:
                duplicates += 1
                problems.append(f"duplicate {msg} to node {key[0]} ({key[2]})")
            seen.add(msg)
            delivered.add((key[0], key[2], msg))
            publisher, inc, seq = msg.split(".")
            stream = (publisher, inc)
            if stream in last and int(seq) < last[stream]:
                reordered += 1
                problems.append(f"reordered {msg} after seq {last[stream]} to node {key[0]} ({key[2]})")
            last[stream] = max(last.get(stream, 0), int(seq))
    spans = touches(faults, private, args.window_ms * ms, args.grace_ms * ms, end)
    relay_spans = relayed_through(history, faults, args.window_ms * ms, args.grace_ms * ms, end)
    touched_at = defaultdict(list)
    for start, stop, nodes in spans:
        for n in nodes:
            touched_at[n].append((start, stop))

    def quiet(n, t0, t1):
        return all(stop < t0 or start > t1 for start, stop in touched_at.get(n, []))

    def pair_quiet(a, b, t0, t1):
        return all(stop < t0 or start > t1 or (a, b) not in pairs for start, stop, pairs in relay_spans)

    window = args.window_ms * ms
    lost = checked = 0
    losses = defaultdict(list)  # (subscriber, pattern, publisher.incarnation) -> [(t, msg)]
    for p in pubs:
        tp, publisher, topic = p["t"], p["n"], p["topic"]
        if tp + window > end or lives.alive_until(publisher, tp) < tp + window:
            continue
        if not quiet(publisher, tp - window, tp + window):
            continue
        for s, entries in subs.items():
            inc = lives.incarnation(s, tp)
            for ts, pattern, sinc in entries:
                if sinc != inc or ts > tp - 1000 * ms or not matches(pattern, topic):
                    continue
                if first_sub[(s, pattern)] > tp - args.settle_ms * ms:
                    continue
                if lives.alive_until(s, tp) < tp + window or not quiet(s, tp - window, tp + window):
                    continue
                if not pair_quiet(publisher, s, tp - window, tp + window):
                    continue
                checked += 1
                if (s, pattern, p["msg"]) not in delivered:
                    lost += 1
                    losses[(s, pattern, p["msg"].rsplit(".", 1)[0])].append((tp, p["msg"]))

    contexts = []
    for (s, pattern, stream), items in sorted(losses.items(), key=lambda kv: kv[1][0][0]):
        problems.append(
            f"lost {len(items)} of {stream} ({items[0][1]}..{items[-1][1]}, t={items[0][0]}..{items[-1][0]}) "
            f"for node {s} ({pattern})")
        contexts.append((int(stream.split(".")[0]), s, items[0][0], items[-1][0]))

    # --- recovery ----------------------------------------------------------------------
    successes = []  # (t, nodes involved)
    for e in by_ev["reply"]:
        if "by" in e:
            successes.append((e["t"], {e["n"], int(e["by"])}))
    for e in by_ev["dlv"]:
        successes.append((e["t"], {e["n"], int(e["msg"].split(".")[0])}))
    successes.sort(key=lambda x: x[0])
    recovery = []
    unrecovered = []
    by_kind = defaultdict(list)
    for kind, t0, nodes in recovery_points(faults):
        if nodes & {0, 1, 2}:
            nodes = nodes | set(private)
        hit = next((t for t, involved in successes if t >= t0 and involved & nodes), None)
        if hit is None:
            unrecovered.append(kind)
            continue
        recovery.append((hit - t0) / ms)
        by_kind[kind].append((hit - t0) / ms)

    # --- paths -------------------------------------------------------------------------
    conns = []
    current = {}
    for e in sorted(by_ev["conn"] + by_ev["path"], key=lambda e: e["t"]):
        key = (e["n"], e["peer"])
        if e["ev"] == "conn":
            record = {"start": e["kind"], "direct": e["kind"] == "direct"}
            conns.append(record)
            current[key] = record
        elif key in current and e["kind"] == "direct":
            current[key]["direct"] = True
    direct_share = sum(c["direct"] for c in conns) / len(conns) if conns else 0.0
    relayed = [c for c in conns if c["start"] == "relayed"]
    upgraded = sum(c["direct"] for c in relayed)

    # --- DHT lookups and routing tables ------------------------------------------------
    lookups = [e for e in by_ev["lookup"] if "hops" in e and "ms" in e]
    hops = [e["hops"] for e in lookups if e["hops"] >= 0]
    lookup_ms = [e["ms"] for e in lookups]
    tables = {}
    for e in by_ev["stats"]:
        if isinstance(e.get("table"), int):
            tables[e["n"]] = e["table"]
    table_sizes = sorted(tables.values())

    nodes = len({e["n"] for e in by_ev["start"]})
    counted_faults = sum(1 for f in faults if f["kind"] in ("kill9", "stop", "partition", "nat_reboot", "readdress"))
    for line in problems[:40]:
        print("violation:", line)
    if len(problems) > 40:
        print(f"violation: ... {len(problems) - 40} more")
    for publisher, subscriber, t0, t1 in contexts[:3]:
        for line in pair_context(history, faults, publisher, subscriber, t0, t1, begin):
            print("context:", line)
    print(f"calls: excused={excused} (caller killed) hung={hung} phantom={phantom} double_exec={double_exec} "
          f"errors={dict(errors)}")
    print(f"publications: published={len(pubs)} deliveries={len(by_ev['dlv'])} "
          f"checked_pairs={checked} publish_errors={len(by_ev['puberr'])}")
    for kind, values in sorted(by_kind.items()):
        print(f"recovery {kind}: n={len(values)} p50_ms={percentile(values, 50):.0f} "
              f"max_ms={max(values):.0f}")
    print(f"recovery: unrecovered={len(unrecovered)} {unrecovered}")
    print(f"paths: connections={len(conns)} started_relayed={len(relayed)} upgraded={upgraded} "
          f"window_s={(end - begin) / 1e6:.0f}")
    print(f"dht live: lookups={len(lookups)} unanswered={len(lookups) - len(hops)} "
          f"timed_out={sum(1 for e in lookups if e.get('timed_out'))} "
          f"median_hops={percentile(hops, 50)} p90_hops={percentile(hops, 90)} "
          f"median_latency_ms={percentile(lookup_ms, 50)} p99_latency_ms={percentile(lookup_ms, 99)}")
    if args.dht_sim:
        wanted = ("nodes", "lookups", "median_hops", "p90_hops", "median_latency_ms", "p99_latency_ms")
        sim = dict(kv.split("=", 1) for kv in args.dht_sim.split() if "=" in kv)
        print("dht sim (dht_scale): " + " ".join(f"{k}={sim[k]}" for k in wanted if k in sim))
    print(f"routing tables (last stats per node): nodes={len(table_sizes)} min={percentile(table_sizes, 0)} "
          f"median={percentile(table_sizes, 50)} max={percentile(table_sizes, 100)}")
    print(f"nodes={nodes} faults={counted_faults} calls={len(calls) - excused} ok={ok} typed_errors={typed} "
          f"lost={lost + hung} duplicates={duplicates + double_exec} reordered={reordered} "
          f"recovery_p50_ms={percentile(recovery, 50):.0f} recovery_p99_ms={percentile(recovery, 99):.0f} "
          f"direct_share={direct_share:.2f}")
    violated = lost + hung + duplicates + double_exec + reordered + phantom
    return 1 if violated else 0


if __name__ == "__main__":
    sys.exit(main())
