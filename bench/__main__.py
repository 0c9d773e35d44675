"""``python -m bench``: ours against distribution, side by side, on this machine.

Cases alternate A/B/A/B over several repetitions; the table shows medians and ours/distribution
ratios; everything is written to bench/results/<timestamp>.json as well.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from pathlib import Path

from bench import cases, limits, load
from bench.client import fresh_content, random_file
from bench.servers import (
    PssSampler,
    Server,
    cpu_seconds,
    peak_rss,
    peak_rss_reset,
    start_distribution,
    start_ours,
)

MIB = 1024 * 1024
GB = 1e9


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--workdir", default="/tmp/registry-bench", help="scratch folder")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each case")
    parser.add_argument(
        "--docker-reps",
        type=int,
        default=5,
        help="repetitions of the docker push/pull case (dockerd's own time varies by ±15 %%)",
    )
    parser.add_argument("--blob-mib", type=int, default=1024, help="size of the big blob")
    parser.add_argument(
        "--big-mib", type=int, default=5120, help="blob for the flat-RSS check (0: skip)"
    )
    parser.add_argument("--seconds", type=int, default=4, help="duration of each wrk run")
    parser.add_argument(
        "--skip", default="", help="comma list of: limits,push,pull,small,docker,rss"
    )
    parser.add_argument("--server-env", default="", help="extra env for ours: K=V,K=V")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    extra_env = dict(kv.split("=", 1) for kv in filter(None, args.server_env.split(",")))
    results: dict[str, object] = {"machine": machine(), "args": vars(args), "ours_env": extra_env}
    samples: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))

    if "limits" not in skip:
        print("measuring machine limits ...", flush=True)
        results["limits"] = limits.measure(str(workdir))

    blob = str(workdir / f"blob-{args.blob_mib}MiB")
    digest = random_file(blob, args.blob_mib * MIB)
    size = args.blob_mib * MIB
    servers = [start_ours(workdir, extra_env), start_distribution(workdir)]
    try:
        for rep in range(args.reps):
            order = servers if rep % 2 == 0 else servers[::-1]
            for server in order:
                print(f"rep {rep + 1}/{args.reps}: {server.name}", flush=True)
                run_rep(server, blob, digest, size, args, skip, samples[server.name])
        if "rss" not in skip and args.big_mib:
            big = str(workdir / f"blob-{args.big_mib}MiB")
            big_digest = random_file(big, args.big_mib * MIB)
            for server in servers:
                measure_rss(server, big, big_digest, samples[server.name], "rss_big")
    finally:
        for server in servers:
            server.stop()

    if "small" not in skip:
        open_servers = [
            start_ours(workdir, {**extra_env, "REGISTRY_ANONYMOUS_PULL": "true"}),
            start_distribution(workdir, auth=False),
        ]
        try:
            for rep in range(args.reps):
                for server in open_servers if rep % 2 == 0 else open_servers[::-1]:
                    print(f"rep {rep + 1}/{args.reps}: {server.name} without auth", flush=True)
                    small_requests(server, args.seconds, samples[server.name], auth=False)
        finally:
            for server in open_servers:
                server.stop()

    if "docker" not in skip:
        docker_case(workdir, args.docker_reps, extra_env, samples)

    results["samples"] = samples
    table = summarise(samples, results.get("limits"))
    results["table"] = table
    out = Path(__file__).parent / "results" / time.strftime("%Y%m%d-%H%M%S.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print_table(table, results.get("limits"))
    settings = "".join(f", {key}={value}" for key, value in extra_env.items())
    print(f"ours: python -m registry, defaults{settings}")
    print(f"\nJSON: {out}")
    return 0


def timed(
    sample: dict[str, list[float]], key: str, function: Callable[[], float], size: int
) -> None:
    seconds = function()
    sample[key].append(size / seconds / GB)


def run_rep(
    server: Server,
    blob: str,
    digest: str,
    size: int,
    args: argparse.Namespace,
    skip: set[str],
    sample: dict[str, list[float]],
) -> None:
    if "push" not in skip:
        # new content for each push, read into the page cache (the pull cases drop it)
        digest = fresh_content(blob)  # the pulls below fetch this one
        peak_rss_reset(server.pid)
        cases.quiet_disk()
        with PssSampler(server.pid) as pss:
            timed(
                sample,
                "push_monolithic_GBps",
                lambda: cases.push_monolithic(server, blob, digest),
                size,
            )
        record_rss(sample, "rss_push", server, pss)
        chunked = fresh_content(blob)
        cases.quiet_disk()
        timed(
            sample,
            "push_chunked_16MiB_GBps",
            lambda: cases.push_chunked(server, blob, chunked),
            size,
        )
    if "pull" not in skip:
        if drop_caches():  # cold: the blob comes from disk for both servers
            seconds, received = cases.pull(server, digest, clients=1)
            sample["pull_cold_1_client_GBps"].append(received / seconds / GB)
        cases.pull(server, digest, clients=1)  # warm: from the page cache for both
        peak_rss_reset(server.pid)
        used = cpu_seconds(server.pid)
        with PssSampler(server.pid) as pss:
            seconds, received = cases.pull(server, digest, clients=1)
        sample["pull_1_client_GBps"].append(received / seconds / GB)
        sample["pull_1_client_server_cpu_s_per_GiB"].append(per_gib(server, used, received))
        record_rss(sample, "rss_pull", server, pss)
        used = cpu_seconds(server.pid)
        seconds, received = cases.pull(server, digest, clients=4)
        sample["pull_4_clients_GBps"].append(received / seconds / GB)
        sample["pull_4_clients_server_cpu_s_per_GiB"].append(per_gib(server, used, received))
    if "small" not in skip:
        small_requests(server, args.seconds, sample)


def per_gib(server: Server, cpu_before: float, size: int) -> float:
    """The server's CPU seconds since ``cpu_before``, per GiB of ``size``."""
    return (cpu_seconds(server.pid) - cpu_before) / (size / (1024 * MIB))


