"""Two builds side by side under load: this working tree against a git ref, or two
gunicorn settings, on one seeded database, wrk alternating between them.

    BASE=HEAD make bench-ab                                   # uncommitted changes vs HEAD
    BASE=main~3 SCENARIOS=progress,heartbeat ROUNDS=8 make bench-ab
    BASE= THIS_ARGS="--threads 2" make bench-ab               # one build, two gunicorn settings
    BASE= THIS_SERVER_CMD="granian ... --port {port} taskmgmt.wsgi:application" make bench-ab
                                                              # gunicorn against another server

Why: this machine's speed swings by a third from one minute to the next, so two
`make bench-load` runs, one per build, compare the minutes they ran in as much as
the builds. Here both servers are up at once (each idle while the other is measured)
and every round runs each scenario on both, in alternating order; the medians of
many short runs, and the count of rounds each side won, say whether a change moved
anything under load.

`BASE` is checked out into a temporary git worktree (removed at the end) and served
from there with this tree's virtualenv; empty: both sides serve this tree.
`BASE_ARGS` and `THIS_ARGS` are extra gunicorn arguments for each side;
`BASE_SERVER_CMD` and `THIS_SERVER_CMD` replace a side's gunicorn with another server
command for the same app (`{port}` is replaced; relative paths from the side's tree),
which gets a metrics directory of its own as gunicorn.conf.py makes one. The database,
seed, wrk scripts and scenarios are bench-load's (run.py; `DURATION` defaults to 8 s
here); `ROUNDS` (default 6) rounds. Prints one line per run, a table of medians and
each side's peak RSS (summed over its processes, as bench-load's).
"""

import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("DURATION", "8")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # bench-load's harness, configured by the environment above

ROUNDS = int(os.environ.get("ROUNDS", 6))
BASE = os.environ.get("BASE", "HEAD")
WANTED = os.environ.get("SCENARIOS", "healthz,progress,heartbeat,shift_status")


class SideServer(run.Server):
    """bench-load's gunicorn, from `root`, on its own port, with extra arguments; or
    `server_cmd`, another server for the same app."""

    def __init__(
        self, env: dict, log_path: Path, root: Path, args: list[str], server_cmd: str = ""
    ):
        self.port = run.free_port()
        env = {**env, "GUNICORN_BIND": f"127.0.0.1:{self.port}"}
        if server_cmd:  # the app's metrics need one, as under gunicorn (taskmgmt/metrics.py)
            env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="taskmgmt-ab-metrics-")
        super().__init__(env, log_path)
        self.root, self.args, self.server_cmd = root, args, server_cmd

    def command(self) -> list[str]:
        if self.server_cmd:
            return shlex.split(self.server_cmd.format(port=self.port))
        return [run.GUNICORN, "-c", "gunicorn.conf.py", *self.args]

    def stop(self) -> None:
        super().stop()
        if self.server_cmd:
            shutil.rmtree(self.env["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)

    def use(self) -> None:
        """Point bench-load's requests (run.BASE_URL) at this server."""
        run.BASE_URL = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.use()
        root, run.ROOT = run.ROOT, self.root  # gunicorn runs in (and imports from) root
        try:
            super().start()
        finally:
            run.ROOT = root


def worktree(ref: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix="taskmgmt-ab-")) / "base"
    subprocess.run(
        ["git", "worktree", "add", "--detach", "-q", str(path), ref], cwd=run.ROOT, check=True
    )
    return path


def main() -> int:
    wanted = {"healthz"} | {name.strip() for name in WANTED.split(",") if name.strip()}
    if unknown := wanted - set(run.ALL_SCENARIOS):
        sys.exit(f"unknown scenarios {sorted(unknown)}; known: {', '.join(run.ALL_SCENARIOS)}")
    env = run.server_env()
    workdir = Path(tempfile.mkdtemp(prefix="taskmgmt-ab-"))
    claims = (run.DURATION + 2) * ROUNDS * 2 * 1200 if wanted & {"claim", "claim_payload"} else 0
    data = run.prepare(env, workdir, claims)
    base_root = worktree(BASE) if BASE else run.ROOT
    sides = {
        f"base ({BASE or 'this tree'})": SideServer(
            env,
            workdir / "base.log",
            base_root,
            shlex.split(os.environ.get("BASE_ARGS", "")),
            os.environ.get("BASE_SERVER_CMD", ""),
        ),
        "this tree": SideServer(
            env,
            workdir / "this.log",
            run.ROOT,
            shlex.split(os.environ.get("THIS_ARGS", "")),
            os.environ.get("THIS_SERVER_CMD", ""),
        ),
    }
    results = {name: {} for name in sides}
    try:
        for server in sides.values():
            server.start()
        stores = run.store_pids()
        chosen = [s for s in run.scenarios(data, workdir, wanted) if not s.after_payloads]
        for server in sides.values():
            server.use()
            run.warm_up(chosen)
        shift_offset, names = 0, list(sides)
        for round_number in range(1, ROUNDS + 1):
            order = names if round_number % 2 else names[::-1]
            for scenario in chosen:
                for name in order:
                    sides[name].use()
                    result = run.run_wrk(scenario, sides[name], shift_offset, stores)
                    if scenario.name == "shift_status":
                        shift_offset += result.requests + run.CONNECTIONS
                    results[name].setdefault(scenario.name, []).append(result)
                    run.log(
                        f"round {round_number} {scenario.name} {name}: {result.rps:.0f} req/s, "
                        f"p99 {result.p99_ms:.1f} ms, server CPU {result.app_cpu_ms:.2f} ms/req, "
                        f"MariaDB {result.db_cpu_ms:.2f}, non-2xx {result.non2xx}"
                    )
    finally:
        for server in sides.values():
            if server.process:  # started
                server.stop()
        if BASE:
            subprocess.run(["git", "worktree", "remove", "--force", str(base_root)], cwd=run.ROOT)
    print(report(chosen, results))
    print()
    for name, server in sides.items():
        rss, pss = server.peak_rss / 1024, server.peak_pss / 1024
        print(f"peak RSS {name}: {rss:.0f} MiB (PSS {pss:.0f})")
    return 0


def report(chosen, results: dict) -> str:
    (base, base_runs), (_, this_runs) = results.items()
    lines = [
        f"{run.CONNECTIONS} connections, {ROUNDS} alternating rounds x {run.DURATION} s, "
        "medians; won: rounds in which this tree served more",
        "",
        f"| scenario | {base} req/s | this tree req/s | ratio | won | "
        "server CPU ms/req (base → this) | MariaDB ms/req (base → this) |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for scenario in chosen:
        before, after = base_runs[scenario.name], this_runs[scenario.name]
        old, new = (statistics.median(r.rps for r in runs) for runs in (before, after))
        won = sum(a.rps > b.rps for a, b in zip(after, before, strict=True))
        cpu = [statistics.median(r.app_cpu_ms for r in runs) for runs in (before, after)]
        db = [statistics.median(r.db_cpu_ms for r in runs) for runs in (before, after)]
        lines.append(
            f"| {scenario.name} | {old:.0f} | {new:.0f} | {new / old:.2f}x | {won}/{len(after)} "
            f"| {cpu[0]:.2f} → {cpu[1]:.2f} | {db[0]:.2f} → {db[1]:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
