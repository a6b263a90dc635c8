"""The edit format's parser on model replies as models write them: slips tolerated, bad edits explained."""
from __future__ import annotations

import json

import pytest

from autoresearch.agents.edits import (
    EditError,
    apply_block,
    apply_reply,
    parse_reply,
    reply_schema,
    resolve_path,
)

TRAIN = (
    "import os\n"
    "\n"
    "X = 5.0\n"
    "MAX_X = 5.0\n"
    "WIDTH = 3\n"
    "\n"
    "def score(x, width):\n"
    "    a = (x - 2.0) ** 2\n"
    "    return a + 0.1 * (width - 6) ** 2\n"
    "\n"
    "print(f\"score: {score(X, WIDTH):.6f}\")\n"
)
FILES = {"train.py": TRAIN}


def apply(text: str, files: dict[str, str] = FILES, **kw):
    return apply_reply(parse_reply(text, list(files)), files, **kw)


# -- replies that apply ---------------------------------------------------------------------------

CLEAN = """\
DESCRIPTION: move X to the optimum at 2
REASONING: score is quadratic in X with its minimum at 2.
NOTEBOOK: X=2 is optimal for the quadratic term.

train.py
<<<<<<< SEARCH
X = 5.0
=======
X = 2.0
>>>>>>> REPLACE
"""


def test_clean_reply_parses_sections_and_applies():
    reply = parse_reply(CLEAN, ["train.py"])
    assert reply.description == "move X to the optimum at 2"
    assert reply.reasoning == "score is quadratic in X with its minimum at 2."
    assert reply.notebook == "X=2 is optimal for the quadratic term."
    out = apply_reply(reply, FILES)
    assert out.ok
    # "X = 5.0" also occurs inside "MAX_X = 5.0": the whole-line match decides.
    assert out.edits["train.py"] == TRAIN.replace("X = 5.0\nMAX", "X = 2.0\nMAX")
    assert "MAX_X = 5.0" in out.edits["train.py"]


def test_fences_markdown_file_name_crlf_and_trailing_whitespace_are_tolerated():
    reply = ("Description: widen the model\r\n\r\n"
             "**`train.py`**\r\n"
             "```python\r\n"
             "<<<<<<< SEARCH\r\n"
             "WIDTH = 3   \r\n"
             "=======\r\n"
             "WIDTH = 6\r\n"
             ">>>>>>> REPLACE\r\n"
             "```\r\n")
    out = apply(reply)
    assert out.ok, out.problems
    assert "WIDTH = 6\n" in out.edits["train.py"] and "\r" not in out.edits["train.py"]
    assert parse_reply(reply).description == "widen the model"


def test_file_name_on_the_fence_line_and_longer_markers():
    reply = ("```python train.py\n"
             "<<<<<<<<< SEARCH\n"
             "WIDTH = 3\n"
             "=========\n"
             "WIDTH = 4\n"
             ">>>>>>>>> REPLACE\n"
             "```\n")
    out = apply(reply)
    assert out.ok and "WIDTH = 4" in out.edits["train.py"]


def test_missing_file_name_is_fine_with_a_single_editable_file():
    out = apply("<<<<<<< SEARCH\nWIDTH = 3\n=======\nWIDTH = 5\n>>>>>>> REPLACE\n")
    assert out.ok and "WIDTH = 5" in out.edits["train.py"]


def test_missing_file_name_with_several_files_is_explained():
    files = {"a.py": "A = 1\n", "b.py": "B = 1\n"}
    out = apply("<<<<<<< SEARCH\nA = 1\n=======\nA = 2\n>>>>>>> REPLACE\n", files)
    assert not out.ok and "which file" in out.problems[0]


def test_wrong_directory_in_the_path_maps_to_the_unique_basename():
    assert resolve_path("src/train.py", FILES) == "train.py"
    assert resolve_path("new_module.py", FILES) == "new_module.py"


