"""Driver soak: many short episodes with scripted roles through the real run driver on Ray.

    python benchmarks/driver.py [--episodes 10000] [--workers 2] [--in-flight 64] [--profile FILE]

Every role is the scripted double of tests/scripted_job.py (no engine), so what is measured is the driver
process itself: feeding items to the worker actors (`pipeline.run.drive`), receiving rows, the shard writer
and its journals, progress. Printed: the driver's resident memory after 1,000 episodes and at the end and
its peak (it must stay flat), and the driver's CPU time per episode (target: under 5 ms). `--profile`
runs the driver under cProfile and prints the top entries (the driver loop runs on the main thread).
The last line is `driver: X.XX ms CPU/episode, peak RSS Y MiB (after 1000: A MiB, after N: B MiB)`.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import resource
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import scripted_job  # noqa: E402  (the scripted roles live beside the tests that use them)

from apigen_mt.pipeline.run import phase2  # noqa: E402
from apigen_mt.pipeline.run.progress import FunnelProgress  # noqa: E402
from apigen_mt.pipeline.store.run_folder import RunFolder  # noqa: E402

MILESTONE = 1000


def mib(n: int) -> float:
    return n / 2**20


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


class MeasuredProgress(FunnelProgress):
    """The run's progress bar, also noting the driver's RSS (now and peak so far) when 1,000 episodes are
    done and when the last one is."""

    rss: dict[int, tuple[int, int]] = {}

    def finished(self, status: str) -> None:
        super().finished(status)
        done = sum(self.counts[s] for s in ("accepted", "rejected", "failed"))
        if done == MILESTONE or done == self._progress.tasks[0].total:
            MeasuredProgress.rss[done] = (psutil.Process().memory_info().rss, peak_rss())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2, help="worker actors")
    parser.add_argument("--in-flight", type=int, default=64, help="episodes in flight")
    parser.add_argument("--profile", type=Path, help="write the driver's cProfile stats here and print the top")
    args = parser.parse_args()
    trials = -(-args.episodes // len(scripted_job.BLUEPRINTS))

    import ray
    import ray.cloudpickle

    # Ray's workers cannot import the tests folder; the scripted roles travel by value.
    ray.cloudpickle.register_pickle_by_value(scripted_job)
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    # Phase 2 builds its progress bar here; the measured one notes memory as episodes finish.
    phase2.FunnelProgress = MeasuredProgress
    # CPU time, not wall time: the loop's waits for results are not the driver's cost.
    profiler = cProfile.Profile(time.thread_time) if args.profile else None
    try:
        with tempfile.TemporaryDirectory(prefix="apigen-mt-driver-") as scratch:
            out = Path(scratch) / "run"
            wall, cpu, loop = time.perf_counter(), time.process_time(), time.thread_time()
            if profiler:
                profiler.enable()
            summary = scripted_job.run(out, trials=trials, workers=args.workers, in_flight=args.in_flight)
            if profiler:
                profiler.disable()
            wall, cpu, loop = time.perf_counter() - wall, time.process_time() - cpu, time.thread_time() - loop
            rows = RunFolder(out).trajectories(["blueprint_id", "trial"]).num_rows
    finally:
        ray.shutdown()
    episodes = summary.played
    assert rows == episodes == trials * len(scripted_job.BLUEPRINTS), (rows, episodes)
    if profiler:
        profiler.dump_stats(args.profile)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    rss, missing = MeasuredProgress.rss, (0, 0)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"episodes: {episodes}  workers: {args.workers}  in flight: {args.in_flight}  "
        f"counts: {summary.counts['trajectories']}"
    )
    print(
        f"wall: {wall:.1f} s ({episodes / wall:.0f} episodes/s)  driver CPU: {cpu:.1f} s (main thread {loop:.1f} s)  "
        f"load average: {load}"
    )
    for done in (MILESTONE, episodes):
        now, peak = rss.get(done, missing)
        print(f"after {done} episodes: RSS {mib(now):.0f} MiB, peak so far {mib(peak):.0f} MiB")
    # The peak after the last episode comes from the run's end (the manifest's counts read the shards back).
    print(
        f"driver: {1000 * cpu / episodes:.2f} ms CPU/episode, peak RSS {mib(peak_rss()):.0f} MiB "
        f"(after {MILESTONE}: {mib(rss.get(MILESTONE, missing)[0]):.0f} MiB, "
        f"after {episodes}: {mib(rss.get(episodes, missing)[0]):.0f} MiB)"
    )


if __name__ == "__main__":
    main()
