"""How much memory a training run needs, checked before anything is allocated."""

from __future__ import annotations

import dataclasses
import itertools
import os

from mnist_mlp import model
from mnist_mlp.config import Config
from mnist_mlp.errors import ConfigError


def memory_estimate(config: Config) -> dict[str, int]:
    """Bytes a training run of ``config`` holds at its peak, by part (an estimate, within ~20%).

    Returns
    -------
    dict
        ``weights``: parameters, optimiser state and one weight-sized scratch buffer (3 sets);
        ``batch``: a batch's activations, dropout masks and gradients, and evaluation's larger
        batches; ``data``: the uint8 images of the dataset (60,000 + 10,000 of 784 bytes).
    """
    sizes = model.layer_sizes(config.model.hidden)
    n_params = sum(a * b + b for a, b in itertools.pairwise(sizes))
    width = sum(sizes)
    return {
        "weights": 4 * 3 * n_params,
        "batch": 4 * (3 * config.training.batch_size * width + 2 * 2500 * width),
        "data": 70000 * model.N_INPUTS,
    }


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation on this machine (None where unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(config: Config, available: int | None = None) -> None:
    """Refuse, before allocating anything, a config whose run will not fit in memory.

    Raises
    ------
    ConfigError
        Naming the key that asks for the most, the estimate and what is available.
    """
    available = available_memory() if available is None else available
    parts = memory_estimate(config)
    need = sum(parts.values())
    if available is None or need <= available:
        return
    # The layers are to blame if even a batch of one would not fit; else the batch size.
    one = dataclasses.replace(config, training=dataclasses.replace(config.training, batch_size=1))
    key, value = (
        ("model.hidden", config.model.hidden)
        if sum(memory_estimate(one).values()) > available
        else ("training.batch_size", config.training.batch_size)
    )
    raise ConfigError(
        f"{key}={value}: training would need about {_size(need)} of memory (weights and optimiser "
        f"state {_size(parts['weights'])}, batch buffers {_size(parts['batch'])}), but "
        f"{_size(available)} is available; choose a smaller {key}"
    )


def _size(n: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
