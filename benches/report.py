#!/usr/bin/env python3
"""Helpers for benches/run.sh (standard library only).

    report.py criterion CRITERION_DIR BENCH_STDOUT   -> RESULT lines for the schedulers
    report.py l4 L4_COMPARE_OUTPUT WRK_LOG           -> RESULT lines for l4_compare.sh
    report.py table RESULTS_TSV MACHINE_TXT          -> the Markdown table

RESULT line: RESULT<TAB>figure<TAB>side<TAB>value<TAB>unit, one per round or trial. A side
starting with "ours" is lb; any other side is a peer. value may be "failed".
"""

import json
import os
import re
import statistics
import sys

# Units where a larger number is better; everything else (times, bytes, CPU) is lower-better.
HIGHER_BETTER = {"Gbit/s", "req/s"}

# Which peer each of our variants is compared with, when a figure has several of each.
PAIRS = [
    ("ours splice-auto", "haproxy splice-auto"),
    ("ours splice-always", "haproxy splice-req+resp"),
    ("ours copy", "haproxy plain"),
    ("ours splice-auto", "direct"),
    ("ours busy-polling", "haproxy busy-polling"),
    ("ours busy-polling", "direct"),
]

# Rows that cannot be measured on this machine: (after figure, ours side, peer, reason).
UNMEASURABLE = [
    (
        "health: backend death to Down",
        "keepalived TCP_CHECK",
        "not measurable here: keepalived's checker needs the kernel's IPVS, absent on this "
        "machine (it exits FATAL at start)",
    ),
]

L4_SIDE = {
    "direct": "direct",
    "lb-splice": "ours splice-auto",
    "lb-splice-always": "ours splice-always",
    "lb-copy": "ours copy",
    "hap-plain": "haproxy plain",
    "hap-splice-auto": "haproxy splice-auto",
    "hap-splice-rr": "haproxy splice-req+resp",
}
# l4_compare.sh section 1b: splice-auto with busy polling, each proxy alone on CPU 1.
L4_BUSY_SIDE = {"direct": "direct", "lb-busy": "ours busy-polling", "hap-busy": "haproxy busy-polling"}
L4_MODE = {"keepalive": "keep-alive", "close": "new connection per request"}


def result(figure, side, value, unit):
    print(f"RESULT\t{figure}\t{side}\t{value}\t{unit}")


def criterion(directory, stdout_path):
    """Per-sample time of every criterion benchmark (ns per pick, ms per Maglev build)."""
    found = []
    for root, _dirs, files in os.walk(directory):
        if os.path.basename(root) != "new" or "sample.json" not in files:
            continue
        with open(os.path.join(root, "benchmark.json")) as f:
            bench = json.load(f)
        with open(os.path.join(root, "sample.json")) as f:
            sample = json.load(f)
        per_iter = [t / i for t, i in zip(sample["times"], sample["iters"]) if i]
        found.append((bench["group_id"], bench.get("function_id"), bench.get("value_str"), per_iter))
    for group, function, value, per_iter in sorted(found, key=lambda b: (b[0], str(b[1]), int(b[2] or 0))):
        if group.startswith("pick/"):
            figure = f"scheduler pick: {group[5:]}, {value} backends"
            for v in per_iter:
                result(figure, "ours", f"{v:.2f}", "ns")
        elif group == "mh_build":
            figure = f"Maglev table build (M 65537), {value} backends, criterion"
            side = "ours" if function == "ours" else "maglev crate"
            for v in per_iter:
                result(figure, side, f"{v / 1e6:.4f}", "ms")
    # pick.rs's own summary: "build, N backends  x ms  y ms  r x" and
    # "lookup, N backends   x ns   y ns  r x" (medians of 5).
    with open(stdout_path, errors="replace") as f:
        for line in f:
            m = re.match(r"\s*build, (\d+) backends\s+([\d.]+) ms\s+([\d.]+) ms", line)
            if m:
                figure = f"Maglev table build (M 65537), {m.group(1)} backends"
                result(figure, "ours", m.group(2), "ms")
                result(figure, "maglev crate", m.group(3), "ms")
            m = re.match(r"\s*lookup, (\d+) backends\s+([\d.]+) ns\s+([\d.]+) ns", line)
            if m:
                figure = f"Maglev lookup, {m.group(1)} backends"
                result(figure, "ours", m.group(2), "ns")
                result(figure, "maglev crate", m.group(3), "ns")


