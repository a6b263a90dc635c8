"""What the offline search knows about a hyperparameter from its name: a default range, and the
settings a task would surely reject.

Invariant: `default_param` gives every constant a range that holds its own value and only values
the constant can mean (a beta stays in (0, 1), a dropout in [0, 1), a weight decay >= 0, an int
stays an int and a power of two stays a power of two), and `violation` refuses a setting that
breaks a shape rule (a head count must divide the width it splits) or grows the memory-heavy
constants more than MAX_MEMORY_GROWTH x at once; `coupled_learning_rates` moves the learning rates
with a batch size changed without them (the square-root rule). Names are matched as words of the
constant (`N_HEAD` has the words N and HEAD), so `LR` matches `MIN_LR` but not `CLR_X`.
"""
from __future__ import annotations

import math
from typing import Any

from autoresearch.core.config import SearchParam

Number = int | float

# Constants that are not hyperparameters: seeds, logging, evaluation speed, hardware facts, switches.
NOT_SEARCHED = frozenset({"SEED", "LOG", "EVERY", "PRINT", "VERBOSE", "DEBUG", "EVAL", "FLOPS", "COMPILE",
                          "DEVICE", "WORKERS", "PORT", "SAVE", "CHECKPOINT"})
BETA_WORDS = frozenset({"BETA", "BETA1", "BETA2", "MOMENTUM", "EMA", "DECAY_RATE"})
DROPOUT_WORDS = frozenset({"DROPOUT", "DROP", "PDROP"})
WEIGHT_DECAY_WORDS = (("WEIGHT", "DECAY"), ("WD",))
FRACTION_WORDS = frozenset({"FRAC", "FRACTION", "RATIO", "WARMUP", "PCT", "SMOOTHING", "PROB"})
LR_WORDS = (("LR",), ("LEARNING", "RATE"))
HEAD_WORDS = frozenset({"HEAD", "HEADS"})
BATCH_WORDS = frozenset({"BATCH", "BATCH_SIZE", "BSZ"})
MICRO_BATCH_WORDS = frozenset({"EVAL", "DEVICE", "MICRO", "PER"})  # under gradient accumulation: not the step's batch
KV_WORDS = frozenset({"KV", "KEY", "GROUPS", "GROUP"})
WIDTH_WORDS = frozenset({"EMBD", "EMBED", "EMBEDDING", "WIDTH", "DIM", "D_MODEL", "MODEL", "HIDDEN"})
# Constants whose growth multiplies the memory a run needs (activations, parameters, batch).
MEMORY_WORDS = frozenset({"BATCH", "EMBD", "EMBED", "EMBEDDING", "WIDTH", "DIM", "MODEL", "HIDDEN", "DEPTH",
                          "LAYER", "LAYERS", "SEQ", "CONTEXT", "CTX", "BLOCK", "MLP", "HEAD", "HEADS"})
MEMORY_EXCLUDE = frozenset({"EVAL", "LR", "FRAC", "DROPOUT"})  # e.g. EVAL_BATCH_SIZE, MLP_DROPOUT
MAX_MEMORY_GROWTH = 2.0  # one proposal may at most double the product of the memory-heavy constants
LOG_SPAN = 10.0  # a positive float without a known meaning: log-uniform in [v/10, 10v]
POW2_SPAN = 4  # a power-of-two int: the powers of two in [v/4, 4v]...
POW2_MIN = 8  # ...from 8 up (a depth of 2 or 4 is a count, not a size)
BETA_MAX = 0.9999  # the largest beta searched by default (1 - 1e-4)


def words(name: str) -> set[str]:
    parts = name.split("_")
    return set(parts) | {"_".join(parts[i:i + 2]) for i in range(len(parts) - 1)}


def _has(name: str, *groups: tuple[str, ...]) -> bool:
    w = words(name)
    return any(all(part in w for part in group) for group in groups)


def is_memory_heavy(name: str) -> bool:
    w = words(name)
    return bool(w & MEMORY_WORDS) and not w & MEMORY_EXCLUDE


