"""Hand freed heap memory back to the operating system between epochs (or training steps).

A training epoch allocates and frees many large tensors of varying size (length-bucketed batches
trim their padding, so every batch has its own width). glibc's malloc raises its mmap threshold
after such tensors are freed and then serves them from the heap, where the freed space stays
mapped: the resident memory of an ml-100k HyMoERec run grew by ≈ 0.1 GB per epoch (0.96 GB after
one epoch, 2.5 GB after fifteen). ``malloc_trim(0)`` once per epoch returns the free pages and
keeps it flat (0.57 → 0.60 GB over the same epochs).

Within an epoch the same happens from step to step: the number of real positions and the tokens
each expert receives differ from batch to batch, so an ML-1M HyMoERec process grows to ≈ 3–4 GB
(a dense model repeating one batch stays flat; fed varying batches it grows too).
``release_memory: step`` trims before every training step instead (the heap then holds at most
one step's buffers: ≈ 1 GB on ML-1M), paying for the pages the next step faults in again
(:func:`releasing_before`). The alternative, a fixed ``MALLOC_MMAP_THRESHOLD_``, maps and unmaps
every large block and faults it in on every use.
"""

import ctypes
import ctypes.util
import functools

# release_memory -> when the C heap's free pages go back to the OS during training
RELEASE_POINTS = ("epoch", "step")


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim  # glibc only
    except (OSError, AttributeError):
        return None


def release_free_memory():
    """Return the C heap's free pages to the OS (glibc ``malloc_trim``); a no-op elsewhere.

    Returns:
        bool: whether memory was released.
    """
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


def releasing_before(loss_func):
    """``loss_func`` that first returns the C heap's free pages (RecBole's Trainer calls the loss
    function once per step, after ``zero_grad`` has freed the previous step's gradients, so only
    the weights, the optimizer state and the data are live then)."""

    @functools.wraps(loss_func)
    def release_then_loss(interaction):
        release_free_memory()
        return loss_func(interaction)

    return release_then_loss
