"""`autoresearch init` on repositories shaped like real ones (written here, never copied): what it
guesses, what it warns about, and `--probe`, which runs the guess once through the real harness."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from autoresearch.agents.source_constants import find_constants
from autoresearch.apps import init_guess
from autoresearch.core.config import load_config


def write(root: Path, files: dict[str, str], git: bool = False) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    if git:
        subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
        subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)
        subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "t"],
                       check=True)
    return root


def init(root: Path, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "autoresearch", "init", str(root), "--json", *args],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


# Shaped like karpathy/autoresearch: uv project, a prepare.py caching under ~/.cache, a train.py whose
# batch size must divide the total batch (an assert), an MFU constant, a kernel fetched at import.
AUTORESEARCH = {
    "pyproject.toml": '[project]\nname = "x"\nversion = "0"\ndependencies = []\n',
    "uv.lock": "version = 1\n",
    "program.md": "# research\n",
    "prepare.py": '''\
        import os, requests
        TIME_BUDGET = 300
        CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "shapedresearch")
        ''',
    "train.py": '''\
        from kernels import get_kernel
        fa3 = get_kernel("some/kernel")
        MATRIX_LR = 0.04
        DEPTH = 8
        DEVICE_BATCH_SIZE = 128
        H100_BF16_PEAK_FLOPS = 989.5e12
        MAX_SEQ_LEN = 2048
        tokens_per_fwdbwd = DEVICE_BATCH_SIZE * MAX_SEQ_LEN
        assert 2 ** 19 % tokens_per_fwdbwd == 0
        print("vocabulary:")
        print(f"val_bpb:          {0.99:.6f}")
        print(f"mfu_percent:      {1.0:.2f}")
        ''',
}


def test_init_on_an_autoresearch_shaped_repo(tmp_path: Path) -> None:
    data = init(write(tmp_path, AUTORESEARCH))
    g = {k: v["value"] for k, v in data["guesses"].items()}
    assert g["task.editable"] == ["train.py"] and g["task.frozen"] == ["prepare.py"] and g["task.run"] == "python train.py"
    assert g["metric.name"] == "val_bpb" and g["environment.kind"] == "uv" and g["setup.network"] is True
    assert g["setup.outputs"] == ["~/.cache/shapedresearch"] and g["budget.seconds"] == 300
    assert data["search"]["DEVICE_BATCH_SIZE"] == {"choices": [64, 128, 256]}  # only these pass the assert
    assert "H100_BF16_PEAK_FLOPS" in data["left_out"] and "H100_BF16_PEAK_FLOPS" not in data["search"]
    assert any("may download at run time (`get_kernel(`)" in w for w in data["warnings"])
    cfg = load_config(tmp_path)  # what init wrote loads as it is
    assert cfg.environment.kind == "uv" and cfg.setup_access.outputs == ("~/.cache/shapedresearch",)
    assert cfg.search["DEVICE_BATCH_SIZE"].choices == (64, 128, 256)


def test_a_heading_line_is_no_metric_and_a_missing_metric_is_warned(tmp_path: Path) -> None:
    data = init(write(tmp_path, {"train.py": 'print("vocabulary:")\nprint("loss is low")\n'}))
    assert data["guesses"]["metric.name"]["value"] != "vocabulary"
    assert any("no print of a `name: value` line" in w for w in data["warnings"])


def test_a_benchmark_is_frozen_and_runs_its_module(tmp_path: Path) -> None:
    """A non-ML repository: the scorer imports the editable module; it is not the editable file."""
    write(tmp_path, {"bench.py": "import time, fastsort\nt = time.perf_counter()\nfastsort.sort(list(range(9)))\n"
                                 'print(f"seconds: {time.perf_counter() - t:.6f}")\n',
                     "fastsort.py": "CUTOFF = 16\ndef sort(x):\n    return sorted(x)\n"})
    g = {k: v["value"] for k, v in init(tmp_path)["guesses"].items()}
    assert g["task.editable"] == ["fastsort.py"] and g["task.frozen"] == ["bench.py"]
    assert g["task.run"] == "python bench.py" and g["metric.name"] == "seconds" and g["metric.direction"] == "minimize"


NANOGPT = {
    "train.py": '''\
        out_dir = 'out'
        learning_rate = 6e-4
        max_iters = 600000
        device = 'cuda'
        compile = True
        exec(open('configurator.py').read())
        print(f"step 1: train loss {1.0:.4f}, val loss {1.5:.4f}")
        ''',
    "configurator.py": "pass\n",
    "model.py": "class GPT:\n    def __init__(self, config):\n        assert config.n_embd % config.n_head == 0\n",
    "config/train_gpt2.py": "dataset = 'openwebtext'\nmax_iters = 600000\n",
    "config/train_shakespeare_char.py": "dataset = 'shakespeare_char'\nlearning_rate = 1e-3\nmax_iters = 5000\n"
                                        "n_layer = 6\nn_head = 4\nn_embd = 128\n",
    "data/shakespeare_char/prepare.py": "import requests\nprint('url https://example.invalid')\n",
    "data/shakespeare_char/input.txt": "hello\n",
}


def test_init_on_a_nanogpt_shaped_repo(tmp_path: Path) -> None:
    data = init(write(tmp_path, NANOGPT))
    g = {k: v["value"] for k, v in data["guesses"].items()}
    assert g["task.editable"] == ["train.py", "model.py", "config/train_shakespeare_char.py"]
    assert g["task.run"].startswith("python train.py config/train_shakespeare_char.py")
    assert g["task.setup"] == "python data/shakespeare_char/prepare.py"
    assert g["setup.outputs"] == ["data/shakespeare_char"] and g["setup.inputs"] == ["data/shakespeare_char/input.txt"]
    assert g["metric.name"] == "val_loss" and g["metric.source"] == "regex"
    assert set(data["search"]) == {"learning_rate", "n_layer", "n_head", "n_embd"}  # lowercase settings
    assert data["search"]["n_head"] == {"choices": [2, 4, 8]}  # model.py asserts n_embd % n_head == 0
    assert data["search"]["n_embd"] == {"choices": [64, 128, 256]}
    assert any("max_iters" in w for w in data["warnings"])


def test_lowercase_globals_count_in_config_files_only() -> None:
    assert set(find_constants("learning_rate = 1e-3\nn_layer = 6\nname = 'x'\n")) == {"learning_rate", "n_layer"}
    assert find_constants("learning_rate = 1e-3\nprint(learning_rate)\n") == {}


def test_assert_choices() -> None:
    assert init_guess.assert_choices("BATCH = 64\nassert BATCH in (32, 64, 128)\n") == {"BATCH": [32, 64, 128]}


def test_probe_runs_the_guess_once_and_shows_what_it_printed(tmp_path: Path) -> None:
    tmp_path = tmp_path / "repo"  # (pytest's own folder is private to root; the sandbox user must enter it)
    tmp_path.mkdir()
    write(tmp_path, {"bench.py": "import fastsort\nprint('header:')\nprint(f'ops_per_s: {fastsort.N * 2}')\n"
                                 "print(f'seconds: {0.5}')\n",
                     "fastsort.py": "N = 21\n"}, git=True)
    data = init(tmp_path, "--probe", "--probe-budget", "3")
    assert data["probe"]["status"] == "ok" and data["probe"]["metrics"]["ops_per_s"] == 42
    refs = subprocess.run(["git", "-C", str(tmp_path), "for-each-ref", "--format=%(refname)"], capture_output=True, check=True,
                          text=True).stdout
    assert "init-probe" not in refs  # the probe leaves no research behind
    data = init(tmp_path, "--force", "--metric", "ops_per_s", "--direction", "maximize")
    cfg = load_config(tmp_path)
    assert cfg.metric.name == "ops_per_s" and cfg.metric.direction == "maximize"


def test_a_timing_script_is_the_benchmark_and_its_package_is_editable(tmp_path: Path) -> None:
    """Shaped like karpathy/minbpe: train.py only times the package it imports."""
    write(tmp_path, {"train.py": "import time\nfrom fastbpe import Trainer\nt0 = time.time()\nTrainer().train()\n"
                                 'print(f"Training took {time.time() - t0:.2f} seconds")\n',
                     "fastbpe/__init__.py": "from .core import Trainer\n",
                     "fastbpe/core.py": "class Trainer:\n    def train(self):\n        return sum(range(1000))\n",
                     "requirements.txt": "regex\n"})
    data = init(tmp_path)
    g = {k: v["value"] for k, v in data["guesses"].items()}
    assert g["task.editable"] == ["fastbpe/*.py"] and g["task.frozen"] == ["train.py"] and g["task.run"] == "python train.py"
    assert g["metric.name"] == "seconds" and g["metric.source"] == "regex" and g["metric.direction"] == "minimize"
    assert g["environment.kind"] == "venv" and g["environment.requirements"] == "requirements.txt"
    cfg = load_config(tmp_path)
    assert cfg.metric.pattern == r"([-+0-9.eE]+) seconds\b"


ARGPARSE_SCRIPT = '''\
import argparse
def main():
    p = argparse.ArgumentParser()
    p.add_argument("--learning-rate", type=float, default=3e-4)
    p.add_argument("--depth", type=int, default=4, help="layers")
    p.add_argument("--name", default="run")
    args = p.parse_args()
    print(f"lr: {args.learning_rate}")
    print(f"depth: {args.depth}")
main()
'''


def test_argparse_defaults_are_settings_rewritten_in_place(tmp_path: Path) -> None:
    from autoresearch.agents.source_constants import set_constants

    consts = find_constants(ARGPARSE_SCRIPT)
    assert {n: c.value for n, c in consts.items()} == {"learning_rate": 3e-4, "depth": 4}
    edited = set_constants(ARGPARSE_SCRIPT, {"learning_rate": 0.01, "depth": 6})
    assert 'default=0.01)' in edited and 'default=6, help="layers"' in edited
    (tmp_path / "train.py").write_text(edited)
    out = subprocess.run([sys.executable, str(tmp_path / "train.py")], capture_output=True, text=True,
                         check=True).stdout
    assert "lr: 0.01" in out and "depth: 6" in out
    twice = ARGPARSE_SCRIPT.replace('p.add_argument("--name", default="run")', 'p.add_argument("--depth", default=5)')
    assert "depth" not in find_constants(twice)  # which default wins is argparse's business: left alone
