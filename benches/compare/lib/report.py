#!/usr/bin/env python3
"""Renders the comparison's results (TSV: workload, target, metric, value; one line per run) as
a markdown table of medians and ratios, like the issue's.

  report.py table RESULTS.tsv
  report.py loadtest-json FILE     prints `p50_us p99_us` from `rollgate loadtest --json` output
  report.py loadtest-compare FILE  prints `added_p50_us added_p99_us ratio` from `--compare --json`
  report.py loadtest-pair FILE ab|ba TICKS_A TICKS_B  prints `rps p99 cpu` ratios of B over A
                                   and `dp50 dp99`, B's p50 and p99 minus A's (µs)
  (and loadtest-json on the same file gives the first target's, i.e. the direct side's, p50 p99)
"""

import json
import math
import statistics
import sys
from collections import defaultdict

TARGETS = ["direct", "nginx", "haproxy", "rollgate"]
HEAD = ["workload", "direct (the limit)", "nginx", "HAProxy", "rollgate"]


def load(path):
    data = defaultdict(list)
    for line in open(path):
        parts = line.rstrip("\n").split("\t")
        if len(parts) == 4:
            wl, target, metric, value = parts
            data[(wl, target, metric)].append(value)
    return data


class R:
    def __init__(self, data):
        self.data = data

    def runs(self, wl, t, m):
        return len(self.data.get((wl, t, m), []))

    def values(self, wl, t, m):
        vals = []
        for v in self.data.get((wl, t, m), []):
            try:
                f = float(v)
            except ValueError:
                continue
            if not math.isnan(f):
                vals.append(f)
        return vals

    def med(self, wl, t, m):
        vals = self.values(wl, t, m)
        return statistics.median(vals) if vals else None

    def range(self, wl, t, m):
        vals = self.values(wl, t, m)
        return (min(vals), max(vals)) if vals else (math.nan, math.nan)

    def has_metric(self, wl, m):
        return any(k[0] == wl and k[2] == m for k in self.data)

    def paired(self, wl, t, num, den, t_den=None):
        """Median, min and max of the per-round ratios num/den (of target t, or num of t over
        den of t_den): the rounds of alternating slices measure both sides back to back, so a
        machine that is slow for a while slows both sides of that round's ratio alike."""
        a = self.data.get((wl, t, num), [])
        b = self.data.get((wl, t_den or t, den), [])
        vals = []
        for x, y in zip(a, b):
            try:
                x, y = float(x), float(y)
            except ValueError:
                continue
            if y and not (math.isnan(x) or math.isnan(y)):
                vals.append(x / y)
        if not vals:
            return None
        return statistics.median(vals), min(vals), max(vals)

    def total(self, wl, t, m):
        total = 0.0
        for v in self.data.get((wl, t, m), []):
            try:
                total += float(v)
            except ValueError:
                pass
        return total

    def text(self, wl, t, m):
        v = self.data.get((wl, t, m))
        return v[0] if v else None

    def has(self, wl):
        return any(k[0] == wl for k in self.data)

    def spread(self, wl, t, m):
        """Median, min and max of a metric's per-run values (None without any)."""
        vals = self.values(wl, t, m)
        return (statistics.median(vals), min(vals), max(vals)) if vals else None

    def pair(self, wl, t, sfx, cpu=True, vs=""):
        """`run pairs`' verdict for a cell: B over A in throughput (and CPU per request), the
        median and range of RUNS paired `loadtest --compare` runs; "" when the cell has none."""
        q = self.spread(wl, t, "pair_rps" + sfx)
        if q is None:
            return ""
        out = f"; paired `loadtest --compare` ({self.runs(wl, t, 'pair_rps' + sfx)} runs): ×{pr(q)}{vs} rps"
        c = self.spread(wl, t, "pair_cpu" + sfx)
        if cpu and c is not None:
            out += f", ×{pr(c)}{vs} CPU/req"
        return out


def f(v, fmt="{:.1f}", none="n/a"):
    return none if v is None else fmt.format(v)


def ratio(a, b):
    return None if a is None or not b else a / b


def pr(p, fmt="{:.2f}"):
    """A paired ratio: median (min–max over rounds)."""
    if p is None:
        return "n/a"
    return f"{fmt.format(p[0])} ({fmt.format(p[1])}–{fmt.format(p[2])})"


def k(v):
    return "n/a" if v is None else f"{v / 1000:.1f}k"


