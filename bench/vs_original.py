"""taskmgmt beside the original Node.js system, one sitting (`make bench-vs-original`).

    make bench-vs-original ORIGINAL_DIR=/tmp/original
    ROUNDS=1 DURATION=10 make bench-vs-original ORIGINAL_DIR=/tmp/original   # a quick look

1. `../shared/original-bench/side_by_side.sh` loads both systems with the same wrk
   harness: the two lists, a task's detail and shift-status, alternating rounds.
2. Right after, in the same sitting, `bench/load/run.py` measures the node's other
   hot paths on taskmgmt alone (the original has none): heartbeat, progress, claim.
3. One table: every figure, its ratio to the original's, and issue 23's targets
   (detail and shift-status >= 1.5x the original, lists >= 6x, claim >= 1.5x the
   original's shift-status, heartbeat and progress >= 3x it, every p99 < 100 ms,
   peak RSS no more than the original's), each met or not.

The original's code stays outside the repository (ORIGINAL_DIR); when it is not a
prepared copy, the Makefile prints how to make one and stops before this runs.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KIT = Path(os.environ.get("ORIGINAL_BENCH", ROOT.parent / "shared" / "original-bench")).resolve()
ROUNDS = int(os.environ.get("ROUNDS", 3))
DURATION = int(str(os.environ.get("DURATION", 20)).removesuffix("s"))
P99_MS = 100

# (ours, the original's figure it is compared with, at least this many times it)
TARGETS = [
    ("list_all", "list_all", 6),
    ("list_node_filter", "list_node_filter", 6),
    ("detail", "detail", 1.5),
    ("shift_status", "shift_status", 1.5),
    ("claim", "shift_status", 1.5),
    ("heartbeat", "shift_status", 3),
    ("progress", "shift_status", 3),
]
TITLES = {
    "list_all": "GET /api/tasks/all?limit=50",
    "list_node_filter": "GET /api/tasks/filter/pending?limit=50",
    "detail": "GET /api/tasks/{id}",
    "shift_status": "PUT /api/tasks/shift-status",
    "claim": "POST /api/tasks/claim",
    "heartbeat": "POST /api/nodes/heartbeat",
    "progress": "PUT /api/tasks/progress",
}


def medians(path: Path) -> dict:
    rows = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        rows.setdefault(row["name"], []).append(row)
    return {
        name: {
            "rps": statistics.median(r["rps"] for r in rs),
            "p99_ms": statistics.median(r["p99_ms"] for r in rs),
            "rss_mib": max(r.get("server_rss_max_kb", 0) for r in rs) / 1024,
        }
        for name, rs in rows.items()
    }


def node_paths(out: Path) -> dict:
    """heartbeat, progress and claim from bench/load (medians of ROUNDS), same sitting;
    and claim with 4 KiB payloads, which bench/load weighs against claim (issue 19)."""
    env = dict(os.environ, SCENARIOS="heartbeat,progress,claim,claim_payload", REPEAT=str(ROUNDS))
    env["DURATION"] = str(DURATION)
    before = set((ROOT / "bench" / "results").glob("load-*.json"))
    subprocess.run([sys.executable, "bench/load/run.py"], cwd=ROOT, env=env, check=True)
    (result,) = set((ROOT / "bench" / "results").glob("load-*.json")) - before
    (out / "node-paths.json").write_text(result.read_text())
    return {
        row["scenario"]: {
            "rps": row["rps"],
            "p99_ms": row["p99_ms"],
            "rss_mib": row["peak_rss_mib"],
        }
        for row in json.loads(result.read_text())["median"]
    }


def table(original: dict, ours: dict) -> list[str]:
    lines = [
        "| scenario | original | taskmgmt | ratio | target | |",
        "|---|---:|---:|---:|---|---|",
    ]
    for name, base, least in TARGETS:
        if name not in ours or base not in original:
            lines.append(f"| {TITLES[name]} | | | | ≥ {least}x | missing |")
            continue
        mine, theirs = ours[name], original[base]
        ratio = mine["rps"] / theirs["rps"]
        met = ratio >= least and mine["p99_ms"] < P99_MS
        against = "" if base == name else " the original's shift-status"
        shown_base = f"{theirs['rps']:,.0f}, p99 {theirs['p99_ms']:.0f} ms" if base == name else ""
        lines.append(
            f"| {TITLES[name]} | {shown_base} | {mine['rps']:,.0f}, p99 {mine['p99_ms']:.0f} ms "
            f"| {ratio:.2f}x | ≥ {least}x{against}, p99 < {P99_MS} | "
            f"{'met' if met else 'NOT met'} |"
        )
    rss_ours = max(row["rss_mib"] for row in ours.values())
    rss_theirs = max(row["rss_mib"] for row in original.values())
    lines.append(
        f"| server peak RSS | {rss_theirs:.0f} MiB | {rss_ours:.0f} MiB | | ≤ the original's | "
        f"{'met' if rss_ours <= rss_theirs else 'NOT met'} |"
    )
    return lines


def main() -> int:
    out = Path(tempfile.mkdtemp(prefix="taskmgmt-vs-original-"))
    env = dict(os.environ, OUT=str(out), ROUNDS=str(ROUNDS), DURATION=f"{DURATION}s")
    subprocess.run(["bash", str(KIT / "side_by_side.sh")], cwd=ROOT, env=env, check=True)
    original, ours = medians(out / "node.jsonl"), medians(out / "tm.jsonl")
    ours.update(node_paths(out))
    report = "\n".join(
        [
            f"\ntaskmgmt beside the original, one sitting: medians of {ROUNDS} round(s) of "
            f"{DURATION} s at 16 connections, unpinned; raw results in {out}",
            "",
            *table(original, ours),
        ]
    )
    print(report)
    (out / "table.md").write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
