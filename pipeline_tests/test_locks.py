"""The one-writer lock: a second writer waits for the first, or gives up after its timeout."""

import threading
import time

import pytest

from pipeline.locks import LockTimeout, file_lock


def test_one_writer_at_a_time_the_second_waits(tmp_path):
    lock = tmp_path / ".x.lock"
    order, waited = [], []
    with file_lock(lock):
        def second():
            with file_lock(lock, on_wait=waited.append):
                order.append("second")

        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.3)
        order.append("first done")
    thread.join(5)
    assert order == ["first done", "second"] and "waiting for the writer" in waited[0]
    with file_lock(lock), pytest.raises(LockTimeout, match="held the lock"):
        with file_lock(lock, timeout_s=0.2):
            pass
