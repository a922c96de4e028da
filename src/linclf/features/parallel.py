"""A thread pool for block-wise numpy work: the k-means assignment and the feature encoding
(features/kmeans.py) spread their blocks over Python threads, each running single-threaded BLAS
(numpy releases the GIL in products and ufuncs; threadpoolctl sets the BLAS limit)."""
import contextlib
import os
import queue
import threading


def default_threads():
    """Threads `encode` and `kmeans` use by default: the CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class BlasLimit(contextlib.ExitStack):
    """Limit BLAS to one thread while Python threads share the work (no-op for one thread)."""

    def __init__(self, threads):
        super().__init__()
        if threads > 1:
            from threadpoolctl import threadpool_limits
            self.enter_context(threadpool_limits(limits=1, user_api="blas"))


def run_blocks(num_blocks, work, threads=None, done=None):
    """Run work(block, scratch) for each block in range(num_blocks) on `threads` threads (None:
    default_threads()), a scratch dict each. Blocks are handed out in order; done(block) runs in the
    calling thread as each finishes (in completion order). The first error is raised here."""
    threads = max(1, min(default_threads() if threads is None else int(threads), num_blocks))
    if threads == 1:
        scratch = {}
        for block in range(num_blocks):
            work(block, scratch)
            if done is not None:
                done(block)
        return
    lock = threading.Lock()
    counter = iter(range(num_blocks))
    finished = queue.Queue()
    failed = threading.Event()

    def worker():
        scratch = {}
        try:
            while not failed.is_set():
                with lock:
                    block = next(counter, None)
                if block is None:
                    return
                work(block, scratch)
                finished.put(block)
        except BaseException as error:  # noqa: BLE001 - re-raised in the calling thread
            failed.set()
            finished.put(error)

    pool = [threading.Thread(target=worker, name=f"linclf-blocks-{i}", daemon=True) for i in range(threads)]
    with BlasLimit(threads):
        for thread in pool:
            thread.start()
        error = None
        try:
            for _ in range(num_blocks):
                item = finished.get()
                if isinstance(item, BaseException):
                    error = item
                    break
                if done is not None:
                    done(item)
        finally:  # all blocks are done, or (an error, Ctrl-C) the workers stop after their current one
            failed.set()
            for thread in pool:
                thread.join()
    if error is not None:
        raise error
