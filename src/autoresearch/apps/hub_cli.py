"""`autoresearch hub serve`, `autoresearch worker join`, `autoresearch verifier join`: the hub's
command line (registered from cli.py by `add_parsers`). Needs `pip install "autoresearch[hub]"`."""
from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

from autoresearch.core.loopback import is_loopback_host

DEFAULT_PORT = 8470
VERIFIER_TOKEN_ENV = "AUTORESEARCH_VERIFIER_TOKEN"


def add_parsers(sub) -> None:
    c = sub.add_parser("hub", help="run a research hub: volunteers' claims accepted only after re-execution")
    hub_sub = c.add_subparsers(metavar="ACTION")
    s = hub_sub.add_parser("serve", help="serve one task's hub (API under /api/v1, page at /)")
    s.add_argument("task", help="the task repository")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback; put a TLS proxy in front)")
    s.add_argument("--port", type=int, default=DEFAULT_PORT)
    s.add_argument("--db", help="database URL (default: sqlite in <task>/.autoresearch/hub/hub.db; "
                   "postgresql+psycopg://USER@HOST/DB for production)")
    s.add_argument("--verifiers", type=int, default=0, help="verifiers the hub runs itself (default 0)")
    s.add_argument("--lease-seconds", type=float, help="how long a verifier holds a job (default: from the timeout)")
    s.add_argument("--json", action="store_true", help="print the start-up facts as one JSON line")
    s.set_defaults(func=cmd_hub_serve)

    j = _join_parser(sub, "worker", "contribute to a hub: research locally, submit each keep as a claim",
                     "join the hub at URL")
    j.add_argument("--agent", action="append", help="agent name(s), as for `autoresearch run` (default: search)")
    j.add_argument("--name", default="worker", help="the name shown on the leaderboard")
    j.add_argument("--max-experiments", type=int, help="per round (a round ends when the chain advances)")
    j.add_argument("--rounds", type=int, help="stop after this many rounds")
    j.add_argument("--budget", type=float, help="seconds per experiment (default: the task's)")
    j.add_argument("--evidence-runs", type=int, default=None, metavar="N",
                   help="runs of each kept commit sent with its claim: more of your runs, fewer of the "
                        "verifier's (default 4)")
    j.add_argument("--json", action="store_true", help="one JSON event per line")
    j.set_defaults(func=cmd_worker_join)

    j = _join_parser(sub, "verifier", "verify claims for a hub on this trusted machine",
                     "take verification jobs from the hub at URL")
    j.add_argument("--token-file", help=f"the verifier token (default: ${VERIFIER_TOKEN_ENV})")
    j.add_argument("--max-jobs", type=int)
    j.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    j.set_defaults(func=cmd_verifier_join)


def _join_parser(sub, role: str, text: str, join_text: str):
    """`autoresearch ROLE join URL [--dir D]`: the parser of `join`, for its own options."""
    parent = sub.add_parser(role, help=text)
    j = parent.add_subparsers(metavar="ACTION").add_parser("join", help=join_text)
    j.add_argument("url")
    j.add_argument("--dir", help=f"where the task is cloned (default: $AUTORESEARCH_HOME/hub-{role})")
    return j


def cmd_hub_serve(args) -> int:
    from autoresearch.hub.server import hub_state, serve, verifier_token

    if not is_loopback_host(args.host):
        print(f"warning: binding {args.host}: the hub is reachable from other machines; serve it only behind a "
              "TLS-terminating proxy (docs/hub.md)", file=sys.stderr)
    url = f"http://{'127.0.0.1' if not is_loopback_host(args.host) else args.host}:{args.port}"

    def ready(hub) -> None:
        token_path = hub_state(hub.config) / "verifier.token"
        facts = {"event": "serving", "url": url, "task": str(hub.config.root), "height": hub.head_height,
                 "verifier_token_file": str(token_path)}
        print(json.dumps(facts) if args.json else f"hub for {hub.config.name} on {url} (chain height "
              f"{hub.head_height}); verifier token in {token_path}", flush=True)
        for i in range(args.verifiers):
            folder = hub_state(hub.config) / "verifiers" / str(i)
            threading.Thread(target=_local_verifier, args=(url, verifier_token(hub), folder), daemon=True).start()

    serve(Path(args.task).resolve(), args.host, args.port, args.db, args.lease_seconds, on_ready=ready)
    return 0


def _local_verifier(url: str, token: str, folder: Path) -> None:
    import time

    from autoresearch.hub.client import HubRefused
    from autoresearch.hub.verifier import Verifier

    for _ in range(50):  # the server starts listening just after on_ready
        try:
            v = Verifier(url, token, folder)
            v.open()
            break
        except HubRefused:
            time.sleep(0.2)
    else:
        return
    try:
        v.run()
    finally:
        v.close()


def cmd_verifier_join(args) -> int:
    from autoresearch.apps.tasks import research_home
    from autoresearch.hub.verifier import Verifier

    token = Path(args.token_file).read_text().strip() if args.token_file else os.environ.get(VERIFIER_TOKEN_ENV)
    if not token:
        from autoresearch.hub.client import HubRefused
        raise HubRefused(401, "a verifier needs the hub's verifier token",
                         f"--token-file <hub task>/.autoresearch/hub/verifier.token, or set ${VERIFIER_TOKEN_ENV}")
    v = Verifier(args.url, token, Path(args.dir) if args.dir else research_home() / "hub-verifier")
    v.open()
    try:
        done = v.run(args.max_jobs)
    except KeyboardInterrupt:
        done = v.jobs_done
    finally:
        v.close()
    print(json.dumps({"event": "done", "jobs": done}) if args.json else f"done: {done} verification job(s)")
    return 0


def cmd_worker_join(args) -> int:
    from autoresearch.agents import make_agent
    from autoresearch.apps.live_view import PlainView
    from autoresearch.apps.tasks import research_home
    from autoresearch.hub.worker import EVIDENCE_RUNS, HubWorker
    from autoresearch.research.scheduler import Limits

    names = args.agent or ["search"]
    worker = HubWorker(args.url, Path(args.dir) if args.dir else research_home() / "hub-worker",
                       lambda config: [make_agent(n, config) for n in names], name=args.name,
                       observer=PlainView(as_json=args.json), budget_s=args.budget,
                       evidence_runs=EVIDENCE_RUNS if args.evidence_runs is None else args.evidence_runs)
    worker.open()
    rounds = 0
    try:
        while args.rounds is None or rounds < args.rounds:
            worker.run_round(Limits(args.max_experiments))
            rounds += 1
    except KeyboardInterrupt:
        pass
    finally:
        worker.close()
    summary = {"event": "done", "rounds": rounds, "claims": worker.claims}
    print(json.dumps(summary) if args.json else f"done: {rounds} round(s), {len(worker.claims)} claim(s)")
    return 0
