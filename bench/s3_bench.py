"""``python -m bench.s3_bench``: push and pull of one big blob on S3 vs the filesystem.

Three servers, one after the other, each on a fresh local S3 endpoint (moto server, so one
run's objects do not weigh on the next): ours on the filesystem, ours on S3, and
distribution (Debian's ``docker-registry``) with its S3 driver on the same kind of endpoint.
Redirects are off for both S3 servers, so pulls stream through the registry and the figures
compare the registries rather than the endpoint. One run; figures in GB/s of blob bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import httpx

from bench import cases
from bench.client import random_file
from bench.servers import Server, start_distribution, start_moto, start_ours

MIB = 1024 * 1024
GB = 1e9
BUCKET = "bench"
KEYS = {"AWS_ACCESS_KEY_ID": "bench-key", "AWS_SECRET_ACCESS_KEY": "bench-secret"}


def ours_s3_env(url: str) -> dict[str, str]:
    return {
        **KEYS,
        "REGISTRY_STORAGE__BACKEND": "s3",
        "REGISTRY_STORAGE__S3__BUCKET": BUCKET,
        "REGISTRY_STORAGE__S3__ENDPOINT_URL": url,
        "REGISTRY_STORAGE__S3__PATH_STYLE": "true",
    }


def distribution_s3(url: str) -> str:
    return (
        "  s3:\n"
        f"    accesskey: {KEYS['AWS_ACCESS_KEY_ID']}\n"
        f"    secretkey: {KEYS['AWS_SECRET_ACCESS_KEY']}\n"
        f"    region: us-east-1\n    regionendpoint: {url}\n    bucket: {BUCKET}\n"
        "    secure: false\n    v4auth: true\n"
        "  redirect:\n    disable: true\n"
    )


def measure(server: Server, blob: str, digest: str, size: int) -> dict[str, float]:
    push = cases.push_monolithic(server, blob, digest)
    pull, received = cases.pull(server, digest, clients=1)
    assert received == size
    return {"push_gbps": size / push / GB, "pull_gbps": size / pull / GB}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.s3_bench", description=__doc__)
    parser.add_argument("--workdir", default="/tmp/registry-s3-bench")
    parser.add_argument("--blob-mib", type=int, default=1024)
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    size = args.blob_mib * MIB
    blob = str(workdir / f"blob-{args.blob_mib}MiB")
    digest = random_file(blob, size)
    results: dict[str, dict[str, float]] = {}
    for name in ("ours-filesystem", "ours-s3", "distribution-s3"):
        moto, url = start_moto(workdir)
        server: Server | None = None
        try:
            httpx.put(f"{url}/{BUCKET}", timeout=10).raise_for_status()
            if name == "ours-filesystem":
                server = start_ours(workdir)
            elif name == "ours-s3":
                os.environ.update(KEYS)
                server = start_ours(workdir, ours_s3_env(url))
            else:
                server = start_distribution(workdir, storage=distribution_s3(url))
            print(f"{name} ...", flush=True)
            results[name] = measure(server, blob, digest, size)
            print(f"  {results[name]}", flush=True)
        finally:
            if server is not None:
                server.stop()
            moto.terminate()
            try:
                moto.wait(timeout=15)
            except subprocess.TimeoutExpired:
                moto.kill()
    print(f"\n{'server':<18} {'push GB/s':>10} {'pull GB/s':>10}")
    for name, figures in results.items():
        print(f"{name:<18} {figures['push_gbps']:>10.3f} {figures['pull_gbps']:>10.3f}")
    out = Path(__file__).parent / "results" / time.strftime("s3-%Y%m%d-%H%M%S.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"blob_mib": args.blob_mib, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
