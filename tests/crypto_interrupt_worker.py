"""Run by tests/test_crypto_interrupts.py in a subprocess under glibc's and CPython's
memory checkers: interrupt threaded decrypts (``get`` and ``get_range``) at random
points, then reuse freed memory and check nothing wrote into it afterwards.

Usage: ``python crypto_interrupt_worker.py SEED ROUNDS``; prints ``ok ...`` on success.
"""

from __future__ import annotations

import random
import signal
import sys
import threading
import time

from dcstore.backends.memory import MemoryBackend
from dcstore.crypto import EncryptedBackend, Keyring


def main(seed: int, rounds: int) -> None:
    rng = random.Random(seed)
    inner = MemoryBackend(f"interrupts-{seed}")
    enc = EncryptedBackend(inner, Keyring.generate("k"), segment_size=64 << 10, threads=4)
    data = rng.randbytes(8 << 20)
    enc.put("obj", data)
    main_thread = threading.main_thread().ident
    assert main_thread is not None
    interrupted = completed = 0
    for _ in range(rounds):
        timer = threading.Timer(
            rng.uniform(0, 0.03), signal.pthread_kill, (main_thread, signal.SIGINT)
        )
        done = False
        try:
            timer.start()
            if rng.random() < 0.5:
                assert enc.get("obj") == data
            else:
                start = rng.randrange(0, len(data) - 1)
                end = rng.randrange(start + 1, len(data))
                assert enc.get_range("obj", start, end) == data[start:end]
            done = True
            completed += 1
            timer.join()
        except KeyboardInterrupt:
            interrupted += not done
            timer.join()
            # Take over the memory a discarded output may have occupied, let the
            # pool threads finish, and check they wrote nothing into it.
            sentinels = [bytes([j]) * (1 << 20) for j in range(1, 17)]
            time.sleep(0.02)
            for j, block in enumerate(sentinels, start=1):
                assert block.count(bytes([j])) == len(block), "freed memory was written"
    enc.close()
    print(f"ok rounds={rounds} interrupted={interrupted} completed={completed}")


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
