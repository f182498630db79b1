"""Benchmark (run on demand: `python benchmarks/bench_yamlread.py --runs 1000`): the readers of scaffold.configread
head to head, on a sweep's finetune.yaml files: OmegaConf itself on each (`--omegaconf every`), the shape rule (the
suite above 50 runs), a whole libyaml parse of each (`load_generated_config`) and the incremental reader (the
self-check).

Renders the sweep of bench_generate.py (2 models x ranks x lrs x seeds) in memory, writes the configs on /dev/shm
(the shape rule loads the first config of each shape from its file with OmegaConf), then times each reader in this
process the way its caller uses it: a fresh `ConfigLoader` over every config, the incremental one fed batches of
64 texts (how the generator's pipeline hands them out: scaffold.commands.pipeline). Prints CPU ms per config (CPU
time is steadier than wall time on a shared machine), the median over `--repeat` rounds (OmegaConf: one round),
and the seconds each costs for the whole sweep.
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

from bench_generate import SHM, make_experiment  # noqa: E402

from scaffold.commands.generate import load_plan  # noqa: E402
from scaffold.configread import EVERY, PER_SHAPE, ConfigLoader  # noqa: E402
from scaffold.configread.incremental import load_generated_config  # noqa: E402
from scaffold.render import render_finetune_yaml  # noqa: E402


def sweep_texts(runs: int) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="scaffold-bench-yamlread-") as tmp:
        exp, local = make_experiment(Path(tmp), runs)
        plan = load_plan(exp, local_config=local, check_paths=False)
        assert not isinstance(plan, list), plan
        return [render_finetune_yaml(rp.setup, plan.models[rp.setup["model"]]) for rp in plan.runs if rp.fine_tuned]


def cpu_seconds(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        c = time.process_time()
        fn()
        out.append(time.process_time() - c)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    texts = sweep_texts(args.runs)
    n = len(texts)
    with tempfile.TemporaryDirectory(prefix="scaffold-bench-yamlread-", dir=SHM if SHM.is_dir() else None) as tmp:
        paths = [Path(tmp) / f"finetune{i}.yaml" for i in range(n)]
        for path, text in zip(paths, texts, strict=True):
            path.write_text(text, encoding="utf-8")
        pairs = list(zip(paths, texts, strict=True))

        def every() -> list:
            loader = ConfigLoader(EVERY)
            return [loader.load(p, t).data for p, t in pairs]

        def per_shape() -> list:
            loader = ConfigLoader(PER_SHAPE)
            return [loader.load(p, t).data for p, t in pairs]

        def whole() -> list:
            return [load_generated_config(t) for t in texts]

        def incremental() -> list:
            loader = ConfigLoader()
            return [c.data for i in range(0, n, 64) for c in loader.load_rendered(pairs[i : i + 64])]

        want = every()
        for name, fn in (("per-shape", per_shape), ("whole", whole), ("incremental", incremental)):
            assert fn() == want, f"{name} disagrees with OmegaConf"
        rows = [
            ("OmegaConf on each (--omegaconf every)", cpu_seconds(every, 1)),
            ("by shape (--omegaconf per-shape)", cpu_seconds(per_shape, args.repeat)),
            ("whole libyaml parse (load_generated_config)", cpu_seconds(whole, args.repeat)),
            ("incremental, batches of 64 (the self-check)", cpu_seconds(incremental, args.repeat)),
        ]
    print(f"{n} configs, CPU time, medians")
    print(f"  {'':46} {'ms per config':>14} {'s for all':>10}")
    for name, seconds in rows:
        m = statistics.median(seconds)
        print(f"  {name:46} {m * 1000 / n:14.3f} {m:10.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
