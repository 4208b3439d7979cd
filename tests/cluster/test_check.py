#!/usr/bin/env python3
"""Tests of the chaos cluster's checker (check.py) over small synthetic log sets.

Run: python3 -m unittest discover -s tests/cluster -p 'test_*.py'
(CI runs it in the `cluster-checker` stage).
"""

import json
import os
import subprocess
import sys
import tempfile
import unittest

CHECK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "check.py")
S = 1_000_000  # µs per second: the logs' clock


def run_check(history, faults, topology, *extra):
    """Runs check.py on the given events; (exit code, summary dict, output)."""
    with tempfile.TemporaryDirectory() as d:
        paths = {}
        for name, events in (("history", history), ("faults", faults), ("topology", topology)):
            paths[name] = os.path.join(d, name + ".jsonl")
            with open(paths[name], "w", encoding="utf-8") as f:
                for e in events:
                    f.write((e if isinstance(e, str) else json.dumps(e)) + "\n")
        done = subprocess.run(
            [sys.executable, CHECK, "--history", paths["history"], "--faults", paths["faults"],
             "--topology", paths["topology"], *extra],
            capture_output=True, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    summary = {}
    if lines and lines[-1].startswith("nodes="):
        summary = dict(kv.split("=", 1) for kv in lines[-1].split())
    return done.returncode, summary, done.stdout + done.stderr


def ev(t_s, n, name, **fields):
    return {"t": int(t_s * S), "n": n, "ev": name, **fields}


def topology(nodes, private=()):
    return [{"n": n, "host": f"h{n}", "private": n in private} for n in range(nodes)]


def frame(end_s):
    return [{"t": 0, "kind": "begin", "hosts": [], "nodes": []},
            {"t": int(end_s * S), "kind": "end", "hosts": [], "nodes": []}]


def starts(nodes):
    return [ev(0, n, "start", id=f"id{n}", inc=1) for n in range(nodes)]


class CheckerTest(unittest.TestCase):
    def test_empty_logs_give_a_zero_summary_and_pass(self):
        code, summary, out = run_check([], [], [])
        self.assertEqual(code, 0, out)
        self.assertEqual(summary["calls"], "0", out)
        self.assertEqual(summary["lost"], "0", out)
        self.assertNotIn("Traceback", out)

    def test_a_reply_from_a_provider_that_never_executed_is_a_phantom_not_a_crash(self):
        # The crash of issue 17: the phantom check made an empty execution list for the
        # request, and the double-execution check then read its first element.
        history = starts(6) + [
            ev(30, 4, "call", rid="4.1.1", proc="work.once"),
            ev(30.1, 4, "reply", rid="4.1.1", proc="work.once", by="1"),
        ]
        code, summary, out = run_check(history, frame(60), topology(6))
        self.assertNotIn("Traceback", out)
        self.assertEqual(code, 1, out)
        self.assertIn("phantom reply 4.1.1 by 1", out)
        self.assertEqual(summary["ok"], "1", out)

    def test_debug_events_and_cut_lines_are_ignored(self):
        history = starts(6) + [
            ev(30, 4, "call", rid="4.1.1", proc="work.once"),
            ev(30.05, 1, "exec", rid="4.1.1", proc="work.once"),
            ev(30.1, 4, "reply", rid="4.1.1", proc="work.once", by="1"),
            ev(31, 4, "stats", table=7, conns=3, pubsub="x", caches="y", counters="z"),
            ev(31, 4, "relay", event="Reserved"),
            ev(31, 4, "nat", report="NatReport"),
            '{"t":3100000,"n":4,"ev":"dl',  # a line cut by kill -9
            "not json at all",
        ]
        code, summary, out = run_check(history, frame(60), topology(6))
        self.assertEqual(code, 0, out)
        self.assertEqual((summary["calls"], summary["ok"]), ("1", "1"), out)

    def _executed_twice(self, proc):
        """A call of `proc` that providers 1 and 6 both executed."""
        history = starts(7) + [
            ev(30, 4, "call", rid="4.1.1", proc=proc),
            ev(30.05, 1, "exec", rid="4.1.1", proc=proc),
            ev(30.06, 6, "exec", rid="4.1.1", proc=proc),
            ev(30.1, 4, "reply", rid="4.1.1", proc=proc, by="6"),
        ]
        return run_check(history, frame(60), topology(7))

    def test_a_non_idempotent_call_executed_twice_is_a_duplicate(self):
        code, summary, out = self._executed_twice("work.once")
        self.assertEqual(code, 1, out)
        self.assertEqual(summary["duplicates"], "1", out)
        self.assertIn("work.once 4.1.1 executed 2 times", out)

    def test_an_idempotent_call_executed_twice_is_fine(self):
        code, summary, out = self._executed_twice("work.idem")
        self.assertEqual(code, 0, out)
        self.assertEqual(summary["duplicates"], "0", out)

    def test_a_call_without_reply_from_a_living_caller_is_lost(self):
        history = starts(6) + [ev(30, 4, "call", rid="4.1.1", proc="work.once")]
        code, summary, out = run_check(history, frame(60), topology(6))
        self.assertEqual(code, 1, out)
        self.assertEqual(summary["lost"], "1", out)
        self.assertIn("hung call 4.1.1", out)

    def test_a_call_whose_caller_was_killed_is_excused(self):
        history = starts(6) + [ev(30, 4, "call", rid="4.1.1", proc="work.once")]
        faults = frame(60) + [{"t": 31 * S, "kind": "kill9", "hosts": [], "nodes": [4]},
                              {"t": 34 * S, "kind": "restart", "hosts": [], "nodes": [4]}]
        code, summary, out = run_check(history, faults, topology(6))
        self.assertEqual(code, 0, out)
        self.assertEqual(summary["lost"], "0", out)
        self.assertIn("excused=1", out)

    def _stream(self, delivered, order=None):
        """Publisher 3 publishes 3.1.1..3.1.5 at 40..44 s; subscriber 6 (t.#, since 0 s)."""
        history = starts(7) + [ev(0.5, 6, "sub", pat="t.#")]
        for seq in range(1, 6):
            history.append(ev(39 + seq, 3, "pub", topic="t.p3.x", msg=f"3.1.{seq}"))
        for k, seq in enumerate(order or delivered):
            history.append(ev(40.5 + k, 6, "dlv", pat="t.#", topic="t.p3.x", msg=f"3.1.{seq}"))
        return run_check(history, frame(120), topology(7))

    def test_every_publication_delivered_once_in_order_passes(self):
        code, summary, out = self._stream([1, 2, 3, 4, 5])
        self.assertEqual(code, 0, out)
        self.assertEqual((summary["lost"], summary["reordered"]), ("0", "0"), out)

    def test_a_publication_missing_at_a_settled_quiet_subscriber_is_lost(self):
        code, summary, out = self._stream([1, 2, 4, 5])
        self.assertEqual(code, 1, out)
        self.assertEqual(summary["lost"], "1", out)
        self.assertIn("lost 1 of 3.1 (3.1.3..3.1.3", out)

    def test_a_loss_prints_the_pairs_events_and_the_faults_around_it(self):
        history = starts(7) + [ev(0.5, 6, "sub", pat="t.#")]
        for seq in range(1, 6):
            history.append(ev(39 + seq, 3, "pub", topic="t.p3.x", msg=f"3.1.{seq}"))
            if seq != 3:
                history.append(ev(39.5 + seq, 6, "dlv", pat="t.#", topic="t.p3.x", msg=f"3.1.{seq}"))
        history += [
            ev(41.2, 3, "disc", peer="id6", reason="TimedOut"),
            ev(41.3, 3, "conn", peer="id4", kind="direct"),  # another peer: not shown
            ev(43, 6, "stats", pubsub="PerLabel { values: [0, 0, 4, 0], label: _ }", conns=2),
        ]
        faults = frame(120) + [{"t": 30 * S, "kind": "kill9", "hosts": [], "nodes": [5]}]
        code, _, out = run_check(history, faults, topology(7))
        self.assertEqual(code, 1, out)
        context = [line for line in out.splitlines() if line.startswith("context:")]
        self.assertIn("pair publisher 3 (id3) -> subscriber 6 (id6), loss from 42.0 s to 42.0 s", context[0])
        self.assertTrue(any("fault kill9 nodes=[5]" in line for line in context), out)
        self.assertTrue(any('node 3: {"ev": "disc", "peer": "id6"' in line for line in context), out)
        self.assertTrue(any("node 6: stats conns=2 pubsub=0/0/4/0" in line for line in context), out)
        self.assertFalse(any("id4" in line for line in context), out)

    def test_a_publication_delivered_twice_is_a_duplicate(self):
        code, summary, out = self._stream(None, order=[1, 2, 2, 3, 4, 5])
        self.assertEqual(code, 1, out)
        self.assertEqual(summary["duplicates"], "1", out)

    def test_publications_out_of_order_are_reordered(self):
        code, summary, out = self._stream(None, order=[1, 3, 2, 4, 5])
        self.assertEqual(code, 1, out)
        self.assertEqual(summary["reordered"], "1", out)

    def test_a_publication_while_the_subscriber_was_partitioned_is_excused(self):
        history = starts(7) + [ev(0.5, 6, "sub", pat="t.#")]
        history.append(ev(41, 3, "pub", topic="t.p3.x", msg="3.1.1"))
        faults = frame(120) + [
            {"t": 40 * S, "kind": "partition", "hosts": ["h6"], "nodes": [6], "secs": 4},
            {"t": 44 * S, "kind": "heal", "hosts": ["h6"], "nodes": [6]},
        ]
        code, summary, out = run_check(history, faults, topology(7))
        self.assertEqual(code, 0, out)
        self.assertEqual(summary["lost"], "0", out)

    def _through_relay(self, path_before_kill):
        """Publisher 3 and subscribers 5 and 6 (t.#); 3's connection to 6 runs over a
        circuit through node 4, killed at 40 s (restarted at 42 s), its path
        `path_before_kill` then; 3.1.1 at 41 s reaches neither subscriber."""
        ids = {n: f"{n + 160:08x}" * 8 for n in range(7)}
        history = [ev(0, n, "start", id=ids[n], inc=1) for n in range(7)]
        history += [ev(0.5, 5, "sub", pat="t.#"), ev(0.5, 6, "sub", pat="t.#")]
        opened = "CircuitOpened {{ relay: NodeId({}), peer: NodeId({}), circuit: 1 }}"
        history += [
            ev(10, 3, "relay", event=opened.format(ids[4][:16], ids[6][:16])),
            ev(10, 6, "relay", event=opened.format(ids[4][:16], ids[3][:16])),
            ev(10, 3, "conn", peer=ids[6][:8], kind="relayed"),
            ev(11, 3, "path", peer=ids[6][:8], kind=path_before_kill),
            ev(41, 3, "pub", topic="t.p3.x", msg="3.1.1"),
        ]
        faults = frame(120) + [
            {"t": 40 * S, "kind": "kill9", "hosts": [], "nodes": [4], "down_s": 2},
            {"t": 42 * S, "kind": "restart", "hosts": [], "nodes": [4]},
        ]
        return run_check(history, faults, topology(7))

    def test_a_loss_over_a_circuit_through_a_killed_relay_is_excused_for_that_pair_only(self):
        code, summary, out = self._through_relay("relayed")
        self.assertEqual(summary["lost"], "1", out)
        self.assertIn("for node 5", out)
        self.assertNotIn("for node 6", out)

    def test_a_pair_that_went_direct_before_its_relay_was_killed_is_not_excused(self):
        code, summary, out = self._through_relay("direct")
        self.assertEqual(summary["lost"], "2", out)

    def test_lookup_hops_latency_and_table_sizes_are_summarised_beside_the_prediction(self):
        history = starts(4) + [
            ev(30, 1, "lookup", op="find_node", hops=1, ms=3, timed_out=False),
            ev(31, 2, "lookup", op="find_value", hops=2, ms=9, timed_out=False),
            ev(32, 3, "lookup", op="find_node", hops=-1, ms=5000, timed_out=True),
            ev(33, 1, "stats", table=4), ev(38, 1, "stats", table=6), ev(38, 2, "stats", table=9),
        ]
        sim = "nodes=4 lookups=100 closest_found_rate=1.0 median_hops=1 p90_hops=2 median_latency_ms=2.0"
        code, _, out = run_check(history, frame(60), topology(4), "--dht-sim", sim)
        self.assertEqual(code, 0, out)
        self.assertIn("dht live: lookups=3 unanswered=1 timed_out=1 median_hops=2 p90_hops=2 "
                      "median_latency_ms=9 p99_latency_ms=5000", out)
        self.assertIn("dht sim (dht_scale): nodes=4 lookups=100 median_hops=1 p90_hops=2 median_latency_ms=2.0", out)
        self.assertIn("routing tables (last stats per node): nodes=2 min=6 median=9 max=9", out)


if __name__ == "__main__":
    unittest.main()
