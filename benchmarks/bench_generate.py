"""Benchmark (run on demand: `nox -s bench`, or `python benchmarks/bench_generate.py --runs 1000`).

Builds an experiment shaped as users write them (`--shape listed`, the default: every fine-tuned run listed in
the summary's `runs`, its model directories on this machine carrying tokenizer files with the real Llama 3.2
chat template, so that the train/eval parity check runs; `--shape variables`: runs expanded from `variables`,
model paths on a cluster, checks that read them skipped), then measures, as whole processes:
`scaffold generate` from scratch (`generate`: with the token audit's disk cache empty, so it imports transformers and
tokenizes), an unchanged re-run, the verification suite over the result (when the `scaffold verify` command exists),
and `warm`: a new experiment on the same data and model files, generated from scratch with the audit's records on
disk. Interleaved with them, it measures a floor: a bare Python process writing
files of the same sizes the same way (temporary file + rename). The experiments are built on /dev/shm when it
exists (an in-memory filesystem: the shared disks' noise is out; `--tmp DIR` measures on another one), and the
package's bytecode is compiled first, as an installed package's is. Prints wall time, time per run and peak
memory, the median of each measure over `--repeat` rounds against the budget, and writes them as JSON.

Budget (2-core machines, /dev/shm, whole processes, medians of 3): 1,000 runs generated in <= 1.5 s, 100 runs in
<= 0.4 s (checked cold and warm: cold, the audit's first import of transformers alone takes about 1 s on such a
machine), an unchanged re-run of 1,000 runs in <= 0.5 s, verification of 1,000 runs in <= 8 s. `--records N` measures
on a made-up dataset of N records instead of the example's 10.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
SHM = Path("/dev/shm")
# (runs, measure) -> the most seconds its median may take
BUDGET = {
    (1000, "generate"): 1.5,
    (100, "generate"): 0.4,
    (1000, "warm"): 1.5,
    (100, "warm"): 0.4,
    (1000, "rerun"): 0.5,
    (1000, "verify"): 8.0,
}

FLOOR = r"""
import os, sys, tempfile
from pathlib import Path
sizes = [int(x) for x in Path(sys.argv[2]).read_text().split()]
root = Path(sys.argv[1])
for i in range(0, len(sizes), 3):
    d = root / f"run{i}"
    (d / "artifacts").mkdir(parents=True)
    for j, size in enumerate(sizes[i:i + 3]):
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".f", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(b"x" * size)
        os.replace(tmp, d / f"file{j}")
"""


def grid(runs: int) -> dict:
    """Variables whose product (x 2 models) is `runs` fine-tuned runs."""
    per_model = runs // 2
    ranks = [4, 8, 16, 32, 64]
    seeds = list(range(1, per_model // (len(ranks) * 10) + 1))
    lrs = [round(1e-5 * (i + 1), 8) for i in range(per_model // (len(ranks) * len(seeds)))]
    assert len(ranks) * len(lrs) * len(seeds) * 2 == runs, (len(ranks), len(lrs), len(seeds))
    return {"lora_rank": ranks, "lr": lrs, "seed": seeds}


MODELS = ("Llama-3.2-1B-Instruct", "Llama-3.2-3B-Instruct")


def make_model_dir(path: Path) -> str:
    """A model directory with the files the registry names (empty weights: only their presence is checked by the
    generator) and a Hugging Face tokenizer with the real chat template, which the parity check loads."""
    from scaffold.testing.hf_tokenizers import write_hf_tokenizer

    weights = ["model.safetensors"] if "1B" in path.name else [f"model-0000{i}-of-00002.safetensors" for i in (1, 2)]
    for name, text in (("config.json", "{}"), ("original/tokenizer.model", ""), *((w, "") for w in weights)):
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    write_hf_tokenizer(path, "llama3")
    return str(path)


def listed_runs(variables: dict) -> list[dict]:
    """The fine-tuned runs of `variables` x MODELS, listed as a summary's `runs` (named with the run-name tokens)."""
    import itertools

    from scaffold.inputs.params import token_for

    out = []
    for model in MODELS:
        for values in itertools.product(*variables.values()):
            parameters = dict(zip(variables, values, strict=True))
            name = "_".join([model, *(token_for(k, v) for k, v in parameters.items())])
            out.append({"name": name, "type": "fine-tuned", "model": model, "parameters": parameters})
    return out


def write_dataset(path: Path, records: int) -> dict[str, int]:
    """A capitalization dataset of `records` made-up words (80% train, 10% validation, 10% test, as the original's
    words_5L_80P_* files split them); the split sizes."""
    rng = random.Random(records)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(3, 12))) for _ in range(records)]
    rows = [{"input": w, "output": w.capitalize()} for w in words]
    train, validation = int(records * 0.8), int(records * 0.1)
    splits = {"train": rows[:train], "validation": rows[train : train + validation], "test": rows[train + validation :]}
    path.write_text(json.dumps(splits, indent=1))
    return {name: len(rows) for name, rows in splits.items()}


