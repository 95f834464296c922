"""The README's Python example runs as written."""

import re

import pytest
from conftest import REPO, run_python


@pytest.mark.integration
def test_readme_python_example(tmp_path):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks, "README has no python example"
    result = run_python(blocks[0], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    ndcg = float(lines[0].split()[0])
    assert 0.0 <= ndcg <= 1.0
    assert lines[-1].count("'") >= 2 * 10  # 10 item tokens per user
