"""Setup that persists ([setup]): outputs kept in the state folder and read-only in experiments,
git-ignored inputs linked into every worktree, network for the setup only when the config says so.
Everything runs through the real harness (git worktrees, bubblewrap where it works)."""
from __future__ import annotations

import socket
import subprocess
import textwrap
import threading
from pathlib import Path

import pytest

from autoresearch.core.config import ConfigError, load_config
from autoresearch.core.errors import ResearchError
from autoresearch.research.coordinator import Research
from autoresearch.run.execution import SetupError
from autoresearch.run.sandbox import sandbox_available
from tests.conftest import step
from tests.scripted import ScriptedAgent

# A repository shaped like nanoGPT: the data folder holds its own (tracked) prepare.py, which reads a
# git-ignored input.txt and writes train.bin and meta.pkl next to itself; train.py reads them.
PREPARE = textwrap.dedent('''\
    import os, pathlib, pickle
    here = os.path.dirname(__file__)
    text = open(os.path.join(here, "input.txt")).read()
    open(os.path.join(here, "train.bin"), "wb").write(text.encode() * 3)
    pickle.dump({"vocab_size": len(set(text))}, open(os.path.join(here, "meta.pkl"), "wb"))
    cache = pathlib.Path(os.path.expanduser("~/.cache/shaped"))
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "tokenizer.txt").write_text("abc")
    print("prepared")
''')
TRAIN = textwrap.dedent('''\
    import os, pickle
    data = open("data/shakespeare_char/train.bin", "rb").read()
    meta = pickle.load(open("data/shakespeare_char/meta.pkl", "rb"))
    tokenizer = open(os.path.expanduser("~/.cache/shaped/tokenizer.txt")).read()
    try:
        open("data/shakespeare_char/train.bin", "ab").write(b"x")
        writable = 1
    except OSError:
        writable = 0
    print(f"store_writable: {writable}")
    print(f"vocab: {meta['vocab_size']}")
    print(f"val_loss: {len(data) / 1000 + len(tokenizer)}")
''')
CONFIG = textwrap.dedent('''\
    [task]
    editable = ["train.py"]
    setup = "python data/shakespeare_char/prepare.py"
    run = "python train.py"

    [budget]
    seconds = 5
    timeout = 30

    [metric]
    name = "val_loss"

    [setup]
    outputs = ["data/shakespeare_char", "~/.cache/shaped"]
    inputs = ["data/shakespeare_char/input.txt"]
''')


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   capture_output=True)


def shaped_repo(root: Path, config: str = CONFIG, prepare: str = PREPARE) -> Path:
    (root / "data" / "shakespeare_char").mkdir(parents=True)
    (root / "data" / "shakespeare_char" / "prepare.py").write_text(prepare)
    (root / "train.py").write_text(TRAIN)
    (root / ".gitignore").write_text("input.txt\n*.bin\n*.pkl\n")
    (root / "autoresearch.toml").write_text(config)
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "nanoGPT-shaped task")
    (root / "data" / "shakespeare_char" / "input.txt").write_text("to be or not to be\n" * 50)  # ignored by git
    return root


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "home"
    folder.mkdir()
    monkeypatch.setenv("HOME", str(folder))
    return folder


def open_research(repo: Path, tag: str = "t") -> Research:
    r = Research(load_config(repo), ScriptedAgent([]), tag=tag)
    r.open()
    return r


def test_setup_outputs_persist_and_are_read_only_in_experiments(tmp_path: Path, home: Path) -> None:
    repo = shaped_repo(tmp_path / "shaped")
    r = open_research(repo)
    try:
        exp = step(r)
    finally:
        r.close()
    assert exp.status == "keep", exp.reason
    size = len(("to be or not to be\n" * 50).encode() * 3)
    assert exp.metrics["val_loss"] == pytest.approx(size / 1000 + 3)
    assert exp.metrics["vocab"] == len(set("to be or not to be\n"))
    store = repo / ".autoresearch" / "setup"
    assert (store / "repo" / "data" / "shakespeare_char" / "train.bin").stat().st_size == size
    assert (store / "home" / ".cache" / "shaped" / "tokenizer.txt").read_text() == "abc"
    if sandbox_available():
        assert exp.metrics["store_writable"] == 0  # experiments cannot change what every other one reads
        assert not (home / ".cache").exists()  # the setup's home output went to the store, not the real home
    assert not (repo / "data" / "shakespeare_char" / "train.bin").exists()  # the checkout is untouched
    assert "input.txt" not in subprocess.run(["git", "-C", str(repo), "status", "--short"], capture_output=True,
                                             text=True, check=True).stdout


