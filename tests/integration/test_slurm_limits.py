"""`scaffold submit` at a real Slurm's limit (run by `nox -s slurm`, i.e. `pytest -m slurm`; skipped unless
selected).

A local one-node Slurm 22.05 of its own (scaffold.testing.local_slurm), its node drained so that jobs stay pending
as on a busy cluster, and a small `MaxJobCount` standing in for a per-user submit limit: there sbatch says `Slurm
temporarily unable to accept job, sleeping and retrying` and retries for minutes. Submit must stop at once, record
exactly what was queued, and a second submit once the limit is raised must queue the rest.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from scaffold.testing import local_slurm

from ..conftest import run_cli
from .test_slurm_cluster import example_experiment, require_local_slurm, say

pytestmark = pytest.mark.slurm

RUNS = {f"Llama-3.2-1B-Instruct_rank{r}": ({"lora_rank": r}, {}) for r in (2, 4, 8, 16, 32, 64)}


@pytest.fixture(scope="module")
def cluster(request):
    require_local_slurm(request)
    state = Path(tempfile.mkdtemp(prefix="scaffold-limit-", dir="/tmp"))
    c = local_slurm.start(state, nodes=1)
    c.run("scontrol", "update", f"nodename={c.node}", "state=drain", "reason=busy-cluster")
    yield c
    local_slurm.stop(state)
    shutil.rmtree(state, ignore_errors=True)


def set_max_job_count(cluster: local_slurm.Cluster, n: int) -> None:
    text = re.sub(r"(?m)^MaxJobCount=.*\n", "", cluster.conf.read_text())
    cluster.conf.write_text(text + f"MaxJobCount={n}\n")
    cluster.run("scontrol", "reconfigure")
    deadline = time.monotonic() + 20
    while f"MaxJobCount             = {n}\n" not in cluster.run("scontrol", "show", "config").stdout:
        assert time.monotonic() < deadline, "MaxJobCount was not applied"
        time.sleep(0.2)


def queued(cluster: local_slurm.Cluster) -> set[str]:
    return set(cluster.run("squeue", "--noheader", "--format=%i").stdout.split())


def test_submit_stops_at_the_limit_and_a_later_submit_queues_the_rest(cluster, tmp_path: Path) -> None:
    exp = example_experiment(tmp_path, RUNS)
    set_max_job_count(cluster, 4)
    t0 = time.monotonic()
    res = run_cli("submit", exp.dir, env=cluster.env)
    took = time.monotonic() - t0
    say(f"submit at the limit: exit {res.code} in {took:.2f} s\n{res.out}{res.err}")
    assert res.code == 1, res.out + res.err
    assert took < 10, f"submit took {took:.0f} s: it waited on sbatch's retries"
    record = json.loads((exp.dir / "logs" / "submissions.json").read_text())
    n = len(record)
    assert 0 < n < len(RUNS)
    assert {e["job_id"] for e in record.values()} == queued(cluster)  # nothing lost, nothing extra
    assert "temporarily unable to accept job" in res.out
    assert f"stopped at the cluster's limit: {n} queued now, {len(RUNS) - n} runs not queued" in res.out
    assert "run `scaffold submit` again" in res.out

    set_max_job_count(cluster, 100)  # the limit is lifted
    again = run_cli("submit", exp.dir, env=cluster.env)
    assert again.code == 0, again.out + again.err
    assert f"{len(RUNS) - n} submitted, {n} already submitted" in again.out, again.out
    record = json.loads((exp.dir / "logs" / "submissions.json").read_text())
    assert sorted(record) == sorted(RUNS) and {e["job_id"] for e in record.values()} == queued(cluster)
