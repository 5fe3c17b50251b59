import json
import os
import subprocess
import sys

import pytest

from semievol.data import DataConfig, load_split, parse_options
from semievol.errors import DataError
from semievol.tasks import TaskConfig, build_task

MC = build_task(TaskConfig())
OPTS = json.dumps(["neg", "neu", "pos"])
HEADER = "id,question,options,answer\n"


# Each case: file name, content, expected (row, column, message fragment); row None = whole file.
MALFORMED = [
    ("empty.csv", "", None, None, "file is empty"),
    ("header_only.csv", HEADER, None, None, "no data rows"),
    ("blank.csv", "\n\n   \n", None, None, "file is empty"),
    (
        "no_question.csv",
        f'id,text,options,answer\n1,hi,"{OPTS.replace(chr(34), chr(34) * 2)}",A\n',
        None,
        "question",
        "missing column 'question'",
    ),
    (
        "no_answer.csv",
        f'id,question,options\n1,hi,"{OPTS.replace(chr(34), chr(34) * 2)}"\n',
        None,
        "answer",
        "missing column 'answer'",
    ),
    ("no_options.csv", "id,question,answer\n1,hi,A\n", None, "options", "missing column 'options'"),
    (
        "no_id.csv",
        f'question,options,answer\nhi,"{OPTS.replace(chr(34), chr(34) * 2)}",A\n',
        None,
        "id",
        "missing column 'id'",
    ),
    ("bad_json.csv", HEADER + '1,hi,"[""a"", ""b""",A\n', 1, "options", "cannot parse options"),
    (
        "options_not_list.csv",
        HEADER + '1,hi,"{""a"": 1}",A\n',
        1,
        "options",
        "options must be a list",
    ),
    ("one_option.csv", HEADER + '1,hi,"[""only""]",A\n', 1, "options", "at least 2 options"),
    ("empty_option.csv", HEADER + '1,hi,"[""a"", """"]",A\n', 1, "options", "option 2 is empty"),
    (
        "nested_option.csv",
        HEADER + '1,hi,"[""a"", [1, 2]]",A\n',
        1,
        "options",
        "option 2 is a list",
    ),
    ("empty_options.csv", HEADER + "1,hi,,A\n", 1, "options", "options are empty"),
    (
        "answer_out_of_range.csv",
        HEADER + f'1,hi,"{OPTS.replace(chr(34), chr(34) * 2)}",D\n',
        1,
        "answer",
        "'D' is not one of the 3 options",
    ),
    (
        "answer_number_out_of_range.csv",
        HEADER + f'1,hi,"{OPTS.replace(chr(34), chr(34) * 2)}",7\n',
        1,
        "answer",
        "'7' is not one of the 3 options",
    ),
    (
        "answer_empty.csv",
        HEADER + f'1,hi,"{OPTS.replace(chr(34), chr(34) * 2)}",\n',
        1,
        "answer",
        "answer is empty",
    ),
    (
        "question_empty.csv",
        HEADER + f'1,   ,"{OPTS.replace(chr(34), chr(34) * 2)}",A\n',
        1,
        "question",
        "question is empty",
    ),
    (
        "dup_ids.csv",
        HEADER
        + f'1,hi,"{OPTS.replace(chr(34), chr(34) * 2)}",A\n1,ho,"{OPTS.replace(chr(34), chr(34) * 2)}",B\n',
        2,
        "id",
        "duplicate id '1' (first at row 1)",
    ),
    ("ragged.csv", HEADER + "1,hi\n", 1, None, "has 2 fields but the header has 4"),
    ("unclosed_quote.csv", HEADER + '1,"hi,x,A\n', None, None, "malformed CSV"),
    (
        "dup_header.csv",
        "question,question,options,answer\nq,q,x,A\n",
        None,
        None,
        "header repeats column 'question'",
    ),
    ("latin1.csv", (HEADER + "1,caf\xe9,x,A\n").encode("latin-1"), None, None, "not valid UTF-8"),
    (
        "bad.jsonl",
        '{"id": 1, "question": "q", "options": ["a","b"], "answer": "A"}\n{"id": 2, \n',
        2,
        None,
        "invalid JSON",
    ),
    ("array_line.jsonl", '["not", "an", "object"]\n', 1, None, "expected a JSON object"),
    (
        "mixed_types.jsonl",
        '{"id": 1, "question": {"x": 1}, "options": ["a","b"], "answer": "A"}\n',
        1,
        "question",
        "expected text, got a dict",
    ),
    ("not_list.json", '{"question": "q"}', None, None, "expected a JSON list of objects"),
    ("bad.json", "[{", None, None, "invalid JSON"),
    ("data.xlsx", "whatever", None, None, "unknown file type '.xlsx'"),
]


@pytest.mark.parametrize(
    ("name", "content", "row", "column", "message"), MALFORMED, ids=[m[0] for m in MALFORMED]
)
def test_malformed_input_gives_one_clear_error(tmp_path, name, content, row, column, message):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_split(DataConfig(labeled=str(path), id_column="id"), "labeled", MC)
    problems = info.value.problems
    assert len(problems) == 1, problems
    (p,) = problems
    assert p.file == str(path)
    assert p.row == row
    assert p.column == column
    assert message in p.message
    line = str(p)
    assert "\n" not in line and str(path) in line
    if row is not None:
        assert f"row {row}" in line