def test_without_outputs_the_setup_writes_are_lost_as_before(tmp_path: Path, home: Path) -> None:
    """The failure the issue met on nanoGPT: without [setup] outputs, the baseline cannot find train.bin."""
    repo = shaped_repo(tmp_path / "shaped", CONFIG.replace('outputs = ["data/shakespeare_char", "~/.cache/shaped"]\n',
                                                           ""))
    r = open_research(repo)
    try:
        with pytest.raises(ResearchError, match=r"baseline .* did not produce a metric(.|\n)*train.bin"):
            step(r)
    finally:
        r.close()


def test_a_missing_input_fails_the_config(tmp_path: Path) -> None:
    repo = shaped_repo(tmp_path / "shaped")
    (repo / "data" / "shakespeare_char" / "input.txt").unlink()
    with pytest.raises(ConfigError, match=r"\[setup.inputs\] 'data/shakespeare_char/input.txt' is not a file"):
        load_config(repo)


def test_an_output_holding_code_fails_the_config(tmp_path: Path) -> None:
    repo = shaped_repo(tmp_path / "shaped", CONFIG.replace('"data/shakespeare_char", ', '".", '))
    with pytest.raises(ConfigError, match=r"setup.outputs"):
        load_config(repo)


def _listener() -> tuple[socket.socket, int]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    threading.Thread(target=lambda: [srv.accept()[0].close() for _ in range(4)], daemon=True).start()
    return srv, srv.getsockname()[1]


@pytest.mark.skipif(not sandbox_available(), reason="network isolation needs bubblewrap")
@pytest.mark.parametrize("network", [False, True])
def test_setup_network_only_when_the_config_says_so(tmp_path: Path, home: Path, network: bool) -> None:
    srv, port = _listener()
    try:
        reach = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=3); print('reached')\n"
        config = CONFIG.replace("[setup]\n", f"[setup]\nnetwork = {str(network).lower()}\n")
        repo = shaped_repo(tmp_path / "shaped", config, PREPARE + reach)
        (repo / "train.py").write_text(reach + TRAIN)
        git(repo, "commit", "-qam", "reach the host")
        r = open_research(repo) if network else None
        if r is None:
            with pytest.raises(SetupError, match="ConnectionRefusedError|Network is unreachable"):
                open_research(repo)
            return
        assert "reached" in (repo / ".autoresearch" / "logs" / "setup.log").read_text()
        try:  # the experiments still have no network
            with pytest.raises(ResearchError, match="ConnectionRefusedError|Network is unreachable"):
                step(r)
        finally:
            r.close()
    finally:
        srv.close()


def test_links_never_follow_a_symlinked_folder_out_of_the_worktree(tmp_path: Path) -> None:
    from autoresearch.run.workspace import Links

    outside = tmp_path / "outside" / "x"
    outside.mkdir(parents=True)
    (outside / "keep.txt").write_text("mine")
    worktree = tmp_path / "wt"
    worktree.mkdir()
    (worktree / "data").symlink_to(tmp_path / "outside")
    with pytest.raises(OSError, match="leads out of"):
        Links(outputs=(("data/x", str(tmp_path / "store")),)).apply(worktree)
    assert (outside / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("network", [False, True])
def test_a_setup_with_network_keeps_the_callers_tls_bundle(tmp_path: Path, home: Path, network: bool,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt")
    config = CONFIG.replace("[setup]\n", f"[setup]\nnetwork = {str(network).lower()}\n")
    prepare = PREPARE + "print('bundle:', os.environ.get('SSL_CERT_FILE'))\n"
    repo = shaped_repo(tmp_path / "shaped", config, prepare)
    open_research(repo).close()
    log = (repo / ".autoresearch" / "logs" / "setup.log").read_text()
    assert ("bundle: /etc/ssl/certs/ca-certificates.crt" in log) == network