def l4(output_path, wrk_log_path):
    """RESULT lines from l4_compare.sh's per-round lines, p50 from the wrk shim's log."""
    p50s = []
    if os.path.exists(wrk_log_path):
        with open(wrk_log_path, errors="replace") as f:
            for line in f:
                if line.startswith("WRKRUN"):
                    p50s.append(None)
                m = re.match(r"\s+50%\s+(\S+)", line)
                if m and p50s:
                    p50s[-1] = to_ms(m.group(1))
    runs = 0
    with open(output_path, errors="replace") as f:
        lines = f.readlines()
    wrk_lines = sum(1 for l in lines if re.match(r"\s+(keepalive|close)\s+round \d+ ", l))
    if wrk_lines != len(p50s):
        print(f"# p50: {len(p50s)} wrk runs logged for {wrk_lines} results; p50 left out", file=sys.stderr)
        p50s = []
    busy_figure = "L4 bulk throughput, 1 stream, busy polling"
    for line in lines:
        h = re.match(r"== 1b\..*pipes of (\d+) bytes", line)
        if h:
            pipe = int(h.group(1))
            if pipe % (1 << 20) == 0:
                pipe = f"{pipe >> 20} MiB"
            elif pipe % (1 << 10) == 0:
                pipe = f"{pipe >> 10} KiB"
            else:
                pipe = f"{pipe}-byte"
            busy_figure = f"L4 bulk throughput, 1 stream, busy polling (splice-auto, {pipe} pipes, each proxy alone)"
            continue
        m = re.match(r"\s+busy round (\d+) (\S+)\s+(\S+) Gbit/s", line)
        if m and m.group(2) in L4_BUSY_SIDE:
            result(busy_figure, L4_BUSY_SIDE[m.group(2)], m.group(3), "Gbit/s")
            continue
        m = re.match(r"\s+round (\d+) (\S+)\s+(\S+) Gbit/s", line)
        if m and m.group(2) in L4_SIDE:
            result("L4 bulk throughput, 1 stream", L4_SIDE[m.group(2)], m.group(3), "Gbit/s")
            # Since c9d2d2c the script also prints the proxy's CPU per GiB of that transfer.
            c = re.search(r"proxy CPU\s+(\d+(?:\.\d+)?) ms/GiB", line)
            if c and m.group(2) != "direct":
                result("L4 proxy CPU per GiB, bulk rounds of l4_compare.sh", L4_SIDE[m.group(2)], c.group(1), "ms/GiB")
            continue
        m = re.match(r"\s+(keepalive|close)\s+round (\d+) (\S+)\s+(\S+) req/s\s+p99\s+(\S+) ms(.*)", line)
        if m and m.group(3) in L4_SIDE:
            mode, side = L4_MODE[m.group(1)], L4_SIDE[m.group(3)]
            result(f"L4 1 KiB {mode}: req/s", side, m.group(4), "req/s")
            if p50s:
                result(f"L4 1 KiB {mode}: p50 latency", side, p50s[runs], "ms")
            result(f"L4 1 KiB {mode}: p99 latency", side, m.group(5), "ms")
            if m.group(6).strip():
                print(f"NOTE\tL4 1 KiB {mode}\t{side}\twrk round {m.group(2)}: {m.group(6).strip()}")
            runs += 1


def to_ms(v):
    n = float(re.match(r"[\d.]+", v).group(0))
    if v.endswith("us"):
        return n / 1000
    if v.endswith("ms"):
        return n
    if v.endswith("s"):
        return n * 1000
    return n


def fmt(v):
    if v is None:
        return "—"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}".replace(",", " ")
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def spread(vals):
    if not vals:
        return "—"
    return f"{fmt(min(vals))} / {fmt(statistics.median(vals))} / {fmt(max(vals))}"