def make_experiment(root: Path, runs: int, shape: str = "listed", records: int = 0) -> tuple[Path, Path]:
    """The benchmark's experiment; `records`: a dataset of that many records (0: the shipped example's 10)."""
    exp = root / "exp"
    (exp / "data").mkdir(parents=True)
    summary = yaml.safe_load((REPO / "examples" / "capitalization" / "experiment_summary.yaml").read_text())
    if records:
        name = f"words_bench_{records}"
        summary["data"]["training"].update(
            path=f"data/{name}.json", dataset_label=name, splits=write_dataset(exp / "data" / f"{name}.json", records)
        )
    else:
        shutil.copy(REPO / "examples" / "capitalization" / "data" / "words_5L_80P_10.json", exp / "data")
    summary["controls"]["batch_size"] = 1
    controls = [r for r in summary["runs"] if r["type"] == "control"]
    if shape == "listed":
        summary["experiment"]["dir"] = str(exp)
        summary["models"]["base"] = [{"name": m, "path": make_model_dir(root / "models" / m)} for m in MODELS]
        summary.pop("variables", None)
        summary["runs"] = listed_runs(grid(runs)) + controls
    else:
        summary["experiment"]["dir"] = "/scratch/bench/exp"
        summary["variables"] = grid(runs)
        summary["models"]["base"].append({"name": MODELS[1], "path": f"/scratch/models/{MODELS[1]}"})
        summary["runs"] = controls
    (exp / "experiment_summary.yaml").write_text(yaml.safe_dump(summary, sort_keys=False))
    local = root / "scaffold.local.yaml"
    shutil.copy(REPO / "examples" / "scaffold.local.example.yaml", local)
    return exp, local


# Runs one command and reports its own wall time and peak memory (ru_maxrss of this wrapper's only child), so
# that neither the benchmark's nor another measured process's memory is counted.
MEASURE = r"""
import json, resource, subprocess, sys, time
t = time.perf_counter()
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
wall = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"wall_s": round(wall, 3), "peak_mb": round(peak / 1024, 1), "code": proc.returncode,
                  "tail": (proc.stdout + proc.stderr)[-800:]}))
"""


def timed(cmd: list[str], cwd: Path) -> dict:
    """Wall time and peak RSS (MB) of one whole process, run in `cwd` (outside the source tree, so that
    `python -m scaffold` imports the installed package, as a user's does)."""
    proc = subprocess.run([sys.executable, "-c", MEASURE, *cmd], capture_output=True, text=True, cwd=cwd)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    return json.loads(proc.stdout)


def compile_package(cwd: Path) -> None:
    """Compile the bytecode of the `scaffold` that `python -m scaffold` imports from `cwd` (pip does so when it
    installs; a source checkout under PYTHONDONTWRITEBYTECODE would otherwise compile it in every process)."""
    where = subprocess.run(
        [sys.executable, "-c", "import scaffold, os; print(os.path.dirname(scaffold.__file__))"],
        capture_output=True, text=True, cwd=cwd, check=True,
    ).stdout.strip()  # fmt: skip
    subprocess.run([sys.executable, "-m", "compileall", "-q", where], capture_output=True, cwd=cwd, check=False)


def default_tmp() -> Path | None:
    """/dev/shm when it is a writable directory, else the system's temporary directory (None)."""
    return SHM if SHM.is_dir() and os.access(SHM, os.W_OK) else None


