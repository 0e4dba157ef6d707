"""Measure `mlp serve` on this machine: start-up, latency, and a bounded load on 127.0.0.1.

    python scripts/serve_bench.py runs/default/checkpoint.npz
        [--requests 3000] [--clients 32] [--json]

- start-up: from starting `mlp serve` to the first answer of POST /api/predict;
- latency: sequential requests on one kept-alive connection, median and 99th percentile, for
  a 28x28 PNG (an MNIST test digit) and a 1000x1000 JPEG photo of one (dark ink on lit paper);
  and through the Open Inference Protocol (POST /v2/models/mnist_mlp/infer): one digit's
  pixels as JSON, and a batch of 100 in the binary tensor extension (digits a second);
- load: --requests requests from --clients concurrent clients, cycling over 20 images whose
  right answers were taken one at a time first: errors, wrong answers, and the server's
  resident memory after a warm-up and at the end.

Needs the serve extra, httpx, and MNIST in the cache (MNIST_MLP_MIRROR or `mlp download`).
All traffic goes to 127.0.0.1 and stops after the counts given.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, ImageFilter


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def png_bytes(digit: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(digit).save(buf, "PNG")
    return buf.getvalue()


def photo_bytes(digit: np.ndarray, rng: np.random.Generator, size: int = 1000) -> bytes:
    """The digit as dark ink on unevenly lit, noisy paper, size x size, JPEG."""
    ink = (
        np.asarray(Image.fromarray(digit).resize((600, 600), Image.Resampling.BICUBIC), np.float32)
        / 255
    )
    paper = np.full((size, size), 0.8, np.float32)
    paper += np.linspace(-0.08, 0.08, size, dtype=np.float32)[None, :]
    top, left = rng.integers(50, size - 650, 2)
    a = np.zeros_like(paper)
    a[top : top + 600, left : left + 600] = np.clip(ink, 0, 1) * 0.85
    gray = paper * (1 - a) + 0.1 * a + rng.normal(0, 0.02, paper.shape).astype(np.float32)
    rgb = np.repeat(np.clip(gray, 0, 1)[..., None], 3, axis=2) * np.array(
        [1.0, 0.97, 0.9], np.float32
    )
    image = Image.fromarray((rgb * 255).astype(np.uint8), "RGB").filter(
        ImageFilter.GaussianBlur(0.8)
    )
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def oip_bodies(test_images: np.ndarray) -> dict[str, tuple[bytes, dict, int]]:
    """The v2 infer requests timed: (body, headers, digits) of one digit as JSON and of 100
    digits in the binary extension."""
    pixels = test_images[0].reshape(-1).astype(float).tolist()
    one = {
        "inputs": [{"name": "pixels", "shape": [1, 784], "datatype": "FP32", "data": pixels}],
        "outputs": [{"name": "label"}],
    }
    raw = test_images[:100].reshape(100, 784).astype("<f4").tobytes()
    tensor = {"name": "pixels", "shape": [100, 784], "datatype": "FP32"}
    tensor["parameters"] = {"binary_data_size": len(raw)}
    wanted = [{"name": "label", "parameters": {"binary_data": True}}]
    head = json.dumps({"inputs": [tensor], "outputs": wanted}).encode()
    binary = {"Inference-Header-Content-Length": str(len(head))}
    return {
        "v2_json_1": (json.dumps(one).encode(), {"Content-Type": "application/json"}, 1),
        "v2_binary_100": (head + raw, binary, 100),
    }


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> int:
    import httpx

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--latency-requests", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from mnist_mlp import checkpoint, data

    ckpt = checkpoint.load(args.checkpoint)
    test = data.for_config(ckpt.config, progress=False).test
    rng = np.random.default_rng(0)
    digits = test.images[:10].reshape(-1, 28, 28)
    small = [png_bytes(d) for d in digits]
    photos = [photo_bytes(d, rng) for d in digits]

    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mnist_mlp", "serve", "-c", args.checkpoint, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = proc.stdout.readline().split(" at ")[1].split()[0].rstrip("/")
        client = httpx.Client(base_url=url, timeout=30)
        first = client.post("/api/predict", content=small[0], headers={"Content-Type": "image/png"})
        startup = time.perf_counter() - started
        assert first.status_code == 200, first.text

        def post(c, body, kind):
            return c.post("/api/predict", content=body, headers={"Content-Type": kind})

        latency = {}
        for name, bodies, kind in (
            ("png28", small, "image/png"),
            ("photo1000", photos, "image/jpeg"),
        ):
            times = []
            for i in range(args.latency_requests):
                t = time.perf_counter()
                r = post(client, bodies[i % len(bodies)], kind)
                times.append(time.perf_counter() - t)
                assert r.status_code == 200, r.text
            latency[name] = {
                "median_ms": 1000 * statistics.median(times),
                "p99_ms": 1000 * percentile(times, 99),
                "bytes": int(np.mean([len(b) for b in bodies])),
            }

        for name, (body, headers, n) in oip_bodies(test.images).items():
            times = []
            for _ in range(args.latency_requests):
                t = time.perf_counter()
                r = client.post("/v2/models/mnist_mlp/infer", content=body, headers=headers)
                times.append(time.perf_counter() - t)
                assert r.status_code == 200, r.text
            latency[name] = {
                "median_ms": 1000 * statistics.median(times),
                "p99_ms": 1000 * percentile(times, 99),
                "bytes": len(body),
                "digits_per_s": n / statistics.median(times),
            }

        bodies = [(b, "image/png") for b in small] + [(b, "image/jpeg") for b in photos]
        expected = [post(client, b, k).json()["prediction"] for b, k in bodies]
        rss_warm = rss_mb(proc.pid)
        per_client = args.requests // args.clients

        def worker(k):
            errors = wrong = 0
            with httpx.Client(base_url=url, timeout=60) as c:
                for i in range(per_client):
                    j = (k * 7 + i) % len(bodies)
                    try:
                        r = post(c, *bodies[j])
                    except httpx.HTTPError:
                        errors += 1
                        continue
                    if r.status_code != 200:
                        errors += 1
                    elif r.json()["prediction"] != expected[j]:
                        wrong += 1
            return errors, wrong

        t = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            results = list(pool.map(worker, range(args.clients)))
        load_s = time.perf_counter() - t
        rss_end = rss_mb(proc.pid)
        load = {
            "requests": per_client * args.clients,
            "clients": args.clients,
            "seconds": load_s,
            "requests_per_s": per_client * args.clients / load_s,
            "errors": sum(e for e, _ in results),
            "wrong": sum(w for _, w in results),
            "rss_after_warmup_mb": rss_warm,
            "rss_end_mb": rss_end,
        }
        client.close()
    finally:
        proc.terminate()
        proc.wait(10)
    result = {"startup_to_first_answer_s": startup, "latency": latency, "load": load}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"start-up to first answer   {startup:.2f} s")
    for name, v in latency.items():
        print(
            f"latency {name:<14}    median {v['median_ms']:.1f} ms, p99 {v['p99_ms']:.1f} ms "
            f"({v['bytes'] / 1000:.1f} kB bodies"
            + (f", {v['digits_per_s']:.0f} digits/s)" if "digits_per_s" in v else ")")
        )
    print(
        f"load: {load['requests']} requests from {load['clients']} clients in "
        f"{load['seconds']:.1f} s "
        f"({load['requests_per_s']:.0f}/s): {load['errors']} errors, {load['wrong']} wrong "
        "answers; "
        f"server RSS {load['rss_after_warmup_mb']:.0f} MB after warm-up, {load['rss_end_mb']:.0f} "
        "MB at the end"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
