"""The fuzz targets (fuzz/targets.py): every crash found is replayed, and each target runs for a
few seconds, coverage-guided under atheris where it is installed, on hypothesis otherwise.

The rule: any input ends in a result or the project's own one-line error, never another
exception. ``make fuzz`` runs each target for longer.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"
sys.path.insert(0, str(FUZZ))

from targets import TARGETS  # noqa: E402

from mnist_mlp.errors import MlpError  # noqa: E402

SECONDS = float(os.environ.get("MNIST_MLP_FUZZ_SECONDS", "4"))
REGRESSIONS = sorted((FUZZ / "regressions").glob("*/*"))


def _holds(name: str, data: bytes) -> None:
    try:
        TARGETS[name](data)
    except MlpError as exc:
        assert "\n" not in str(exc), f"{name}: an error of more than one line: {exc!r}"


@pytest.mark.parametrize(
    "path", REGRESSIONS, ids=[f"{p.parent.name}/{p.name}" for p in REGRESSIONS]
)
def test_every_crash_found_stays_fixed(path):
    _holds(path.parent.name, path.read_bytes())


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_a_bounded_fuzz_run(name, tmp_path):
    if name == "api":
        pytest.importorskip("fastapi", reason="the serve extra is not installed")
    try:
        import atheris
    except ImportError:
        atheris = None
    if atheris is None:  # hypothesis: random bytes and the seeds, without coverage feedback
        from hypothesis import HealthCheck, given, settings
        from hypothesis import strategies as st

        seeds = [p.read_bytes() for p in (FUZZ / "corpus" / name).glob("*")]
        strategy = st.one_of(
            st.binary(max_size=4096),
            st.sampled_from(seeds).flatmap(
                lambda seed: st.binary(max_size=64).map(lambda junk: seed[: len(seed) // 2] + junk)
            ),
        )

        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
        @given(strategy)
        def run(data):
            _holds(name, data)

        run()
        return
    out = subprocess.run(
        [
            sys.executable,
            str(FUZZ / "run.py"),
            name,
            f"-max_total_time={SECONDS:g}",
            "-print_final_stats=1",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=SECONDS + 120,
    )
    crashes = list(tmp_path.glob("crash-*"))
    assert out.returncode == 0 and not crashes, (
        f"{name}: an input broke the rule; it is in {crashes}; make it a regression in "
        f"fuzz/regressions/{name}/\n{out.stderr[-3000:]}"
    )
    done = re.search(r"#(\d+)\s+DONE\s+cov: (\d+)", out.stderr)
    assert done, out.stderr[-2000:]
    print(f"fuzz {name}: {done.group(1)} executions, coverage {done.group(2)} edges")