def bench(runs: int, work: Path, verify_suite: bool = True, shape: str = "listed", records: int = 0) -> dict:
    # The token audit's records on disk (scaffold.torchtune_ext.audit.DiskCache): empty for each round, so that
    # `generate` is a first one (it imports transformers and tokenizes); `warm` is then a new experiment on the same
    # data and model files, which finds them there.
    os.environ["SCAFFOLD_AUDIT_CACHE"] = str(work / "audit-cache")
    os.environ["SCAFFOLD_VALIDATED_CACHE"] = str(work / "validated-cache")  # the passes of validation remembered
    os.environ["SCAFFOLD_TEMPLATE_CACHE"] = str(work / "template-cache")  # the compiled templates
    exp, local = make_experiment(work, runs, shape, records)
    paths = [] if shape == "listed" else ["--no-check-paths"]
    gen = [sys.executable, "-m", "scaffold", "generate", str(exp), "--local-config", str(local), *paths]
    result: dict = {"runs": runs}
    result["generate"] = timed(gen, work)
    assert result["generate"]["code"] == 0, result["generate"]["tail"]
    sizes = [
        p.stat().st_size
        for d in sorted(exp.iterdir())
        if d.is_dir() and d.name not in ("data", "logs")
        for p in sorted(d.iterdir())
        if p.is_file()
    ]
    size_file = work / "sizes.txt"
    size_file.write_text(" ".join(map(str, sizes)))
    floor_dir = work / "floor"
    result["floor"] = timed([sys.executable, "-c", FLOOR, str(floor_dir), str(size_file)], work)
    result["rerun"] = timed(gen, work)
    assert "0 failed" in result["rerun"]["tail"] or result["rerun"]["code"] == 0, result["rerun"]["tail"]
    verify = [
        sys.executable,
        "-m",
        "scaffold",
        "verify",
        str(exp),
        "--local-config",
        str(local),
        *paths,
        "-q",
        "-p",
        "no:cacheprovider",
    ]
    if verify_suite:
        # Accept the golden files once (an experiment repo commits them), then time the suite over the result.
        subprocess.run([*verify, "--snapshot-update"], capture_output=True, cwd=work)
        result["verify"] = timed(verify, work)
        assert result["verify"]["code"] == 0, result["verify"]["tail"]
        if shape == "listed":  # the parity check ran (it is skipped without transformers or tokenizer files)
            assert "train_eval_parity" not in result["verify"]["tail"], result["verify"]["tail"]
    else:
        result["verify"] = {"skipped": "verify not timed (--no-verify)"}
    again, local_again = make_experiment(work / "again", runs, shape, records)
    result["warm"] = timed(
        [sys.executable, "-m", "scaffold", "generate", str(again), "--local-config", str(local_again), *paths], work
    )
    assert result["warm"]["code"] == 0, result["warm"]["tail"]
    g = result["generate"]
    result["per_run_ms"] = round(1000 * g["wall_s"] / runs, 3)
    result["generate_over_floor"] = round(g["wall_s"] / max(result["floor"]["wall_s"], 1e-9), 2)
    return result


def print_medians(results: list[dict]) -> None:
    """The median of each measure over the rounds, and the budget it has (when it has one)."""
    for n in sorted({r["runs"] for r in results}):
        parts = []
        for what in ("generate", "warm", "rerun", "verify"):
            times = [r[what]["wall_s"] for r in results if r["runs"] == n and "wall_s" in r[what]]
            if not times:
                continue
            median = statistics.median(times)
            limit = BUDGET.get((n, what))
            verdict = "" if limit is None else f" (budget {limit:g} s: {'ok' if median <= limit else 'OVER'})"
            parts.append(f"{what} {median:.3f} s{verdict}")
        rounds = sum(r["runs"] == n for r in results)
        print(f"{n:>6} runs, median of {rounds}: " + ", ".join(parts), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, nargs="+", default=[1000], help="sweep sizes (even, e.g. 100 1000 10000)")
    ap.add_argument("--repeat", type=int, default=1, help="measure each size this many times (the disks are noisy)")
    ap.add_argument("--no-verify", action="store_true", help="time generate and the re-run only")
    ap.add_argument(
        "--records",
        type=int,
        default=0,
        help="the dataset's records (0: the shipped example's 10; "
        "a made-up dataset of that many, split 80/10/10, otherwise)",
    )
    ap.add_argument("--shape", choices=("listed", "variables"), default="listed", help="how the summary gives its "
                    "runs (listed: with local model directories carrying tokenizer files; variables: cluster paths)")  # fmt: skip
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results.json")
    ap.add_argument("--tmp", type=Path, default=default_tmp(), help="where the experiments are built (default: "
                    "/dev/shm when it exists, else the system's temporary directory)")  # fmt: skip
    args = ap.parse_args()
    print(f"experiments in {args.tmp or tempfile.gettempdir()}", flush=True)
    compile_package(Path(args.tmp or tempfile.gettempdir()))
    results = []
    for n in args.runs:
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory(prefix=f"scaffold-bench-{n}-", dir=args.tmp) as tmp:
                r = bench(n, Path(tmp), verify_suite=not args.no_verify, shape=args.shape, records=args.records)
            results.append(r)
            v = r["verify"]
            print(
                f"{n:>6} runs: generate {r['generate']['wall_s']:.3f} s ({r['per_run_ms']:.3f} ms/run, "
                f"{r['generate']['peak_mb']} MB peak), floor {r['floor']['wall_s']:.3f} s "
                f"(x{r['generate_over_floor']}), a new experiment on audited data {r['warm']['wall_s']:.3f} s, "
                f"unchanged re-run {r['rerun']['wall_s']:.3f} s, "
                + (f"verify {v['wall_s']:.1f} s ({v['peak_mb']} MB peak)" if "wall_s" in v else v["skipped"]),
                flush=True,
            )
    sizes = sorted({r["runs"] for r in results})
    for small, large in zip(sizes, sizes[1:], strict=False):

        def best(n: int, what: str) -> float:
            return min(r[what]["wall_s"] for r in results if r["runs"] == n and "wall_s" in r[what])

        for what in ("generate", "rerun", "verify"):
            try:
                ratio = best(large, what) / best(small, what)
            except ValueError:
                continue
            print(f"{what}: {large} runs take x{ratio:.1f} the time of {small} (x{large / small:.0f} the runs)")
    print_medians(results)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
