"""How checkpoints fare on digits as users make them, through `mlp predict`'s preparation.

    python scripts/own_digits.py CKPT [CKPT ...] [--photos 300] [--json]

The same fixed set of images for every checkpoint (each a committee if given as A.npz+B.npz):
MNIST test digits as phone photos of ink on paper (``--photos`` of them), the ten digits drawn
with pens of 10 widths on large canvases, and the ten digits in every DejaVu font the machine
has (``tests/imagegen.py`` makes them all, seeded). Each image is prepared as `mlp predict`
prepares it, once, and every checkpoint classifies the same 28x28 inputs: accuracy per kind.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def images_of_users(photos: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Kind -> (pixels (n, 28, 28) float32 in [0, 1] as prepared, labels (n,))."""
    import imagegen

    from mnist_mlp import data, images

    _, (test_x, test_y) = data.load_arrays("mnist", progress=False, flatten=False)
    rng = np.random.default_rng(0)
    made: dict[str, list] = {"photos": [], "drawn": [], "fonts": []}
    for i in range(photos):
        made["photos"].append((imagegen.photo_like(test_x[i], rng), int(test_y[i])))
    for digit in range(10):
        for width in np.linspace(8, 80, 10).astype(int):
            made["drawn"].append((imagegen.drawn(digit, int(width), rng=rng), digit))
        for font in imagegen.FONTS:
            made["fonts"].append((imagegen.font_digit(digit, font), digit))
    out = {}
    for kind, pairs in made.items():
        pixels = []
        for image, _ in pairs:
            buf = io.BytesIO()
            image.save(buf, "PNG")
            pixels.append(images.prepare(buf.getvalue(), kind).pixels)
        out[kind] = (np.stack(pixels), np.array([label for _, label in pairs]))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", help="A.npz, or A.npz+B.npz for a committee")
    parser.add_argument("--photos", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from mnist_mlp.predict import Predictor

    sets = images_of_users(args.photos)
    rows = []
    for name in args.checkpoints:
        members = name.split("+")
        predictor = Predictor(members if len(members) > 1 else members[0])
        row: dict = {"checkpoint": name}
        for kind, (pixels, labels) in sets.items():
            predicted = predictor.probabilities(pixels).argmax(axis=1)
            row[kind] = float(np.mean(predicted == labels))
            row[f"{kind}_n"] = len(labels)
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    kinds = list(sets)
    print(f"{'checkpoint':<60}" + "".join(f"{k + f' ({len(sets[k][1])})':>16}" for k in kinds))
    for row in rows:
        print(f"{row['checkpoint'][-60:]:<60}" + "".join(f"{100 * row[k]:15.1f}%" for k in kinds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
