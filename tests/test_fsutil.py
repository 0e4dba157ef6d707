"""Writes that fail as a user's machine makes them fail: a full disk, a read-only file system, a
folder where a file should be. Each is one line naming the path, and nothing good is lost.

The full and read-only disks are real: small tmpfs file systems mounted for the test (which
needs root, as CI has; elsewhere the tests skip, saying so).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import require

from mnist_mlp.cli import main
from mnist_mlp.errors import WriteError
from mnist_mlp.fsutil import atomic_write

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def tmpfs(folder: Path, size: str, read_only: bool = False):
    require(
        os.geteuid() == 0 and shutil.which("mount") is not None,
        "a full or read-only disk is made by mounting a small tmpfs, which needs root",
    )
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def train_784_256_10(out: Path) -> list[str]:
    """mlp train's arguments for a run whose checkpoints are 1.6 MB each, into ``out``."""
    smoke = str(ROOT / "configs" / "smoke.yaml")
    overrides = ["model.hidden=[256]", "data.subset=0", "data.validation=16"]
    return [
        "train",
        "--config",
        smoke,
        "--out",
        str(out),
        "--quiet",
        *(arg for o in overrides for arg in ("--set", o)),
    ]


def test_a_full_disk_keeps_the_old_file_and_leaves_no_partial_one(tmp_path):
    with tmpfs(tmp_path / "disk", "64k") as disk:
        target = disk / "file.bin"
        atomic_write(target, b"old")
        with pytest.raises(WriteError) as info:
            atomic_write(target, b"x" * 200_000)
        assert str(info.value) == f"cannot write {target}: no space left on the device"
        assert target.read_bytes() == b"old"
        assert [p.name for p in disk.iterdir()] == ["file.bin"]  # no temporary file left


def test_a_read_only_disk_and_a_folder_in_the_way(tmp_path):
    with (
        tmpfs(tmp_path / "ro", "64k", read_only=True) as disk,
        pytest.raises(WriteError, match="the file system is read-only"),
    ):
        atomic_write(disk / "file.bin", b"x")
    (tmp_path / "folder.npz").mkdir()
    with pytest.raises(WriteError, match="it is a folder"):
        atomic_write(tmp_path / "folder.npz", b"x")
    with pytest.raises(WriteError, match="the folder does not exist"):
        atomic_write(tmp_path / "missing" / "file.bin", b"x")


def test_training_onto_a_full_disk_names_the_last_good_checkpoint(tiny_as_mnist, tmp_path):
    # 784-256-10: each checkpoint is 1.6 MB, and writing one takes that much again while its
    # temporary file and the old one coexist. 4 MB holds epoch 1's last.npz and checkpoint.npz,
    # not epoch 2's last.npz beside them.
    with tmpfs(tmp_path / "disk", "4m") as disk:
        out = disk / "run"
        result = CliRunner().invoke(main, train_784_256_10(out))
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output
        line = result.output.strip().splitlines()[-1]
        assert line == (
            f"Error: cannot write {out / 'last.npz'}: no space left on the device; the last "
            f"good checkpoint is {out / 'last.npz'} (epoch 1): make room, then resume with: mlp "
            f"train --resume {out / 'last.npz'}"
        )
        names = sorted(p.name for p in out.iterdir())
        # no partial file (curves.png: the plot extra draws the learning curves)
        assert set(names) - {"curves.png"} == {
            "checkpoint.npz",
            "config.yaml",
            "last.npz",
            "metrics.csv",
        }
        from mnist_mlp import checkpoint

        assert checkpoint.load(out / "last.npz").meta["epoch"] == 1  # whole, and loadable
        result = CliRunner().invoke(main, ["train", "--resume", str(out / "last.npz"), "--quiet"])
        assert "cannot write" in result.output  # the disk is still full: the same line again


def test_the_first_checkpoint_not_fitting_says_none_was_written(tiny_as_mnist, tmp_path):
    with tmpfs(tmp_path / "disk", "1m") as disk:
        out = disk / "run"
        result = CliRunner().invoke(main, train_784_256_10(out))
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert result.output.strip().endswith(
            f"cannot write {out / 'last.npz'}: no space left on the device; no checkpoint of this "
            f"run was written yet"
        )


def test_a_read_only_cache_says_where_to_point_it(tmp_path, monkeypatch, tiny_as_mnist):
    with tmpfs(tmp_path / "cache", "1m", read_only=True) as cache:
        monkeypatch.setenv("MNIST_MLP_HOME", str(cache))
        result = CliRunner().invoke(main, ["download", "--quiet"])
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert (
            f"cannot create the cache folder {cache / 'mnist'}: Read-only file system"
            in result.output
        )
    # a cache folder that exists but went read-only
    cache = tmp_path / "cache2"
    with tmpfs(cache, "1m"):
        (cache / "mnist").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(cache)], check=True)
        monkeypatch.setenv("MNIST_MLP_HOME", str(cache))
        result = CliRunner().invoke(main, ["download", "--quiet"])
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert (
            f"cannot fill the cache {cache / 'mnist'}: the file system is read-only; point "
            f"MNIST_MLP_HOME at a writable folder"
        ) in result.output


def test_paths_of_the_wrong_kind_are_one_line(tmp_path, random_checkpoint, tiny_as_mnist):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    (tmp_path / "x.onnx").write_text("x")
    cases = [
        (
            [
                "train",
                "--config",
                str(ROOT / "configs" / "smoke.yaml"),
                "--out",
                str(a_file / "run"),
            ],
            "a part of the path is a file, not a folder",
        ),
        (
            ["export", str(random_checkpoint), "--out", str(tmp_path / "x.onnx" / "y.onnx")],
            f"{tmp_path / 'x.onnx'}: a file is in the way",
        ),
        (["eval", str(tmp_path)], str(tmp_path)),
    ]
    for args, message in cases:
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, (args, result.output)
        assert "Traceback" not in result.output and message in result.output, (args, result.output)


def test_permission_denied_is_one_line(tmp_path, random_checkpoint):
    # Root may write anywhere: the writes run in a child process that drops to "nobody" first
    # (forked, so no program has to be executable by that user).
    import pwd

    require(os.geteuid() == 0, "permission denied is made by dropping root's privileges")
    nobody = pwd.getpwnam("nobody")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o755)  # root's: nobody may read, not write
    os.chmod(tmp_path, 0o755)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what each write said, then leave at once
        try:
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            lines = []
            try:
                atomic_write(locked / "file.bin", b"x")
            except WriteError as exc:
                lines.append(str(exc))
            result = CliRunner().invoke(
                main, ["export", str(random_checkpoint), "--out", str(locked / "m.onnx")]
            )
            lines.append(f"{result.exit_code} {result.output.strip()}")
            os.write(write, "\n".join(lines).encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as f:
        lines = f.read().splitlines()
    assert lines[0] == f"cannot write {locked / 'file.bin'}: permission denied"
    # (nobody may not even read the checkpoint here: pytest's folders are root's alone)
    assert lines[1].startswith("1 Error: ") and lines[1].endswith(": permission denied")
    assert not list(locked.iterdir())
