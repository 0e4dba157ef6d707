"""A worker process of :func:`mnist_mlp.sweep.sweep`: ``python -m mnist_mlp.sweep SPEC FOLDER
STORAGE RUN_CAP SEED``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mnist_mlp import callbacks, run
from mnist_mlp.errors import MlpError
from mnist_mlp.sweep import _new_seed
from mnist_mlp.sweep.spec import load_spec
from mnist_mlp.sweep.study import storage_url
from mnist_mlp.sweep.worker import Worker


def _worker_main(argv: list[str]) -> int:
    """A worker process of :func:`sweep` (``python -m mnist_mlp.sweep SPEC FOLDER STORAGE RUN_CAP
    REPORT_TO SEED``; REPORT_TO: trackers, comma-separated)."""
    spec_path, folder_arg, storage, cap, report_to, seed = argv
    spec = load_spec(spec_path, int(cap), tuple(filter(None, report_to.split(","))))
    folder = Path(folder_arg)
    flag = callbacks.StopFlag()
    try:
        with callbacks.stop_on_sigint(flag):
            Worker(
                spec,
                folder,
                storage_url(storage or None, folder),
                int(seed) if seed else _new_seed(),
            ).run(flag)
    except (KeyboardInterrupt, run.TrainingInterrupted):
        return 130
    except MlpError as exc:
        print(f"worker {os.getpid()}: {exc}", file=sys.stderr)
        return 1
    return 130 if flag.requested else 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
