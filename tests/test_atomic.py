"""Atomic files: damage is refused naming the file, line or column and the fix; export quirks are read.

A generated set of damaged ``.inter`` files (headers, separators, types, ids, rows, encodings,
empty data, splits with nothing to train or evaluate on) goes through the ``run_recbole`` entry
point in-process: exit code 2, the file named, no exception, no run folder. Byte-order marks,
CRLF line endings and blank lines are read as the clean file is.
"""

import contextlib
import io

import pytest

from recbole_hymoe import Config
from recbole_hymoe.atomic import check_atomic_files
from recbole_hymoe.cli import run_recbole_main
from recbole_hymoe.data import prepare_data

HEADER = ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
# 29 users × 6 interactions over 40 items, string ids, times in seconds.
ROWS = [[f"u{u}", f"i{(u * 7 + k) % 40}", "3", str(1000 * u + k)] for u in range(1, 30) for k in range(6)]
BAD_ROW_AT = (2, 60, len(ROWS) + 1)  # file lines: the first row, a middle one, the last


def atomic(header=HEADER, rows=ROWS, sep="\t", newline="\n"):
    """An atomic file's text."""
    return newline.join(sep.join(row) for row in [header, *rows]) + newline


def with_row(line, row):
    """The clean file with file line ``line`` (2 = first row) replaced by ``row``."""
    rows = [list(r) for r in ROWS]
    rows[line - 2] = row
    return atomic(rows=rows)


def retyped(column, kind):
    return atomic(header=[h if i != column else f"{h.split(':')[0]}:{kind}" for i, h in enumerate(HEADER)])


def without(column):
    return atomic(header=[h for i, h in enumerate(HEADER) if i != column],
                  rows=[[v for i, v in enumerate(r) if i != column] for r in ROWS])


def _damaged():
    """(name, file bytes, fragments the message must hold)."""
    cases = [
        ("empty", b"", ["is empty", "name:type"]),
        ("blank-lines-only", b"\n \n\n", ["is empty"]),
        ("header-only", atomic(rows=[]).encode(), ["has a header but no rows"]),
        ("header-and-blank-lines", (atomic(rows=[]) + "\n\n").encode(), ["has a header but no rows"]),
        ("quoted-csv", atomic(header=[f'"{h}"' for h in HEADER], sep=",").encode(),
         ["separated by commas", "--field_separator=','", "without quotes"]),
        ("duplicate-column", atomic(header=[*HEADER[:3], "item_id:token"]).encode(), ["['item_id'] appear twice"]),
        ("no-user", without(0).encode(), ["no 'user_id' column", "USER_ID_FIELD"]),
        ("no-item", without(1).encode(), ["no 'item_id' column", "ITEM_ID_FIELD"]),
        ("renamed-user", atomic(header=["uid:token", *HEADER[1:]]).encode(), ["no 'user_id' column"]),
        ("float-user", retyped(0, "float").encode(), ["'user_id' has type 'float'", "ids must be token"]),
        ("token-time", retyped(3, "token").encode(), ["time column 'timestamp' has type 'token'"]),
        ("latin-1", atomic(rows=[[*ROWS[0][:1], "caf\xe9", *ROWS[0][2:]], *ROWS[1:]]).encode("latin-1"),
         ["line 2", "0xe9 is not valid utf-8", "--encoding="]),
        ("invalid-utf8", atomic().encode()[:200] + b"\xff" + atomic().encode()[200:], ["is not valid utf-8"]),
        ("many-bad-rows", atomic(rows=[[*r[:3], "x"] for r in ROWS]).encode(),
         [f"{len(ROWS)} bad lines, the first 5:", "line 6:"]),
    ]
    for sep, word in ((",", "commas"), (";", "semicolons"), ("|", "bars"), (" ", "spaces")):
        cases.append((f"separated-by-{word}", atomic(sep=sep).encode(),
                      [f"separated by {word}", f"--field_separator='{sep}'"]))
    for column in range(len(HEADER)):
        name = HEADER[column].split(":")[0]
        for kind in ("int", "string", "TOKEN"):
            cases.append((f"type-{name}-{kind}", retyped(column, kind).encode(),
                          [f"column {name!r} has type {kind!r}"]))
        untyped = atomic(header=[h if i != column else name for i, h in enumerate(HEADER)])
        cases.append((f"untyped-{name}", untyped.encode(), [f"column {name!r} is not name:type"]))
    for line in BAD_ROW_AT:
        row = ROWS[line - 2]
        for what, bad, fragment in (
            ("extra-field", [*row, "7"], "has 5 fields, the header 4"),
            ("trailing-tab", [*row, ""], "has 5 fields, the header 4"),
            ("missing-field", row[:3], "has 3 fields, the header 4"),
            ("empty-user", ["", *row[1:]], "empty user_id"),
            ("empty-item", [row[0], "", *row[2:]], "empty item_id"),
            ("date-time", [*row[:3], "2020-01-01"], "timestamp '2020-01-01' is not a number"),
            ("clock-time", [*row[:3], "12:30"], "timestamp '12:30' is not a number"),
            ("empty-time", [*row[:3], ""], "empty timestamp"),
            ("text-rating", [*row[:2], "good", row[3]], "rating 'good' is not a number"),
        ):
            cases.append((f"{what}-line-{line}", with_row(line, bad).encode(), [f"line {line}", fragment]))
    return cases


DAMAGED = _damaged()