def default_param(name: str, value: Any, kind: str) -> SearchParam | None:
    """The default range of a constant with this name and (baseline) value, or None when it is not
    searched by default (a seed or a logging knob; zero or negative values without a known meaning)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    w = words(name)
    if w & NOT_SEARCHED:
        return None
    if kind == "int":
        return _int_param(name, int(value))
    v = float(value)
    if w & BETA_WORDS and 0 < v < 1:
        gap = 1 - v  # searched on the scale of 1 - beta: 0.9 and 0.99 are as far apart as 0.99 and 0.999
        return SearchParam(name, max(0.5, 1 - gap * LOG_SPAN), min(BETA_MAX, 1 - gap / LOG_SPAN))
    if w & DROPOUT_WORDS and 0 <= v < 1:
        return SearchParam(name, 0.0, min(0.9, max(0.5, 3 * v)))
    if _has(name, *WEIGHT_DECAY_WORDS) and v >= 0:
        return SearchParam(name, 0.0, max(0.1, LOG_SPAN * v))
    if w & FRACTION_WORDS and 0 <= v < 1:
        return SearchParam(name, 0.0, min(1.0, max(0.3, 3 * v)))
    if v <= 0:
        return None
    if _has(name, *LR_WORDS):
        return SearchParam(name, v / LOG_SPAN, v * LOG_SPAN, log=True)
    high = v * LOG_SPAN if v >= 1 else min(1.0, v * LOG_SPAN)  # below 1: probably a fraction
    return SearchParam(name, v / LOG_SPAN, high, log=True)


def _int_param(name: str, v: int) -> SearchParam | None:
    if v <= 0:
        return None
    if v >= POW2_MIN and v & (v - 1) == 0:  # a power of two stays one: 8 -> 2, 4, 8, 16, 32
        low, high = max(1, v // POW2_SPAN), v * POW2_SPAN
        return SearchParam(name, choices=tuple(2 ** i for i in range(low.bit_length() - 1, high.bit_length())))
    grain = math.gcd(v, 64)
    if grain >= 8:  # a width like 96 stays a multiple of its grain (32): 64, 96, ..., 192
        return SearchParam(name, choices=tuple(range(max(grain, (v // 2) // grain * grain), 2 * v + 1, grain)))
    return SearchParam(name, float(max(1, v // 2)), float(v * 2), integer=True)


def violation(new: dict[str, Number], current: dict[str, Number]) -> str | None:
    """Why the task would surely reject the setting `new` (proposed on top of `current`), or None."""
    heads = [n for n in new if words(n) & HEAD_WORDS and not words(n) & KV_WORDS]
    kv_heads = [n for n in new if words(n) & HEAD_WORDS and words(n) & KV_WORDS]
    widths = [n for n in new if words(n) & WIDTH_WORDS and not words(n) & (HEAD_WORDS | {"MLP", "RATIO"})]
    for h in heads:
        for w in widths:
            if new[h] and new[w] % new[h]:
                return f"{h}={new[h]} does not divide {w}={new[w]}"
        for kv in kv_heads:
            if new[kv] and new[h] % new[kv]:
                return f"{kv}={new[kv]} does not divide {h}={new[h]}"
    growth = memory_growth(new, current)
    if growth > MAX_MEMORY_GROWTH:
        return f"the memory-heavy constants grow {growth:.1f}x at once (at most {MAX_MEMORY_GROWTH:g}x)"
    return None


def memory_growth(new: dict[str, Number], current: dict[str, Number]) -> float:
    """The product of new/current over the memory-heavy constants (1.0: no growth)."""
    growth = 1.0
    for name, value in new.items():
        old = current.get(name)
        if is_memory_heavy(name) and old and old > 0 and value > 0:
            growth *= value / old
    return growth


def dominates(new: dict[str, Number], failed: dict[str, Any]) -> bool:
    """Whether `new` needs at least the memory of a setting that broke a memory guard: every
    memory-heavy constant at least as large as there (and some memory-heavy constant present)."""
    names = [n for n in new if is_memory_heavy(n) and isinstance(failed.get(n), (int, float))]
    return bool(names) and all(new[n] >= failed[n] for n in names)


def coupled_learning_rates(new: dict[str, Number], current: dict[str, Number]) -> dict[str, float]:
    """The learning rates that move with a change of the batch size made without them: each scaled
    by the square root of the batch's ratio (the scaling rule of Adam-type optimizers), so that a
    larger batch is measured with the learning rate it needs rather than lost for want of it. Empty
    unless exactly one batch size changes and no learning rate does."""
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
    batches = [n for n in new if words(n) & BATCH_WORDS and not words(n) & MICRO_BATCH_WORDS
               and number(new[n]) and number(current.get(n)) and new[n] != current[n]]
    rates = [n for n in new if _has(n, *LR_WORDS) and not words(n) & FRACTION_WORDS and number(current.get(n))]
    if len(batches) != 1 or not rates or any(new[n] != current[n] for n in rates):
        return {}
    ratio = new[batches[0]] / current[batches[0]]
    return {n: current[n] * math.sqrt(ratio) for n in rates}
