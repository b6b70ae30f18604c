"""A cell function for tests/test_jobs.py: records its attempts, fails the first one on request."""
import json
import os
import time
from pathlib import Path


def attempt(folder: Path, fail_first: bool) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    count = folder / "attempts.txt"
    attempts = int(count.read_text()) + 1 if count.is_file() else 1
    count.write_text(str(attempts))
    start = time.time()
    time.sleep(1.0)   # long enough for jobs started together to overlap
    (folder / "span.json").write_text(json.dumps([start, time.time()]))
    if fail_first and attempts == 1:
        raise RuntimeError(f"{folder.name} failed on its first attempt")
    return {"pid": os.getpid(), "attempts": attempts, "start": start, "end": time.time()}
