from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from autoresearch.core.config import MetricSpec
from autoresearch.core.metrics import (
    MAX_ABS_METRIC,
    MetricError,
    parse_summary,
    read_metrics,
    valid_metric,
)


def test_parse_summary_numbers_and_names():
    text = "\n".join([
        "step 10 | loss 3.2",           # not a summary line
        "val_bpb:          0.997900",
        "  train/loss: 1.5e-3",         # leading whitespace, slash, scientific
        "lr: 3E+04",
        "count: 42",
        "neg: -0.5",
        "frac: .25",
        "bad: nan",
        "big: inf",
        "small: -Infinity",
        "name: gpt-2",                  # not a number
        "time: 3.2s",                   # not a number
        "9lives: 1",                    # not a valid name
        "a.b-c: 7",
    ])
    v = parse_summary(text)
    assert v["val_bpb"] == 0.9979
    assert v["train/loss"] == 1.5e-3
    assert v["lr"] == 3e4
    assert v["count"] == 42.0 and isinstance(v["count"], float)
    assert v["neg"] == -0.5 and v["frac"] == 0.25
    assert math.isnan(v["bad"]) and v["big"] == math.inf and v["small"] == -math.inf
    assert v["a.b-c"] == 7
    for name in ("name", "time", "9lives", "step 10 | loss 3.2"):
        assert name not in v


def test_parse_summary_last_occurrence_wins_and_carriage_returns():
    assert parse_summary("loss: 3\nloss: 2\r\nprogress 10%\rloss: 1\nother: 5\n")["loss"] == 1.0


def test_line_source(tmp_path: Path):
    out = "val_bpb: 1.2\npeak_memory_mb: 300\nval_bpb: 1.1\n"
    m = read_metrics(out, MetricSpec("val_bpb"), tmp_path)
    assert m == {"val_bpb": 1.1, "peak_memory_mb": 300.0}


def test_line_source_missing(tmp_path: Path):
    with pytest.raises(MetricError, match="val_bpb"):
        read_metrics("loss: 1\nval_bpb = 2\n", MetricSpec("val_bpb"), tmp_path)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_line_source_not_finite(tmp_path: Path, value: str):
    with pytest.raises(MetricError, match="score"):
        read_metrics(f"score: 1.0\nscore: {value}\n", MetricSpec("score"), tmp_path)


def test_invalid_secondary_values_are_dropped(tmp_path: Path):
    m = read_metrics("score: 1\naux: nan\nbig: 1e13\nneg: -inf\nok: -1e12\n", MetricSpec("score"), tmp_path)
    assert m == {"score": 1.0, "ok": -1e12}


@pytest.mark.parametrize("value", ["1e300", "-1e13", "1.000001e12"])
def test_line_source_beyond_the_bound(tmp_path: Path, value: str):
    with pytest.raises(MetricError, match=r"score is .* beyond ±1e\+12"):
        read_metrics(f"score: {value}\n", MetricSpec("score"), tmp_path)
    assert valid_metric(MAX_ABS_METRIC) and valid_metric(-MAX_ABS_METRIC) and not valid_metric(float(value))


def test_regex_source_last_match(tmp_path: Path):
    spec = MetricSpec("acc", direction="maximize", source="regex", pattern=r"accuracy=([0-9.eE+-]+)")
    out = "epoch 1 accuracy=0.5\nepoch 2 accuracy=0.75\nloss: 0.3\nepoch 3 accuracy=8.5e-1 done\n"
    m = read_metrics(out, spec, tmp_path)
    assert m["acc"] == 0.85 and m["loss"] == 0.3


def test_regex_source_missing_and_nan(tmp_path: Path):
    spec = MetricSpec("acc", source="regex", pattern=r"accuracy=(\S+)")
    with pytest.raises(MetricError, match="matches nothing"):
        read_metrics("nothing here\n", spec, tmp_path)
    with pytest.raises(MetricError, match="not a number"):
        read_metrics("accuracy=oops\n", spec, tmp_path)
    with pytest.raises(MetricError, match="nan"):
        read_metrics("accuracy=nan\n", spec, tmp_path)


def test_json_source(tmp_path: Path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "metrics.json").write_text(json.dumps(
        {"loss": 0.5, "steps": 100, "ok": True, "name": "x", "eval": {"acc": 0.9, "f1": 0.8}}))
    m = read_metrics("tokens: 5\n", MetricSpec("loss", source="json", file="out/metrics.json"), tmp_path)
    assert m["loss"] == 0.5 and m["steps"] == 100 and m["tokens"] == 5
    assert "ok" not in m and "name" not in m
    nested = read_metrics("", MetricSpec("eval.acc", direction="maximize", source="json",
                                         file="out/metrics.json"), tmp_path)
    assert nested["eval.acc"] == 0.9 and nested["loss"] == 0.5


def test_json_source_errors(tmp_path: Path):
    spec = MetricSpec("loss", source="json", file="metrics.json")
    with pytest.raises(MetricError, match="did not write metrics.json"):
        read_metrics("loss: 1\n", spec, tmp_path)
    (tmp_path / "metrics.json").write_text("{not json")
    with pytest.raises(MetricError, match="cannot read"):
        read_metrics("", spec, tmp_path)
    (tmp_path / "metrics.json").write_text("[1, 2]")
    with pytest.raises(MetricError, match="not a JSON object"):
        read_metrics("", spec, tmp_path)
    (tmp_path / "metrics.json").write_text('{"acc": 1}')
    with pytest.raises(MetricError, match="no key 'loss'"):
        read_metrics("", spec, tmp_path)
    (tmp_path / "metrics.json").write_text('{"loss": NaN}')
    with pytest.raises(MetricError, match="nan"):
        read_metrics("", spec, tmp_path)
    (tmp_path / "metrics.json").write_text('{"loss": null}')
    with pytest.raises(MetricError, match="not a number"):
        read_metrics("", spec, tmp_path)


def test_json_source_outside_workdir(tmp_path: Path):
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "secret.json").write_text('{"loss": 1}')
    (work / "metrics.json").symlink_to(tmp_path / "secret.json")
    with pytest.raises(MetricError, match="symlink"):
        read_metrics("", MetricSpec("loss", source="json", file="metrics.json"), work)
    (work / "sub").symlink_to(tmp_path)  # a symlinked folder on the way is refused too
    with pytest.raises(MetricError, match="not a folder"):
        read_metrics("", MetricSpec("loss", source="json", file="sub/secret.json"), work)
    with pytest.raises(MetricError, match="not a path inside"):
        read_metrics("", MetricSpec("loss", source="json", file="../secret.json"), work)
