"""Functions that tests/test_isolation.py runs in child processes (importable by name there)."""

import os
import signal
import time


def returns(payload, report):
    return {"status": "ok", "echo": payload["x"] * 2}


def reports_then_sleeps(payload, report):
    report({"step": 1})
    report({"step": 2})
    time.sleep(payload["seconds"])
    return {"status": "ok"}


def raises(payload, report):
    raise ValueError("bad things")


def allocates(payload, report):
    import torch

    return {"status": "ok", "n": torch.empty(payload["numbers"]).numel()}


def kills_itself(payload, report):
    print("last words", flush=True)
    os.kill(os.getpid(), payload["signal"])


def exits(payload, report):
    print("exiting on purpose", flush=True)
    os._exit(7)
