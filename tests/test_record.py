"""`make record` (scripts/record.py) on real MNIST with nets of seconds: the committee as one
study, the student distilled from it, the report; killed half-way, the same command finishes the
rest and trains nothing twice."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mnist_mlp import checkpoint

ROOT = Path(__file__).resolve().parent.parent

SMALL = """\
data: {{subset: 5000, validation: 1000}}
model: {{hidden: [32]}}
training: {{epochs: {epochs}, batch_size: 128, lr: 0.1, momentum: 0.9, schedule: cosine{more}}}
"""

COMMITTEE = """\
base: small.yaml
method: grid
committee: true
metric: {name: val_acc, goal: maximize}
parameters:
  data.normalise:
    values: [{kind: none}, {kind: deslant}, {kind: width, width: 16}]
"""

# the teacher is set by record.py to the committee it has just trained
TAUGHT = ", teacher: [elsewhere], distill_temperature: 4, distill_weight: 0.5"


def _record(tmp_path, student_epochs: int = 4) -> list[str]:
    (tmp_path / "small.yaml").write_text(SMALL.format(epochs=4, more=""))
    (tmp_path / "committee.yaml").write_text(COMMITTEE)
    (tmp_path / "student.yaml").write_text(SMALL.format(epochs=student_epochs, more=TAUGHT))
    return [
        sys.executable,
        str(ROOT / "scripts" / "record.py"),
        "--folder",
        str(tmp_path / "record"),
        "--committee",
        str(tmp_path / "committee.yaml"),
        "--student",
        str(tmp_path / "student.yaml"),
    ]


def _started(cmd: list[str], env: dict, tmp_path) -> subprocess.Popen:
    """``cmd`` in its own process group, its output to a file (a pipe nobody reads fills up)."""
    with open(tmp_path / "first.log", "w") as log:
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True)


def _kill_when(proc: subprocess.Popen, path, log, timeout: float = 180) -> None:
    """SIGKILL ``proc`` and its children as soon as ``path`` exists (it must still be running)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)
    assert proc.poll() is None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.realdata
def test_record_killed_in_the_committee_finishes_and_trains_nothing_twice(real_env, tmp_path):
    cmd = _record(tmp_path)
    env = {**os.environ, "MNIST_MLP_HOME": str(real_env)}
    folder = tmp_path / "record"
    proc = _started(cmd, env, tmp_path)
    _kill_when(proc, folder / "committee" / "trials" / "1" / "metrics.csv", tmp_path / "first.log")
    first = folder / "committee" / "trials" / "0" / "checkpoint.npz"
    before = first.read_bytes()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert first.read_bytes() == before  # the member finished before the kill was kept
    summary = json.loads((folder / "committee" / "summary.json").read_text())
    members = summary["committee"]["members"]
    views = {checkpoint.load(m["checkpoint"]).config.data.normalise.kind for m in members}
    assert len(members) == 3 and views == {"none", "deslant", "width"}
    student = checkpoint.load(folder / "single" / "checkpoint.npz")
    assert student.config.training.teacher == [str(folder / "committee")]
    last = done.stdout.strip().splitlines()[-3:]
    assert last[0].startswith("committee of 3") and "test " in last[0]
    assert last[1].startswith("single (distilled)") and "test " in last[1]
    assert last[2].startswith("McNemar, single against committee: p = ")
    # run again: everything is there, nothing is trained, the same report
    stamps = {p: p.stat().st_mtime_ns for p in folder.rglob("*.npz")}
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*.npz")} == stamps
    assert again.stdout.strip().splitlines()[-3:] == last


@pytest.mark.realdata
def test_record_killed_in_the_student_resumes_it(real_env, tmp_path):
    cmd = _record(tmp_path, student_epochs=40)
    env = {**os.environ, "MNIST_MLP_HOME": str(real_env)}
    folder = tmp_path / "record"
    proc = _started(cmd, env, tmp_path)
    _kill_when(proc, folder / "single" / "last.npz", tmp_path / "first.log")
    cut = checkpoint.load(folder / "single" / "last.npz").meta["epoch"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"resuming {folder / 'single' / 'last.npz'} at epoch {cut + 1}" in done.stdout
    student = checkpoint.load(folder / "single" / "last.npz")
    assert cut < student.meta["epoch"] == student.config.training.epochs


@pytest.mark.realdata
def test_two_machines_share_the_committee_and_one_gathers_it(real_env, tmp_path):
    """The docs' recipe for several machines: each runs the committee's sweep on one shared
    study; one gathers the members' folders and runs record.py with the same storage, which
    finds the study done, teaches the student and reports all the members."""
    cmd = _record(tmp_path)
    env = {**os.environ, "MNIST_MLP_HOME": str(real_env)}
    storage = f"journal:{tmp_path / 'shared.journal'}"
    machines = [tmp_path / "a", tmp_path / "b"]
    sweep = [sys.executable, "-m", "mnist_mlp", "sweep", str(tmp_path / "committee.yaml")]
    sweeps = [
        subprocess.Popen(
            [*sweep, "--storage", storage, "--out", str(m / "committee")],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for m in machines
    ]
    assert [s.wait(timeout=300) for s in sweeps] == [0, 0]
    a, b = (m / "committee" / "trials" for m in machines)
    assert len(list(a.glob("*/checkpoint.npz")) + list(b.glob("*/checkpoint.npz"))) == 3
    for member in b.glob("*"):  # as rsync would bring them; then machine b is gone
        shutil.copytree(member, a / member.name, dirs_exist_ok=True)
    shutil.rmtree(machines[1])
    cmd[cmd.index("--folder") + 1] = str(machines[0])
    done = subprocess.run(
        [*cmd, "--storage", storage], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-3].startswith("committee of 3")
    teacher = checkpoint.load(machines[0] / "single" / "checkpoint.npz").config.training.teacher
    assert teacher == [str(machines[0] / "committee")]
