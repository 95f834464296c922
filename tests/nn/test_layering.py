"""recbole_hymoe.nn is pure PyTorch: importing it never imports RecBole."""

from conftest import REPO, run_python


def test_nn_never_imports_recbole():
    # A stub parent package keeps recbole_hymoe/__init__ (which repairs RecBole) out of the way,
    # so only the nn layer's own imports are seen.
    code = f"""
import sys, types
stub = types.ModuleType("recbole_hymoe")
stub.__path__ = [{str(REPO / "recbole_hymoe")!r}]
sys.modules["recbole_hymoe"] = stub
import recbole_hymoe.nn, recbole_hymoe.blocks
loaded = sorted(m for m in sys.modules if m == "recbole" or m.startswith("recbole."))
assert not loaded, loaded
print("ok")
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
