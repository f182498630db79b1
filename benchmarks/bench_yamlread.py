"""Benchmark (run on demand: `python benchmarks/bench_yamlread.py --runs 1000`): reading a sweep's finetune.yaml
files back, as the self-check does, whole (`load_generated_config` each) vs `IncrementalConfigReader`.

Renders the sweep of bench_generate.py (2 models x ranks x lrs x seeds) in memory, then times, in this process:
every text parsed whole; one fresh reader over all texts in one call; and one reader fed batches of 64 texts
(how the generator's worker hands out work: scaffold.commands.pipeline). Each is repeated; the best and the median are
printed, in ms per config. Target: <= 0.1 ms per config for 1,000 runs (a whole parse costs about 1 ms).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_generate import make_experiment  # noqa: E402

from scaffold.commands.generate import load_plan  # noqa: E402
from scaffold.configread.incremental import IncrementalConfigReader, load_generated_config  # noqa: E402
from scaffold.render import render_finetune_yaml  # noqa: E402


def sweep_texts(runs: int) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="scaffold-bench-yamlread-") as tmp:
        exp, local = make_experiment(Path(tmp), runs)
        plan = load_plan(exp, local_config=local, check_paths=False)
        assert not isinstance(plan, list), plan
        return [render_finetune_yaml(rp.setup, plan.models[rp.setup["model"]]) for rp in plan.runs if rp.fine_tuned]


def timed(fn, repeat: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of each of `repeat` calls (CPU time is steadier on a shared machine)."""
    wall, cpu = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return wall, cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    texts = sweep_texts(args.runs)
    n = len(texts)

    whole = [load_generated_config(t) for t in texts]
    reader = IncrementalConfigReader()
    assert reader.read_many(texts) == whole, "the reader disagrees with load_generated_config"

    def batches() -> None:
        r = IncrementalConfigReader()
        for i in range(0, n, 64):
            r.read_many(texts[i : i + 64])

    rows = [
        ("whole parse (load_generated_config)", timed(lambda: [load_generated_config(t) for t in texts], 3)),
        ("reader, one call, fresh", timed(lambda: IncrementalConfigReader().read_many(texts), args.repeat)),
        ("reader, batches of 64, fresh", timed(batches, args.repeat)),
        ("reader, one call, warm (same texts again)", timed(lambda: reader.read_many(texts), args.repeat)),
    ]
    r = IncrementalConfigReader()
    r.read_many(texts)
    print(f"{n} configs; a fresh reader parses {r.stats['whole']} whole, {r.stats['incremental']} incrementally")
    print(f"  {'ms per config':44} {'wall best':>10} {'median':>8} {'cpu best':>10} {'median':>8}")
    for name, (wall, cpu) in rows:
        cells = [min(wall), statistics.median(wall), min(cpu), statistics.median(cpu)]
        print(f"  {name:44} " + " ".join(f"{x * 1000 / n:{w}.3f}" for x, w in zip(cells, (10, 8, 10, 8), strict=True)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