def run_cli(folder, dataset, model, monkeypatch, *extra):
    """Run ``run_recbole`` in-process on ``<folder>/<dataset>``; return (exit code, stderr)."""
    monkeypatch.chdir(folder)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = run_recbole_main([f"--model={model}", f"--dataset={dataset}", f"--data_path={folder}",
                                 f"--checkpoint_dir={folder / 'saved'}", "--epochs=1", "--state=ERROR",
                                 "--show_progress=False", "--MAX_ITEM_LIST_LENGTH=10", "--hidden_size=8",
                                 "--inner_size=16", *extra])
    return code, err.getvalue()


def write(folder, name, data):
    (folder / name).mkdir()
    path = folder / name / f"{name}.inter"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("index", range(len(DAMAGED)), ids=[name for name, _, _ in DAMAGED])
def test_a_damaged_file_exits_2_naming_file_and_fix(tmp_path, monkeypatch, index):
    name, data, fragments = DAMAGED[index]
    path = write(tmp_path, "damaged", data)
    code, stderr = run_cli(tmp_path, "damaged", ("SASRec", "HyMoERec")[index % 2], monkeypatch)
    assert code == 2, stderr
    assert stderr.startswith(f"run_recbole: error: {path}")
    for fragment in fragments:
        assert fragment in stderr, (fragment, stderr)
    assert "Traceback" not in stderr
    assert not (tmp_path / "saved").exists()


@pytest.mark.parametrize(
    "rows,extra,fragments",
    [
        ([[f"u{u}", f"i{u}", "3", str(u)] for u in range(1, 30)], [], ["no user has two interactions"]),
        ([[f"u{u}", f"i{u + k}", "3", str(10 * u + k)] for u in range(1, 30) for k in range(2)], [],
         ["the valid split is empty", "{'LS': 'test_only'}"]),
        (ROWS, ["--user_inter_num_interval=[100,inf)"],
         ["filters leave no interaction", "user_inter_num_interval='[100,inf)'"]),
        (ROWS, ["--topk=[10,50]", "--valid_metric=NDCG@10"], ["topk=[10, 50]", "40 items", "<= 40"]),
    ],
    ids=["single-interactions", "no-validation-item", "filtered-out", "topk-above-items"],
)
@pytest.mark.parametrize("model", ["SASRec", "HyMoERec"])
def test_data_with_nothing_to_train_or_evaluate_is_refused(tmp_path, monkeypatch, rows, extra, fragments, model):
    write(tmp_path, "thin", atomic(rows=rows).encode())
    code, stderr = run_cli(tmp_path, "thin", model, monkeypatch, *extra)
    assert code == 2, stderr
    for fragment in fragments:
        assert fragment in stderr, (fragment, stderr)
    assert not (tmp_path / "saved").exists()


@pytest.mark.parametrize(
    "data",
    [
        b"\xef\xbb\xbf" + atomic().encode(),  # spreadsheet "CSV UTF-8" export
        atomic(newline="\r\n").encode(),  # Windows editors
        b"\xef\xbb\xbf" + atomic(newline="\r\n").encode(),
        (atomic() + "\n\n").encode(),  # trailing blank lines
        atomic().replace("\n", "\n\n", 30).encode(),  # blank lines between rows
    ],
    ids=["bom", "crlf", "bom-crlf", "trailing-blank-lines", "blank-lines-between-rows"],
)
def test_export_quirks_are_read_like_the_clean_file(tmp_path, data):
    write(tmp_path, "clean", atomic().encode())
    write(tmp_path, "quirky", data)
    read = {}
    for name in ("clean", "quirky"):
        config = Config("SASRec", name, config_dict={"data_path": str(tmp_path), "state": "ERROR"})
        assert config["load_col"]["inter"] == ["user_id", "item_id", "rating", "timestamp"]
        dataset, train_data, _, _ = prepare_data(config)
        read[name] = (dataset.inter_num, list(dataset.field2id_token["item_id"]), len(train_data._dataset))
    assert read["quirky"] == read["clean"]


def test_a_bom_is_read_as_utf_8_sig(tmp_path):
    write(tmp_path, "bom", b"\xef\xbb\xbf" + atomic().encode())
    write(tmp_path, "plain", atomic().encode())
    base = {"data_path": str(tmp_path)}
    assert Config("SASRec", "bom", config_dict=base)["encoding"] == "utf-8-sig"
    assert Config("SASRec", "bom", config_dict={**base, "encoding": "UTF8"})["encoding"] == "utf-8-sig"
    assert Config("SASRec", "plain", config_dict=base)["encoding"] is None


def test_recbole_bundled_files_pass_with_every_column_loaded():
    config = Config("SASRec", "ml-100k", config_dict={"load_col": None})
    check_atomic_files(config)  # .inter, .user and .item, token_seq columns included


def test_a_user_file_is_checked_when_loaded(tmp_path):
    write(tmp_path, "withusers", atomic().encode())
    (tmp_path / "withusers" / "withusers.user").write_text("user_id:token\tage:float\nu1\tyoung\n")
    config = Config("SASRec", "withusers", config_dict={"data_path": str(tmp_path), "load_col": None})
    with pytest.raises(ValueError, match=r"withusers\.user: line 2: age 'young' is not a number"):
        check_atomic_files(config)


def test_a_missing_additional_file_is_named(tmp_path):
    write(tmp_path, "extra", atomic().encode())
    config = Config("SASRec", "extra", config_dict={"data_path": str(tmp_path), "additional_feat_suffix": "ent"})
    with pytest.raises(ValueError, match=r"additional_feat_suffix names 'ent', but .*extra\.ent does not exist"):
        check_atomic_files(config)
