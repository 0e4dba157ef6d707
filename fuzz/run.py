"""Run one fuzz target under atheris (coverage-guided), from its seed corpus.

    python fuzz/run.py TARGET [libFuzzer options...]      e.g. -max_total_time=60 -runs=100000

TARGET is one of fuzz/targets.py's: idx, image, checkpoint, config, sweep, api. The seeds are
fuzz/corpus/TARGET/; new inputs that reach new code go to a temporary folder, not the
repository. An input that ends in anything but a result or the project's own one-line error
stops the run and is written to crash-*; make it a regression test in tests/test_fuzz.py.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    import atheris

    if len(sys.argv) < 2:
        sys.exit(__doc__)
    name, options = sys.argv[1], sys.argv[2:]
    sys.path.insert(0, str(HERE))
    with atheris.instrument_imports(include=["mnist_mlp"]):
        import mnist_mlp.checkpoint
        import mnist_mlp.config
        import mnist_mlp.idx
        import mnist_mlp.images
        import mnist_mlp.learn
        import mnist_mlp.predict
        import mnist_mlp.serve
        import mnist_mlp.serve.learn_routes
        import mnist_mlp.serve.routes
        import mnist_mlp.sweep.spec  # noqa: F401
    from targets import TARGETS

    from mnist_mlp.errors import MlpError

    if name not in TARGETS:
        sys.exit(f"unknown target {name!r}; choose one of {', '.join(TARGETS)}")
    function = TARGETS[name]

    def one(data: bytes) -> None:
        try:
            function(data)
        except MlpError as exc:
            if "\n" in str(exc):
                raise AssertionError(f"an error of more than one line: {exc!r}") from None

    corpus = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
    for seed in (HERE / "corpus" / name).glob("*"):
        shutil.copy(seed, corpus)
    # memory and time per input bounded; -rss_limit_mb stops the run where memory grows past it
    atheris.Setup([sys.argv[0], "-rss_limit_mb=2048", "-timeout=20", *options, str(corpus)], one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
