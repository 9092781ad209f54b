"""Small prediction batches side by side on a CPU, one whole batch per thread.

Part of the opt-in fast wing (:mod:`mmoe_annotated.fast`); explained in the appendix
"Performance". A pass over a small batch is some forty operators of a fraction of a millisecond
each; split over two threads, every one of them waits for both threads to wake and to finish.
Run side by side, each thread takes whole batches on one core.

Shape letters: ``M`` rows of a split, ``T`` tasks, ``E`` experts.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import torch

from ..features.inputs import EncodedFeatures
from ..model.mmoe import MultiTaskModel
from . import fused

__all__ = ["SIDE_BY_SIDE_ROWS", "side_by_side"]

#: On a CPU with more than one thread, prediction batches of at most this many rows run side by
#: side. On two cores, prediction at batch 256 ran 1.15-1.18x (``K = 4``) and 1.18-1.25x
#: (``K = 16``) faster, at batch 1,024 1.05-1.17x; at batch 4096 it gained 1 %, not worth a second
#: set of working tensors.
SIDE_BY_SIDE_ROWS = 1024


def side_by_side(model: MultiTaskModel, x: EncodedFeatures, batch_size: int,
                 logits: torch.Tensor, gates: torch.Tensor | None) -> None:
    """The batches of ``x`` through the fused pass, one whole batch per thread: every thread runs
    its own :func:`fused.batches <mmoe_annotated.fast.fused.batches>` (its own working tensors) on
    one core, takes the next batch when it finishes one (so a core that runs slower for a while
    takes fewer batches), and writes each batch's outputs into its rows of ``logits`` ``(M, T)`` /
    ``gates`` ``(M, T, E)``. The numbers are those of a one-thread run, batch by batch."""
    threads = torch.get_num_threads()
    starts = iter(range(0, len(x), batch_size))
    lock, failed = threading.Lock(), threading.Event()

    def work() -> None:
        torch.set_num_threads(1)  # this thread's operators run on its own core
        try:
            with torch.inference_mode():  # grad mode is per thread
                run = fused.batches(model)
                while not failed.is_set():
                    with lock:
                        start = next(starts, None)
                    if start is None:
                        return
                    xb = x.index(slice(start, start + batch_size))
                    out = run(xb.ids, xb.dense)
                    rows = slice(start, start + len(xb))
                    logits[rows].copy_(out.logits)
                    if gates is not None:
                        gates[rows].copy_(out.gates)
        except BaseException:
            failed.set()  # the other threads stop after their current batch
            raise

    try:
        with ThreadPoolExecutor(threads, thread_name_prefix="mmoe-predict") as pool:
            for job in [pool.submit(work) for _ in range(threads)]:
                job.result()  # an error in a thread is raised here
    finally:
        # With OpenMP (torch's CPU wheels) the count set above belongs to each worker thread; a
        # build whose thread count is process-wide gets the caller's count back here.
        torch.set_num_threads(threads)