def test_indentation_dropped_by_the_model_is_restored():
    reply = ("train.py\n<<<<<<< SEARCH\n"
             "a = (x - 2.0) ** 2\n"
             "return a + 0.1 * (width - 6) ** 2\n"
             "=======\n"
             "a = abs(x - 2.0)\n"
             "return a + 0.1 * (width - 6) ** 2\n"
             ">>>>>>> REPLACE\n")
    out = apply(reply)
    assert out.ok, out.problems
    assert "    a = abs(x - 2.0)\n    return a + 0.1" in out.edits["train.py"]


def test_several_blocks_apply_in_order_on_the_evolving_file():
    reply = ("train.py\n<<<<<<< SEARCH\nX = 5.0\n=======\nX = 2.5\n>>>>>>> REPLACE\n\n"
             "train.py\n<<<<<<< SEARCH\nX = 2.5\nMAX_X = 5.0\n=======\nX = 2.0\nMAX_X = 4.0\n>>>>>>> REPLACE\n")
    out = apply(reply)
    assert out.ok
    assert "X = 2.0\nMAX_X = 4.0\n" in out.edits["train.py"]


def test_whole_file_replacement_of_a_small_file():
    reply = "DESCRIPTION: rewrite\n\nFILE: train.py\n```python\nX = 2.0\nprint('score: 0.0')\n```\n"
    out = apply(reply)
    assert out.ok and out.edits == {"train.py": "X = 2.0\nprint('score: 0.0')\n"}


def test_whole_file_replacement_of_a_large_file_is_refused():
    big = {"train.py": "".join(f"V{i} = {i}\n" for i in range(300))}
    out = apply("FILE: train.py\n```\nV0 = 1\n```\n", big, whole_file_max_lines=200)
    assert not out.ok and "too many to rewrite whole" in out.problems[0]


def test_file_line_followed_by_a_search_block_names_the_file():
    out = apply("FILE: train.py\n<<<<<<< SEARCH\nWIDTH = 3\n=======\nWIDTH = 7\n>>>>>>> REPLACE\n")
    assert out.ok and "WIDTH = 7" in out.edits["train.py"]


def test_new_file_with_an_empty_search():
    out = apply("helpers.py\n<<<<<<< SEARCH\n=======\nK = 1\n>>>>>>> REPLACE\n")
    assert out.ok and out.edits == {"helpers.py": "K = 1\n"}


def test_crlf_files_keep_their_line_ends():
    files = {"train.py": "A = 1\r\nB = 2\r\n"}
    out = apply("train.py\n<<<<<<< SEARCH\nB = 2\n=======\nB = 3\n>>>>>>> REPLACE\n", files)
    assert out.edits["train.py"] == "A = 1\r\nB = 3\r\n"


def test_idea_and_skip_lines():
    reply = parse_reply("DESCRIPTION: try the idea\nIDEA: 3\n\n<<<<<<< SEARCH\nX = 5.0\n=======\nX = 1.0\n"
                        ">>>>>>> REPLACE\n")
    assert reply.idea_id == 3
    assert parse_reply("SKIP: the idea cannot work without more memory").skip


# -- replies that are refused, with a message for the model -----------------------------------------

def test_non_matching_search_quotes_the_closest_lines():
    out = apply("train.py\n<<<<<<< SEARCH\nWIDTH = 4\n=======\nWIDTH = 8\n>>>>>>> REPLACE\n")
    assert not out.ok
    msg = out.problems[0]
    assert "was not found in train.py" in msg and "WIDTH = 4" in msg
    assert "closest lines" in msg and "WIDTH = 3" in msg


def test_ambiguous_search_is_refused():
    files = {"train.py": "a = 1\nb = 2\na = 1\n"}
    out = apply("train.py\n<<<<<<< SEARCH\na = 1\n=======\na = 3\n>>>>>>> REPLACE\n", files)
    assert not out.ok and "occurs 2 times" in out.problems[0]