def small_requests(
    server: Server, seconds: int, sample: dict[str, list[float]], auth: bool = True
) -> None:
    """Small requests at concurrency 1, 16 and 64: wrk, and the asyncio client for HEAD.

    GET manifest is measured by both load generators, so their agreement shows in the table.
    """
    layer, manifest = cases.push_small_image(server)
    accept = {"Accept": cases.OCI_MANIFEST}
    credentials = {"Authorization": cases.basic_authorization()} if auth else {}
    suffix = "" if auth else "_noauth"
    cases_run: list[tuple[str, str, str, dict[str, str], bytes | None]] = [
        ("head_blob", "HEAD", f"/v2/bench/small/blobs/{layer}", {}, None),
        ("get_manifest", "GET", "/v2/bench/small/manifests/latest", accept, None),
    ]
    if auth:
        put_headers = {"Content-Type": cases.OCI_MANIFEST}
        cases_run.insert(0, ("ping", "GET", "/v2/", {}, None))
        cases_run.append(
            ("put_manifest", "PUT", "/v2/bench/small/manifests/latest", put_headers, manifest)
        )
    for connections in (1, 16, 64) if auth else (16, 64):
        for name, method, path, headers, body in cases_run:
            key = f"{name}{suffix}_c{connections}"
            if method == "HEAD":
                figures = load.run(
                    server.port, method, path, {**headers, **credentials}, connections, seconds
                )
            else:
                figures = cases.wrk(server, method, path, connections, seconds, headers, body, auth)
            for figure, value in figures.items():
                sample[f"{key}_{figure}"].append(value)
            if name == "get_manifest":
                check = load.run(
                    server.port, method, path, {**headers, **credentials}, connections, seconds
                )
                sample[f"{key}_rps_asyncio_client"].append(check["rps"])


def drop_caches() -> bool:
    """Empty the page cache (needs root); False where that is not allowed."""
    try:
        cases.quiet_disk()
        with open("/proc/sys/vm/drop_caches", "w") as file:
            file.write("3")
        return True
    except OSError:
        return False


