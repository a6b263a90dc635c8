"""The patch gate: only editable text files, canonical paths, size caps, an actual change."""
from __future__ import annotations

import pytest

from autoresearch.core.config import load_config
from autoresearch.hub.patches import (
    MAX_FILES,
    PatchError,
    check_patch,
    commitment_digest,
    content_hash,
)
from tests.hub.conftest import hub_task


@pytest.fixture
def config(tmp_path):
    return load_config(hub_task(tmp_path / "task"))


BASE = {"train.py": "X = 5.0\n"}


def test_an_editable_text_change_passes_in_canonical_form(config):
    assert check_patch(config, BASE, {"./train.py": "X = 4.0\n"}) == {"train.py": "X = 4.0\n"}


@pytest.mark.parametrize("files, why", [
    ({}, "names no file"),
    ({"train.py": "X = 5.0\n"}, "changes nothing"),
    ({"prepare.py": "x"}, "frozen"),
    ({"program.md": "x"}, "not editable"),
    ({"../train.py": "x"}, "leaves the repository"),
    ({"/train.py": "x"}, "absolute"),
    ({"sub/.git/hooks/pre-commit": "x"}, ".git"),
    ({"train.py\n": "x"}, "control character"),
    ({"train.py": "a\x00b"}, "binary"),
    ({"train.py": "a\x1bb"}, "binary"),
    ({"train.py": "\ud800"}, "UTF-8"),
    ({"train.py": 5}, "string"),
    ({"train.py": "x", "./train.py": "y"}, "both name"),
    ({f"f{i}.py": "x" for i in range(MAX_FILES + 1)}, "at most"),
])
def test_refused_patches_say_why(config, files, why):
    with pytest.raises(PatchError, match=why.replace(".", r"\.")):
        check_patch(config, BASE, files)


def test_hashes_identify_content_and_commitments_bind_everything():
    assert content_hash({"a": "1", "b": "2"}) == content_hash({"b": "2", "a": "1"})
    assert content_hash({"a": "12"}) != content_hash({"a1": "2"})  # the path/content boundary counts
    d = commitment_digest("0" * 40, {"train.py": "x"}, "nonce-1")
    assert d != commitment_digest("0" * 40, {"train.py": "x"}, "nonce-2")
    assert d != commitment_digest("1" * 40, {"train.py": "x"}, "nonce-1")
    assert d != commitment_digest("0" * 40, {"train.py": "y"}, "nonce-1")
