"""Ray Tune sweeps over the models' knobs (Ray is imported only when a sweep runs)."""

from recbole_hymoe.tuning.space import SearchSpace


def run_tune(*args, **kwargs):
    """Run a sweep; see :func:`recbole_hymoe.tuning.runner.run_tune`."""
    from recbole_hymoe.tuning.runner import run_tune as _run_tune

    return _run_tune(*args, **kwargs)


__all__ = ["SearchSpace", "run_tune"]
