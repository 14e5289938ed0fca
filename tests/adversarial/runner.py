"""A process that runs `synth` commands, each in a forked child with limits.

Started once by ``tests/test_adversarial.py``; it imports synthdsl, torch and timm once and
then, for each request read from stdin (one JSON object per line: ``argv``, ``cwd``,
``env``, ``seconds``, ``memory``), forks a child that sets its address-space limit, moves
to ``cwd``, sends its output to ``cwd/../stdout`` and ``stderr`` files, and runs the CLI's
``run(argv)``. The parent kills a child that outlives ``seconds`` and answers with one JSON
line: the exit status, the signal that ended it, the wall time and the child's peak memory.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time


def _child(req: dict) -> None:
    os.setsid()
    limit = int(req["memory"])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    cpu = int(req["seconds"]) + 5
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    os.chdir(req["cwd"])
    os.environ.update(req.get("env", {}))
    out = os.open(req["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    err = os.open(req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(err, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1, encoding="utf-8")  # as Python sets them up
    sys.stderr = os.fdopen(2, "w", buffering=1, encoding="utf-8", errors="backslashreplace")
    rc = 0
    try:
        from synthdsl.cli.app import run

        rc = run(req["argv"])
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
    except BaseException as e:  # noqa: BLE001 - reported as a crash, never hidden
        import traceback

        traceback.print_exc()
        print(f"runner: uncaught {type(e).__name__}", file=sys.stderr)
        rc = 99
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc if isinstance(rc, int) else 1)


def _serve() -> None:
    import torch

    torch.set_num_threads(1)
    import timm  # noqa: F401 - loaded once, before the children fork
    import synthdsl.cli.app  # noqa: F401
    import synthdsl.pipeline  # noqa: F401
    import synthdsl.train.run  # noqa: F401

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        start = time.monotonic()
        pid = os.fork()
        if pid == 0:
            _child(req)
        deadline = start + float(req["seconds"])
        timed_out = False
        while True:
            done, status, usage = os.wait4(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                timed_out = True
                os.killpg(pid, signal.SIGKILL)
                done, status, usage = os.wait4(pid, 0)
                break
            time.sleep(0.005)
        print(json.dumps({
            "rc": os.waitstatus_to_exitcode(status),
            "timed_out": timed_out,
            "wall": time.monotonic() - start,
            "maxrss": usage.ru_maxrss * 1024,
        }), flush=True)


if __name__ == "__main__":
    _serve()
