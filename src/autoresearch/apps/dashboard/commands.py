"""The `dashboard` and `report` commands; cli.py registers them with one call to `register`.

The web libraries are imported only when `dashboard` runs, so the rest of the command line works
without the `dashboard` extra installed (a missing one is reported with the extra to install).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from autoresearch.apps.tasks import task_root
from autoresearch.core.errors import AutoresearchError
from autoresearch.core.loopback import is_loopback_host

DEFAULT_PORT = 8765


class DashboardError(AutoresearchError):
    """A dashboard or report that cannot start: which task or option, and what to do."""


def register(sub) -> None:
    c = sub.add_parser("dashboard", help="a live web dashboard of research runs (127.0.0.1; read-only without "
                                         "the token it prints)")
    c.add_argument("tasks", nargs="*", metavar="TASK", help="task repositories or example names (default: .)")
    c.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free one)")
    c.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; anything else "
                                                        "exposes the research to the network)")
    c.add_argument("--tag", action="append", help="show only this research run (repeatable; default: all)")
    c.add_argument("--json", action="store_true", help="print the URL and token as one JSON line")
    c.set_defaults(func=cmd_dashboard)

    c = sub.add_parser("report", help="one self-contained HTML file (or Markdown) telling a research run's story")
    c.add_argument("task", nargs="?", default=".", help="task repository or example name (default: .)")
    c.add_argument("--tag", help="research run (default: the last one)")
    c.add_argument("--out", "-o", help="file to write (default: report.html, or report.md with --markdown)")
    c.add_argument("--markdown", action="store_true", help="Markdown for agents and READMEs instead of HTML")
    c.add_argument("--json", action="store_true", help="print what was written as JSON")
    c.set_defaults(func=cmd_report)


def open_tasks(names: list[str], tags: list[str] | None) -> list:
    from autoresearch.apps.dashboard.data import Task

    tasks = []
    for name in names or ["."]:
        root = task_root(name)
        if not root.is_dir():
            raise DashboardError(f"{root}: no such task folder\n  fix: give a task repository or an example name "
                                 "(`autoresearch examples`)")
        tasks.append(Task.open(root, tuple(tags or ())))
    return tasks


def cmd_dashboard(args) -> int:
    import uvicorn

    from autoresearch.apps.dashboard.app import create_app

    tasks = open_tasks(args.tasks, args.tag)
    app = create_app(tasks)
    warning = exposure_warning(args.host)
    if warning:
        print(warning, file=sys.stderr)
    sock = listen(args.host, args.port)
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{host}:{sock.getsockname()[1]}/"
    if args.json:
        print(json.dumps({"url": url, "token": app.state.token, "tasks": [str(t.root) for t in tasks]}), flush=True)
    else:
        print(f"dashboard: {url}  (tasks: {', '.join(t.name for t in tasks)})\n"
              f"write token: {app.state.token}\n  open {url}#token={app.state.token} to add ideas and pause or resume "
              "from the page", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    server.run(sockets=[sock])
    return 0


def exposure_warning(host: str) -> str | None:
    if is_loopback_host(host):
        return None
    return (f"warning: listening on {host}, beyond loopback: anyone who can reach this machine can read the research "
            "(diffs, logs, prompts); writes still need the token. Use --host 127.0.0.1 to keep it on this machine.")


def listen(host: str, port: int):
    """A listening socket, bound before uvicorn starts so the address printed is the one served (port 0: any)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it every request on a kept-alive connection waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise DashboardError(f"the dashboard cannot listen on {host}:{port}: {e.strerror or e}\n  fix: choose "
                             "another --port (0 picks a free one), or stop what uses this one") from None
    sock.listen(128)
    return sock


def cmd_report(args) -> int:
    from autoresearch.apps.report import build_report, render_html, render_markdown

    (task,) = open_tasks([args.task], None)
    tag = args.tag or task.default_tag()
    if tag is None or tag not in task.tags():
        known = ", ".join(task.tags()) or "none"
        raise DashboardError(f"{task.root}: no research run {tag or ''!r} to report on (known: {known})\n"
                             f"  fix: run one with `autoresearch run {args.task}`, or give --tag")
    story = build_report(task, tag)
    out = Path(args.out or ("report.md" if args.markdown else "report.html"))
    out.write_text(render_markdown(story) if args.markdown else render_html(story))
    if args.json:
        print(json.dumps({"out": str(out), "tag": tag, "experiments": story["summary"]["experiments"]}))
    else:
        print(f"wrote {out} ({out.stat().st_size // 1024 + 1} KB): {tag}, {story['summary']['experiments']} "
              "experiments")
    return 0
