"""Edge cases of eval.scoring that tests/eval/test_score.py leaves free (found by mutation testing)."""

from __future__ import annotations

from eval.scoring import read_predictions, score_record


def test_a_json_error_near_the_start_of_a_line_shows_the_line_from_its_first_character(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id" "a", "answer": "x", "completion": ""}\n', encoding="utf-8")
    # the error is at column 7: the context is the line's first 16 characters (up to 10 after the error)
    assert read_predictions(path) == ([], [{"line": 1, "error": "invalid JSON (Expecting ':' delimiter; "
                                                                "at column 7: '{\"id\" \"a\", \"answ')"}])


def test_a_choice_answer_that_cannot_be_read_keeps_the_parser_error():
    row = {"id": "q", "options": ["CT", "MRI"], "answer": "MRI", "answer_letter": "B"}
    rec = score_record(row, "<think>it is an MRI</think>", "think")
    assert (rec["parsed"], rec["correct"], rec["format_ok"], rec["error"]) == (None, 0.0, False, "no <answer> block")


def test_a_multi_word_gold_is_no_yes_no_gold_so_the_answer_is_shown_as_written():
    row = {"id": "q", "answer": "no fracture", "answer_type": "open"}
    rec = score_record(row, "<answer>No fracture seen</answer>", "no-think")
    assert rec["parsed"] == "No fracture seen"
    assert rec["correct"] == 0.0  # exact match


def test_predictions_are_read_as_utf8_whatever_the_locale(tmp_path, ascii_locale):
    path = tmp_path / "p.jsonl"
    path.write_bytes('{"id": "a", "answer": "caf\u00e9", "completion": "x"}\n'.encode("utf-8"))
    records, malformed = read_predictions(path)
    assert malformed == [] and records[0]["answer"] == "caf\u00e9"
