"""Config loading: good configs load, bad ones fail naming the file, the key and the fix."""
from __future__ import annotations

from pathlib import Path

import pytest

from autoresearch.apps.tasks import guess_config
from autoresearch.core.config import (
    ConfigError,
    editable_files,
    is_editable,
    load_config,
)
from tests.conftest import TOY_CONFIG, make_task


def test_toy_config_loads(toy_task: Path):
    cfg = load_config(toy_task)
    assert cfg.name == "toy" and cfg.run == "python train.py"
    assert editable_files(cfg) == ["train.py"] and cfg.metric.name == "score"
    assert cfg.budget_s == 5 and cfg.timeout_s == 30
    assert cfg.search["WIDTH"].integer and not cfg.search["X"].integer
    assert is_editable(cfg, "train.py") and not is_editable(cfg, "prepare.py")
    assert not is_editable(cfg, "../train.py") and not is_editable(cfg, "/etc/passwd")


@pytest.mark.parametrize("change, key, fix", [
    (('direction = "minimize"', 'direction = "down"'), "metric.direction", "minimize"),
    (('editable = ["train.py"]', 'editable = ["nope.py"]'), "task.editable", "exist"),
    (('run = "python train.py"\n', ""), "task.run", "run ="),
    (("timeout = 30", "timeout = 1"), "budget.timeout", "above the budget"),
    (("seconds = 5", "seconds = \"five\""), "budget.seconds", "number"),
    (("seconds = 5", "seconds = nan"), "budget.seconds", "finite"),
    (("[search]", "[serch]"), "serch", "one of"),
    (("X = { low = -5.0, high = 10.0 }", "X = { low = 10.0, high = 1.0 }"), "search.X", "widen"),
    (('frozen = ["prepare.py"]', 'frozen = ["train.py"]'), "task.frozen", "either editable or frozen"),
    (("direction = \"minimize\"", "direction = \"minimize\"\nsource = \"regex\""), "metric.pattern", "capturing"),
    (("[task]", "[task\n"), "-", "syntax"),
])
def test_bad_config_names_file_key_and_fix(tmp_path: Path, change, key, fix):
    task = make_task(tmp_path / "bad", config=TOY_CONFIG.replace(*change), git=False)
    with pytest.raises(ConfigError) as err:
        load_config(task)
    assert err.value.key == key
    assert str(task / "autoresearch.toml") in str(err.value)
    assert fix in err.value.fix or fix in str(err.value)


def test_missing_config_says_run_init(tmp_path: Path):
    with pytest.raises(ConfigError, match="autoresearch init"):
        load_config(tmp_path)


def test_init_guesses_an_original_autoresearch_repo(tmp_path: Path):
    """A repository shaped like karpathy/autoresearch works after `init` with no edits."""
    root = tmp_path / "orig"
    root.mkdir()
    (root / "prepare.py").write_text("MAX_SEQ_LEN = 2048\nTIME_BUDGET = 300\n")
    (root / "train.py").write_text('DEPTH = 8\nprint("---")\nprint(f"val_bpb:          {0.99:.6f}")\n')
    (root / "program.md").write_text("# autoresearch\n")
    (root / "autoresearch.toml").write_text(guess_config(root))
    cfg = load_config(root)
    assert cfg.editable == ["train.py"] and cfg.frozen == ["prepare.py"] and cfg.setup == "python prepare.py"
    assert cfg.metric.name == "val_bpb" and cfg.metric.direction == "minimize"
    assert cfg.budget_s == 300 and cfg.program == "program.md"


def test_init_guesses_another_metric(tmp_path: Path):
    root = tmp_path / "other"
    root.mkdir()
    (root / "main.py").write_text('print(f"accuracy: {0.9}")\n')
    (root / "autoresearch.toml").write_text(guess_config(root))
    cfg = load_config(root)
    assert cfg.metric.name == "accuracy" and cfg.metric.direction == "maximize" and cfg.editable == ["main.py"]