def table(path):
    r = R(load(path))
    rows = []

    up_n, up_s = r.med("upstream", "nginx", "rps"), r.med("upstream", "sim", "rps")
    notes = [
        f"Fast upstream: nginx `return 200` ({k(up_n)} rps direct) vs `rollgate sim` with zero "
        f"latency ({k(up_s)} rps), both measured directly with wrk -c64 at the start of the run. nginx is "
        "the upstream of the small-request, body, split, mirror and reload workloads (it is the faster "
        "one on a quiet machine and costs no JSON generation); the simulator serves the SSE and "
        "long-stream workloads. The 50 ms shadow stands for another machine: it is pinned as "
        "Placement says (by default to the load generator's core).",
        "Ratios written `0.95 (0.90–1.01)` are the median and the range of per-round ratios: in the "
        "small, 64 KiB body, split, mirror and 50 ms shadow workloads every gateway (and every config of one "
        "gateway) runs at once and each round gives each one a slice of load in turn, so each "
        "round's ratio compares measurements taken seconds apart. Rates and latencies are medians "
        "over the slices.",
        "\"Paired `loadtest --compare`\" verdicts judge two servers of the same cell (rollgate against "
        "nginx, a config against the same gateway's baseline) in alternating 250 ms slices of one "
        "closed-loop run (64 connections, 10 s; 20 s for the 50 ms shadow), the order alternating "
        "run by run: `×median (min–max)` over the runs of B's throughput, CPU per request or p99 "
        "over A's. They spread far less than the 1 s wrk rounds.",
    ]

    if r.has("small"):
        cells = []
        for t in TARGETS:
            rps, cpu = r.med("small", t, "rps_plain"), r.med("small", t, "cpu_us_plain")
            if t == "direct":
                cells.append(f"{k(rps)} rps (upstream {f(cpu)} µs CPU/req)")
                continue
            base = "direct" if t == "nginx" else "nginx"
            vs = pr(r.paired("small", t, "rps_plain", "rps_plain", base))
            cell = f"{k(rps)} rps, {f(cpu)} µs CPU/req (×{vs} {base} rps"
            if t != "nginx":
                cell += f", ×{pr(r.paired('small', t, 'cpu_us_plain', 'cpu_us_plain', 'nginx'))} nginx CPU"
            cells.append(cell + ")" + r.pair("small", t, "", vs=" nginx"))
        rows.append(["small requests saturated, 64 connections", *cells])

    def added(wl, label, unit_ms=False):
        cells = []
        b50, b99 = r.med(wl, "direct", "p50"), r.med(wl, "direct", "p99")
        for t in TARGETS:
            p50, p99 = r.med(wl, t, "p50"), r.med(wl, t, "p99")
            if t == "direct":
                cells.append(f"{f(p50, '{:.0f}')} / {f(p99, '{:.0f}')} µs base")
            elif p50 is None or b50 is None:
                cells.append("n/a")
            else:
                cells.append(f"{p50 - b50:+.0f} / {p99 - b99:+.0f} µs")
        rows.append([label, *cells])

    if r.has("onecon"):
        added("onecon", "one connection, added p50 / p99 (wrk -c1 --latency)")
    if r.has("rate5k"):
        note = r.text("rate5k", "note", "text")
        if note:
            rows.append(["fixed 5k req/s, added p50 / p99", note, "", "", ""])
        elif r.has_metric("rate5k", "added_p99"):
            cells = []
            for t in TARGETS:
                if t == "direct":
                    b50, b99 = r.med("rate5k", t, "p50"), r.med("rate5k", t, "p99")
                    cells.append(f"{f(b50, '{:.0f}')} / {f(b99, '{:.0f}')} µs base")
                    continue
                a50, a99 = r.med("rate5k", t, "added_p50"), r.med("rate5k", t, "added_p99")
                lo, hi = r.range("rate5k", t, "added_p99")
                cells.append(
                    "n/a" if a50 is None else
                    f"{a50:+.0f} / {a99:+.0f} µs (p99 runs {lo:+.0f} to {hi:+.0f})"
                )
            d99 = r.spread("rate5k", "rollgate", "pair_dp99_vs_nginx")
            if d99 is not None:
                d50 = r.spread("rate5k", "rollgate", "pair_dp50_vs_nginx")
                cells[-1] += (
                    f"; paired with nginx ({r.runs('rate5k', 'rollgate', 'pair_dp99_vs_nginx')} runs of "
                    f"`--compare NGINX ROLLGATE`): p50 {d50[0]:+.0f} ({d50[1]:+.0f} to {d50[2]:+.0f}), "
                    f"p99 {d99[0]:+.0f} ({d99[1]:+.0f} to {d99[2]:+.0f}) µs vs nginx's"
                )
            rows.append([
                "fixed 5k req/s, added p50 / p99 (`loadtest --rate --compare`: direct and "
                "through the gateway in alternating 1 s slices; median of runs)", *cells])
        else:
            added("rate5k", "fixed 5k req/s, added p50 / p99 (rollgate loadtest --rate)")

    for wl, title in (
        ("body64k", "64 KiB bodies, 64 connections"),
        ("body64klast", "64 KiB bodies, `model` after the prompt"),
    ):
        if not r.has(wl):
            continue
        cells = []
        sliced = r.has_metric(wl, "rps_plain")
        sfx = "_plain" if sliced else ""
        n = r.med(wl, "nginx", "rps" + sfx)
        for t in TARGETS:
            rps = r.med(wl, t, "rps" + sfx)
            cpu = r.med(wl, t, "cpu_us" + sfx)
            if t in ("direct", "nginx"):
                extra = ""
            elif sliced:
                extra = f" (×{pr(r.paired(wl, t, 'rps_plain', 'rps_plain', 'nginx'))} nginx)"
            else:
                extra = f" (×{f(ratio(rps, n), '{:.2f}')} nginx)"
            cells.append(f"{k(rps)} rps, {f(cpu)} µs CPU/req{extra}" + r.pair(wl, t, "", vs=" nginx"))
        rows.append([title, *cells])

    if r.has("split"):
        cells = ["–"]
        for t in TARGETS[1:]:
            plain = r.med("split", t, "rps_plain")
            cell = pr(r.paired("split", t, "rps_split", "rps_plain"))
            if t == "nginx":
                cell += f" (weights), {pr(r.paired('split', t, 'rps_split_clients', 'rps_plain'))} (`split_clients`)"
            elif t == "rollgate":
                cell += " (weight 10%)"
            cells.append(cell + f"; unsplit {k(plain)} rps" + r.pair("split", t, "_split", cpu=False))
        rows.append(["90/10 split, rps vs the same gateway unsplit", *cells])

    if r.has("mirror"):
        cells = ["–"]
        for t in TARGETS[1:]:
            if t == "haproxy":
                cells.append("no mirroring")
                continue
            cell = (
                f"{pr(r.paired('mirror', t, 'rps_mirror10', 'rps_split'))} / "
                f"{pr(r.paired('mirror', t, 'rps_mirror100', 'rps_split'))}"
            )
            if t == "nginx":
                cell += " (no real sampling: every request makes the mirror subrequest)"
            if t == "rollgate":
                cell += (
                    f"; candidate connections reused {f(r.med('mirror', t, 'candidate_reuse_pct_mirror10'), '{:.2f}')} % / "
                    f"{f(r.med('mirror', t, 'candidate_reuse_pct_mirror100'), '{:.2f}')} %; mirrors dropped "
                    f"{f(r.med('mirror', t, 'shadow_dropped_mirror10'), '{:.0f}')} / {f(r.med('mirror', t, 'shadow_dropped_mirror100'), '{:.0f}')}"
                )
                m10, m100 = r.spread("mirror", t, "pair_rps_mirror10"), r.spread("mirror", t, "pair_rps_mirror100")
                if m10 or m100:
                    cell += (f"; paired `loadtest --compare` ({r.runs('mirror', t, 'pair_rps_mirror10')} runs): "
                             f"{pr(m10)} / {pr(m100)}")
            cells.append(cell)
        rows.append(["split + 10 % / 100 % mirror, rps vs split", *cells])

    if r.has("shadow50"):
        cells = ["–"]
        for t in TARGETS[1:]:
            if t == "haproxy":
                cells.append("no mirroring")
                continue
            p = r.paired("shadow50", t, "p99_mirroronly", "p99_plain")
            q = r.paired("shadow50", t, "rps_mirroronly", "rps_plain")
            cells.append(
                f"primary p99 ×{pr(p)} (medians {f(r.med('shadow50', t, 'p99_plain'), '{:.0f}')} → "
                f"{f(r.med('shadow50', t, 'p99_mirroronly'), '{:.0f}')} µs), throughput ×{pr(q, '{:.3f}')}"
                + ("" if t != "rollgate" else "; every request mirrored (`max_inflight: 1024`)")
            )
        rows.append(["100 % mirror to a shadow that adds 50 ms, vs no mirror", *cells])
        if r.med("shadow50", "rollgate", "rate_p99_plain") is not None:
            cells = ["–"]
            for t in TARGETS[1:]:
                if t == "haproxy":
                    cells.append("no mirroring")
                    continue
                a, b = r.med("shadow50", t, "rate_p99_plain"), r.med("shadow50", t, "rate_p99_mirroronly")
                cells.append(
                    f"primary p99 ×{f(ratio(b, a), '{:.2f}')} ({f(a, '{:.0f}')} → {f(b, '{:.0f}')} µs, "
                    f"medians of {r.runs('shadow50', t, 'rate_p99_plain')} runs)"
                )
            rows.append(["the same 100 % mirror at a fixed 5k req/s (`loadtest --rate`, not saturated)", *cells])
        # rollgate's defaults (bound and `saturated_sample`), and since session 20 the bound alone.
        for mode, sfx, label in (
            ("mirrordefault", "", "the same with rollgate's defaults (64 mirrors in flight; 1 % mirrored "
             "while a worker is saturated)"),
            ("mirrorbound", "_bound", "the same with the in-flight bound alone (64; `saturated_sample: 100%`)"),
        ):
            if r.med("shadow50", "rollgate", f"rps_{mode}") is None:
                continue
            t = "rollgate"
            # Before session 20 `mirrordefault` had no shedding (there was none): the bound alone.
            if mode == "mirrordefault" and r.med("shadow50", t, "saturated_per_s") is None:
                label = "the same with rollgate's default in-flight bound (64 mirrors)"
            # pair_* since session 9 (`run`'s paired), cmp_* in earlier result files.
            new = r.has_metric("shadow50", f"pair_p99_{mode}")
            p99m, rpsm = (f"pair_p99_{mode}", f"pair_rps_{mode}") if new else ("cmp_p99_ratio", "cmp_rps_ratio")

            def cmp(m, fmt="{:.2f}"):
                return pr(r.spread("shadow50", t, m), fmt)

            p = r.paired("shadow50", t, f"p99_{mode}", "p99_plain")
            q = r.paired("shadow50", t, f"rps_{mode}", "rps_plain")
            shed = r.med("shadow50", t, f"saturated_per_s{sfx}")
            answered = r.med("shadow50", t, f"pair_mirrored_{mode}")
            rows.append([
                label,
                "–", "–", "–",
                f"primary p99 ×{pr(p)} (medians {f(r.med('shadow50', t, 'p99_plain'), '{:.0f}')} → "
                f"{f(r.med('shadow50', t, f'p99_{mode}'), '{:.0f}')} µs), throughput ×{pr(q, '{:.3f}')}; "
                f"{f(r.med('shadow50', t, f'mirrored_per_s{sfx}'), '{:.0f}')} mirrors/s answered, "
                f"{f(r.med('shadow50', t, f'dropped_per_s{sfx}'), '{:.0f}')}/s dropped and counted"
                + ("" if not shed else f" ({f(shed, '{:.0f}')}/s of them `saturated`)")
                + (
                    ""
                    if r.med("shadow50", t, p99m) is None
                    else f"; `loadtest --compare` in 250 ms slices: p99 ×{cmp(p99m)}, "
                    f"throughput ×{cmp(rpsm, '{:.3f}')} (median, range of "
                    f"{r.runs('shadow50', t, p99m)} runs)"
                    + ("" if answered is None else f", ≈ {answered:.0f} mirrors/s answered while loaded")
                ),
            ])

    if r.has("sse"):
        cells = []
        b99 = r.med("sse", "direct", "p99")
        for t in TARGETS:
            p50, p99 = r.med("sse", t, "p50"), r.med("sse", t, "p99")
            batched = f"{r.total('sse', t, 'batched'):.0f}/{r.total('sse', t, 'streams'):.0f}"
            if t == "direct":
                cells.append(f"p50 {f(p50, '{:.0f}')} / p99 {f(p99, '{:.0f}')} µs base; batched {batched}")
            elif p99 is None or b99 is None:
                cells.append("n/a")
            else:
                cells.append(f"{(p99 - b99) / 1000:+.2f} ms p99; batched {batched}")
        rows.append(["SSE, added time to first event p99 (first event held 20 ms apart)", *cells])

    if r.has("streams") or r.has("idle"):
        cells = ["–"]
        for t in TARGETS[1:]:
            s, i = r.med("streams", t, "kb_per_stream"), r.med("idle", t, "kb_per_conn")
            cells.append(f"{f(s)} KB / {f(i, '{:.2f}')} KB")
        rows.append(["memory (RSS delta) per active stream (2,000) / per idle keep-alive connection (8,000)", *cells])

    if r.has("reload"):
        cells = ["–"]
        for t in TARGETS[1:]:
            failed, reloads = r.med("reload", t, "failed"), r.med("reload", t, "reloads")
            cell = f"{f(failed, '{:.0f}')} failed over {f(reloads, '{:.0f}')} reloads"
            if failed is not None and reloads:
                cell += f" ({failed / reloads:.1f} per reload)"
            if t == "rollgate":
                cell += f"; applied reloads (cumulative counter) {f(r.med('reload', t, 'applied'), '{:.0f}')}"
            cells.append(cell)
        rows.append(["config reload every second under load (wrk -c64)", *cells])

    if r.has("compare"):
        note = r.text("compare", "note", "text")
        p50, p99 = r.med("compare", "rollgate", "p50"), r.med("compare", "rollgate", "p99")
        cell = note or ("n/a" if p50 is None else f"{p50:+.0f} / {p99:+.0f} µs")
        rows.append(["one connection, added p50 / p99 (`rollgate loadtest --compare`, alternating slices)", "", "", "", cell])

    out = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    print("\n".join(out))
    print()
    for n in notes:
        print(n)