def measure_rss(
    server: Server, blob: str, digest: str, sample: dict[str, list[float]], key: str
) -> None:
    print(f"{server.name}: peak RSS with a big blob ...", flush=True)
    peak_rss_reset(server.pid)
    with PssSampler(server.pid) as pss:
        cases.push_monolithic(server, blob, digest, repo="bench/big")
        cases.pull(server, digest, repo="bench/big")
    record_rss(sample, f"{key}_push_pull", server, pss)


def record_rss(sample: dict[str, list[float]], key: str, server: Server, pss: PssSampler) -> None:
    """Peak RSS of the largest process since the last reset, and the sampled peak PSS summed
    over all the server's processes (shared pages counted once)."""
    sample[f"{key}_MiB"].append(peak_rss(server.pid) / MIB)
    sample[f"{key.replace('rss', 'pss')}_all_processes_MiB"].append(pss.peak / MIB)


def docker_case(
    workdir: Path, reps: int, extra_env: dict[str, str], samples: dict[str, dict[str, list[float]]]
) -> None:
    docker = cases.DockerCli(workdir)
    saved = docker.build("bench-image:5x100", layers=5, layer_size=100 * MIB)
    for rep in range(reps):
        starts: list[Callable[[Path], Server]] = [
            lambda w: start_ours(w, extra_env),
            start_distribution,
        ]
        for start in starts if rep % 2 == 0 else starts[::-1]:
            server = start(workdir)  # an empty data folder each time: every layer is sent
            try:
                print(f"docker rep {rep + 1}/{reps}: {server.name}", flush=True)
                with PssSampler(server.pid) as pss:  # three layers at a time: concurrent uploads
                    push, pull, push_cpu, dockerd_cpu = docker.push_pull(
                        server, saved, "bench-image:5x100", partial(cpu_seconds, server.pid)
                    )
                sample = samples[server.name]
                sample["docker_push_s"].append(push)
                sample["docker_push_server_cpu_s"].append(push_cpu)
                sample["docker_push_dockerd_cpu_s"].append(dockerd_cpu)
                sample["docker_pull_s"].append(pull)
                record_rss(sample, "rss_docker_push_pull", server, pss)
            finally:
                server.stop()


def summarise(
    samples: dict[str, dict[str, list[float]]], machine_limits: object
) -> list[dict[str, object]]:
    rows = []
    for key in samples.get("ours", {}):
        ours = statistics.median(samples["ours"][key])
        theirs_list = samples.get("distribution", {}).get(key)
        theirs = statistics.median(theirs_list) if theirs_list else None
        rows.append(
            {
                "case": key,
                "ours": ours,
                "distribution": theirs,
                "ratio": ours / theirs if theirs else None,
                "n": len(samples["ours"][key]),
            }
        )
    return rows


def print_table(table: list[dict[str, object]], machine_limits: object) -> None:
    if isinstance(machine_limits, dict):
        print("\nmachine limits (GB/s):")
        for name, value in machine_limits.items():
            print(f"  {name:32} {value / GB:8.2f}")
    print(f"\n{'case':40} {'ours':>10} {'distribution':>13} {'ours/dist':>10}")
    for row in table:
        theirs = row["distribution"]
        ratio = row["ratio"]
        print(
            f"{row['case']:40} {row['ours']:10.3f} "
            f"{theirs if theirs is None else format(theirs, '13.3f'):>13} "
            f"{'' if ratio is None else format(ratio, '10.2f'):>10}"
        )
    print("(GBps: GB/s; rps: requests/s; ms: latency; s: seconds; MiB: peak RSS; medians)")


def machine() -> dict[str, object]:
    cpu = subprocess.run(
        ["sh", "-c", "grep -m1 'model name' /proc/cpuinfo"], capture_output=True, text=True
    )
    return {
        "cpu": cpu.stdout.split(":", 1)[-1].strip(),
        "cores": len(__import__("os").sched_getaffinity(0)),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


if __name__ == "__main__":
    sys.exit(main())