def table(res_path, machine_path):
    figures = {}  # figure -> {"unit": u, "sides": {side: [values]}, "failed": {side: n}}
    notes, failures = [], []
    with open(res_path, errors="replace") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if parts[0] == "NOTE" and len(parts) == 4:
                notes.append(f"{parts[1]}, {parts[2]}: {parts[3]}")
                continue
            if parts[0] == "FAILED":
                failures.append(" ".join(parts[1:]))
                continue
            if parts[0] != "RESULT" or len(parts) != 5:
                continue
            _, figure, side, value, unit = parts
            fig = figures.setdefault(figure, {"unit": unit, "sides": {}, "failed": {}})
            fig["sides"].setdefault(side, [])
            try:
                fig["sides"][side].append(float(value))
            except ValueError:
                fig["failed"][side] = fig["failed"].get(side, 0) + 1
    with open(machine_path) as f:
        machine = f.read().strip()

    out = []
    out.append("## lb against its peers\n")
    out.append("```")
    out.append(machine)
    out.append("```\n")
    out.append(
        "ours / peer: medians; min / med / max over the rounds (failover: trials; criterion: "
        "the samples of one run); n = rounds that gave a figure. verdict compares medians: "
        "**BEHIND** wherever our median is worse than the peer's, \"(overlap)\" when the two "
        "min–max ranges overlap (the difference is within this run's noise). \"direct\" (no "
        "proxy) is a reference, not a competitor (verdict \"reference\"): a ceiling for bulk and "
        "keep-alive; with a new connection per request the proxy, on its own CPU, can beat it.\n"
    )
    out.append(
        "| figure | better | ours | ours median | peer | peer median | ours/peer | "
        "ours min / med / max | peer min / med / max | n | verdict |"
    )
    out.append("|---|---|---|---:|---|---:|---:|---|---|---|---|")
    behind = 0
    for figure, fig in figures.items():
        unit, sides = fig["unit"], fig["sides"]
        higher = unit in HIGHER_BETTER
        better = "higher" if higher else "lower"
        ours = [s for s in sides if s.startswith("ours")]
        peers = [s for s in sides if not s.startswith("ours")]
        rows = [(o, p) for o, p in PAIRS if o in sides and p in sides]
        if not rows:
            rows = [(o, p) for o in ours for p in peers] or [(o, None) for o in ours]
        for o, p in rows:
            ov, pv = sides[o], sides.get(p, []) if p else []
            om = statistics.median(ov) if ov else None
            pm = statistics.median(pv) if pv else None
            n = f"{len(ov)}" + (f"/{len(pv)}" if p else "")
            fo, fp = fig["failed"].get(o, 0), fig["failed"].get(p, 0) if p else 0
            if fo or fp:
                n += f" ({fo}+{fp} failed)"
            ratio, verdict = "—", ""
            if om is not None and pm:
                r = om / pm
                ratio = f"{r:.2f}×" if r >= 0.1 else f"{r:.3f}×"
                worse = om < pm if higher else om > pm
                if p == "direct":
                    verdict = "reference"
                elif om == pm:
                    verdict = "par"
                elif worse:
                    verdict = "**BEHIND**"
                    behind += 1
                else:
                    verdict = "ahead"
                if verdict != "reference" and len(ov) > 1 and len(pv) > 1:
                    if min(ov) <= max(pv) and min(pv) <= max(ov):
                        verdict += " (overlap)"
            elif p and not pv:
                verdict = "peer gave no figure"
            elif om is None:
                verdict = "**no figure**"
            out.append(
                f"| {figure} | {better} ({unit}) | {o} | {fmt(om)} | {p or '—'} | {fmt(pm)} | "
                f"{ratio} | {spread(ov)} | {spread(pv)} | {n} | {verdict} |"
            )
        for after, peer, reason in UNMEASURABLE:
            if figure.startswith(after):
                out.append(f"| {figure} | — | ours | — | {peer} | — | — | — | — | — | {reason} |")
    out.append("")
    out.append(f"Rows where we are behind: {behind}.")
    if notes:
        out.append("")
        out.append("Notes:")
        out.extend(f"- {n}" for n in notes)
    if failures:
        out.append("")
        out.append("Pieces that failed (see their logs): " + "; ".join(failures) + ".")
    missing = [
        name
        for name, prefix in [
            ("schedulers", "scheduler pick"),
            ("L4", "L4 bulk"),
            ("L4 CPU", "L4 CPU"),
            ("L4 RSS", "L4 RSS"),
            ("HTTP", "http "),
            ("failover", "failover"),
            ("health", "health"),
            ("bfd", "bfd"),
        ]
        if not any(f.startswith(prefix) for f in figures)
    ]
    if missing:
        out.append("")
        out.append("No figures at all from: " + ", ".join(missing) + ".")
    print("\n".join(out))


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "criterion" and len(sys.argv) == 4:
        criterion(sys.argv[2], sys.argv[3])
    elif cmd == "l4" and len(sys.argv) == 4:
        l4(sys.argv[2], sys.argv[3])
    elif cmd == "table" and len(sys.argv) == 4:
        table(sys.argv[2], sys.argv[3])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