def test_missing_file_and_directory(tmp_path):
    for source, message in [
        (tmp_path / "nope.csv", "file not found"),
        (tmp_path, "is a directory"),
    ]:
        with pytest.raises(DataError, match=message):
            load_split(DataConfig(labeled=str(source)), "labeled", MC)


def test_unreadable_file(tmp_path, monkeypatch):
    path = tmp_path / "locked.csv"
    path.write_text(HEADER + "1,q,x,A\n")
    if os.geteuid() == 0:  # root reads anything: simulate the refusal the OS would give others
        monkeypatch.setattr("semievol.data.os.access", lambda *_: False)
    else:
        path.chmod(0)
    with pytest.raises(DataError, match="permission denied"):
        load_split(DataConfig(labeled=str(path)), "labeled", MC)


def test_every_bad_row_is_reported_with_its_row_number(tmp_path):
    path = tmp_path / "many.csv"
    ok = OPTS.replace('"', '""')
    path.write_text(HEADER + f'1,q1,"{ok}",A\n2,,"{ok}",A\n3,q3,"{ok}",Z\n4,q4,"{ok}",C\n')
    with pytest.raises(DataError) as info:
        load_split(DataConfig(labeled=str(path), id_column="id"), "labeled", MC)
    assert [(p.row, p.column) for p in info.value.problems] == [(2, "question"), (3, "answer")]


def test_unlabeled_gold_is_audit_only_and_bad_gold_does_not_fail(tmp_path):
    path = tmp_path / "unlabeled.csv"
    ok = OPTS.replace('"', '""')
    path.write_text(HEADER + f'1,q1,"{ok}",C\n2,q2,"{ok}",Z\n3,q3,"{ok}",\n')
    examples = load_split(DataConfig(unlabeled=str(path), id_column="id"), "unlabeled", MC)
    assert [e.answer for e in examples] == [None, None, None]
    assert [e.audit_gold for e in examples] == ["C", None, None]


def test_unlabeled_without_gold_column(tmp_path):
    path = tmp_path / "unlabeled.jsonl"
    path.write_text('{"question": "q", "options": ["a", "b"]}\n')
    (ex,) = load_split(DataConfig(unlabeled=str(path)), "unlabeled", MC)
    assert ex.answer is None and ex.audit_gold is None and ex.id == "unlabeled-1"


def test_formats_agree(tmp_path):
    rows = [
        {"id": "a", "question": "q1", "options": ["x", "y"], "answer": "B"},
        {"id": "b", "question": "q2", "options": "['x', 'y']", "answer": "1"},
    ]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "d.json").write_text(json.dumps(rows))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.Table.from_pylist(
            [
                dict(
                    r,
                    options=json.dumps(r["options"])
                    if isinstance(r["options"], list)
                    else r["options"],
                )
                for r in rows
            ]
        ),
        tmp_path / "d.parquet",
    )
    import datasets

    datasets.Dataset.from_list([dict(r, options=str(r["options"])) for r in rows]).save_to_disk(
        str(tmp_path / "hfdir")
    )
    results = []
    for source in ["d.jsonl", "d.json", "d.parquet", "hfdir"]:
        exs = load_split(DataConfig(labeled=str(tmp_path / source), id_column="id"), "labeled", MC)
        results.append([(e.id, e.question, e.options, e.answer) for e in exs])
    assert results[0] == [("a", "q1", ["x", "y"], "B"), ("b", "q2", ["x", "y"], "A")]
    assert all(r == results[0] for r in results)


def test_parse_options_accepts_json_and_python_lists():
    assert parse_options('["a", "b"]') == ["a", "b"]
    assert parse_options("['a', 'b']") == ["a", "b"]
    assert parse_options(["a", 2]) == ["a", "2"]
    with pytest.raises(ValueError):
        parse_options("a, b")


def test_cli_data_check_prints_one_line_per_problem_and_exits_2(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + '1,q,"[""a"", ""b""]",C\n')
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "semievol",
            "data",
            "check",
            "--data.labeled",
            str(bad),
            "--data.id_column",
            "id",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert (
        lines[0]
        == f"error: {bad}: row 1: column 'answer': answer 'C' is not one of the 2 options: expected a letter A-B, a number 1-2 or an option's exact text"
    )


def test_cli_data_check_summary_and_leakage_warning(tmp_path):
    ok = OPTS.replace('"', '""')
    (tmp_path / "l.csv").write_text(HEADER + f'1,same question,"{ok}",A\n2,other,"{ok}",B\n')
    (tmp_path / "t.csv").write_text(HEADER + f'1,Same  question,"{ok}",A\n')
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "semievol",
            "data",
            "check",
            "--data.labeled",
            str(tmp_path / "l.csv"),
            "--data.test",
            str(tmp_path / "t.csv"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout[: proc.stdout.index("\n}") + 2])
    assert summary["labeled"]["rows"] == 2
    assert summary["labeled"]["label_distribution"] == {"A (neg)": 1, "B (neu)": 1}
    assert "warning: 1 test items also appear in labeled" in proc.stdout