def find_quantiles(obj, path=""):
    """Yields (path, p50, p99) for every dict holding p50 and p99 keys."""
    if isinstance(obj, dict):
        keys = {str(k).lower(): v for k, v in obj.items()}
        p50 = next((v for k2, v in keys.items() if k2.startswith("p50")), None)
        p99 = next((v for k2, v in keys.items() if k2.startswith("p99") and not k2.startswith("p99.") and "9_9" not in k2 and k2 != "p999"), None)
        unit = next((k2[3:] for k2 in keys if k2.startswith("p50")), "")
        if isinstance(p50, (int, float)) and isinstance(p99, (int, float)):
            yield path, p50, p99, unit
        for k2, v in obj.items():
            yield from find_quantiles(v, f"{path}.{k2}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from find_quantiles(v, f"{path}[{i}]")


def loadtest_json(path):
    """`p50_us p99_us` of total latency from `rollgate loadtest --json` (the first target)."""
    doc = json.load(open(path))
    total = doc["targets"][0]["latency_us"]["total"]
    print(f"{total['p50']:.1f} {total['p99']:.1f}")


def loadtest_compare(path):
    """`added_p50_us added_p99_us ratio` from `rollgate loadtest --compare --json`."""
    doc = json.load(open(path))
    added = doc["compare"]["added_us"]["total"]
    print(f"{added['p50']:.1f} {added['p99']:.1f} {doc['compare']['throughput_ratio']:.3f}")


def loadtest_pair(path, order, ticks_a, ticks_b):
    """`rps_ratio p99_ratio cpu_ratio` of B over A from a `--compare --json` run whose first
    target was A (`ab`) or B (`ba`), with each gateway's CPU ticks over the run."""
    doc = json.load(open(path))
    first, second = doc["targets"]
    a, b = (first, second) if order == "ab" else (second, first)
    pa, pb = a["latency_us"]["total"]["p99"], b["latency_us"]["total"]["p99"]
    ta, tb = float(ticks_a), float(ticks_b)
    cpu = (tb / b["requests"]) / (ta / a["requests"]) if ta and a["requests"] and b["requests"] else math.nan
    da = a["latency_us"]["total"]["p50"]
    db = b["latency_us"]["total"]["p50"]
    print(f"{b['rate'] / a['rate']:.4f} {pb / pa if pa else math.nan:.4f} {cpu:.4f} {db - da:.1f} {pb - pa:.1f}")


if __name__ == "__main__":
    if sys.argv[1] == "loadtest-pair":
        loadtest_pair(*sys.argv[2:6])
    else:
        {"table": table, "loadtest-json": loadtest_json, "loadtest-compare": loadtest_compare}[sys.argv[1]](sys.argv[2])