def test_ambiguity_by_trailing_whitespace_only_is_still_ambiguous():
    with pytest.raises(EditError, match="occurs 2 times"):
        apply_block("a = 1 \nb\na = 1\n", "a = 1\n", "a = 2\n")


def test_unclosed_block_says_the_reply_may_be_cut_off():
    out = apply("train.py\n<<<<<<< SEARCH\nX = 5.0\n=======\nX = 2.0\n")
    assert not out.ok and "cut off" in out.problems[0]


def test_block_without_divider():
    out = apply("train.py\n<<<<<<< SEARCH\nX = 5.0\n>>>>>>> REPLACE\n")
    assert not out.ok and "divider" in out.problems[0]


def test_no_edits_at_all():
    out = apply("DESCRIPTION: I think we should lower X.\nREASONING: it is too high.")
    assert not out.ok and "no edits" in out.problems[0]


def test_a_change_that_changes_nothing():
    out = apply("train.py\n<<<<<<< SEARCH\nX = 5.0\n=======\nX = 5.0\n>>>>>>> REPLACE\n")
    assert not out.ok and "change nothing" in out.problems[0]


def test_one_bad_block_rejects_the_whole_reply():
    reply = ("train.py\n<<<<<<< SEARCH\nX = 5.0\n=======\nX = 2.0\n>>>>>>> REPLACE\n"
             "train.py\n<<<<<<< SEARCH\nNOPE = 1\n=======\nNOPE = 2\n>>>>>>> REPLACE\n")
    out = apply(reply)
    assert not out.ok and out.edits == {} and out.problems[0].startswith("edit 2:")


def test_long_messages_are_capped():
    out = apply("train.py\n<<<<<<< SEARCH\n" + "junk line\n" * 500 + "=======\nx\n>>>>>>> REPLACE\n")
    assert not out.ok and len(out.problems[0]) < 1600


# -- structured (JSON) replies ----------------------------------------------------------------------

def test_json_reply_applies():
    text = json.dumps({"description": "lower X", "reasoning": "closer to 2", "notebook": "",
                       "edits": [{"path": "train.py", "search": "X = 5.0", "replace": "X = 2.0"}]})
    reply = parse_reply(text)
    assert reply.structured and reply.description == "lower X"
    out = apply_reply(reply, FILES)
    assert out.ok and "\nX = 2.0\nMAX_X = 5.0" in out.edits["train.py"]


def test_json_in_a_fence_with_trailing_text():
    text = "```json\n" + json.dumps({"description": "d", "edits": [
        {"path": "train.py", "search": "WIDTH = 3", "replace": "WIDTH = 6"}]}) + "\n```"
    out = apply(text)
    assert out.ok


def test_truncated_json_is_explained():
    out = apply('{"description": "lower X", "reasoning": "because", "edits": [{"path": "train.py", "sea')
    assert not out.ok and "does not parse" in out.problems[0] and "cut off" in out.problems[0]


def test_schema_anchors_search_to_unique_lines_of_small_files():
    schema = reply_schema(FILES)
    item = schema["properties"]["edits"]["items"]["properties"]
    assert item["path"]["enum"] == ["train.py"]
    assert "X = 5.0" in item["search"]["enum"] and "" not in item["search"]["enum"]
    # A line that occurs twice cannot anchor an edit.
    twice = reply_schema({"a.py": "x = 1\nx = 1\ny = 2\n"})
    assert twice["properties"]["edits"]["items"]["properties"]["search"]["enum"] == ["y = 2"]
    # Large files get free text.
    big = reply_schema({"a.py": "".join(f"v{i} = {i}\n" for i in range(1000))})
    assert "enum" not in big["properties"]["edits"]["items"]["properties"]["search"]


def test_json_with_raw_newlines_in_strings_parses():
    text = '{"description": "two\nlines", "edits": [{"path": "train.py", "search": "WIDTH = 3", "replace": "WIDTH = 4\nY = 1"}]}'
    out = apply(text)
    assert out.ok and "WIDTH = 4\nY = 1\n" in out.edits["train.py"]
