"""yaml/… paths resolve from any working directory; records name files without this machine's layout."""

from pathlib import Path

from recbole_hymoe.bench.report import markdown
from recbole_hymoe.bench.suite import Suite
from recbole_hymoe.paths import YAML_DIR, find_file, portable


def test_yaml_paths_name_the_package_yaml_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Path(find_file("yaml/protocol/loo-full.yaml")) == YAML_DIR / "protocol" / "loo-full.yaml"
    (tmp_path / "yaml" / "protocol").mkdir(parents=True)
    (tmp_path / "yaml" / "protocol" / "loo-full.yaml").write_text("{}")
    assert find_file("yaml/protocol/loo-full.yaml") == "yaml/protocol/loo-full.yaml"  # a file where you are wins
    assert find_file("yaml/nothing.yaml") == "yaml/nothing.yaml" and find_file(None) is None


def test_records_name_files_relative_to_the_working_folder_or_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert portable(YAML_DIR / "protocol" / "loo-full.yaml") == "yaml/protocol/loo-full.yaml"
    assert portable(tmp_path / "results" / "run") == "results/run"
    outside = tmp_path.parent / f"{tmp_path.name}-out"
    assert portable(outside / "cells" / "seed-1", within=outside) == "cells/seed-1"
    assert portable(outside / "my.yaml") == "my.yaml"


def test_a_suite_report_names_its_protocol_without_the_machine_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    protocol = YAML_DIR / "protocol" / "loo-full.yaml"  # as an absolute suite path resolves it
    suite = Suite({"name": "s", "protocol": str(protocol), "datasets": ["d"], "seeds": [1],
                   "models": [{"model": "SASRec"}]})
    text = markdown(suite, {})
    assert "Protocol: yaml/protocol/loo-full.yaml;" in text and str(YAML_DIR) not in text
