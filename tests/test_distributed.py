"""The one trainer under torchrun: 2 CPU processes (gloo, loopback only) against 1 process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from diffusion_playground.training import checkpoint as ckpt
from diffusion_playground.training.denoiser_trainer import _announce_data_parallel
from diffusion_playground.training.distributed import DistributedContext, context_from_environment, shard_rows

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")

# Each job "name:folder:max_steps" trains the conftest-sized model for 2 epochs on 250 points (the last global
# batch of 32 is partial: 26 rows, 13 per rank) and saves every rank's weights, EMA and losses to
# OUT/name-rank{RANK}.pt. Jobs named "loader*" feed a DataLoader (with a DistributedSampler under torchrun)
# instead; "*-refused" jobs save the ValueError they expect instead of weights; "*-killed" jobs stand for a
# long run: once their first checkpoint exists they write OUT/parked-rank{RANK} (their pid) and sleep until
# the test kills them. One launch runs several jobs, one after the other, because starting torchrun and
# importing torch costs seconds.
SCRIPT = textwrap.dedent(
    """
    import glob, os, sys, time, torch
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset
    from diffusion_playground import LinearNoiseSchedule, MLPBackbone, TimeConditionedModel, train_denoiser
    torch.set_num_threads(1)
    rank = os.environ.get("RANK", "0")
    points = torch.randn(250, 2, generator=torch.Generator().manual_seed(0))

    def park_after_first_checkpoint(folder):
        def augment(x0, generator):
            if glob.glob(os.path.join(folder, "checkpoint-step*.pt")):  # files appear by atomic rename: complete
                parked = os.path.join(sys.argv[1], f"parked-rank{rank}")
                with open(parked + ".tmp", "w") as handle:
                    handle.write(str(os.getpid()))
                os.replace(parked + ".tmp", parked)
                time.sleep(120)  # the test SIGKILLs this process long before
            return x0
        return augment

    for job in sys.argv[2:]:
        name, folder, max_steps = job.split(":")
        data = points
        if name.startswith("loader"):  # under torchrun each rank loads its half of the data, 16 rows a batch
            dataset = TensorDataset(points)
            sampler = DistributedSampler(dataset) if "WORLD_SIZE" in os.environ else None
            data = DataLoader(dataset, batch_size=16, sampler=sampler, shuffle=sampler is None)
        torch.manual_seed(int(rank))  # ranks start from different weights: DDP must make them equal
        backbone = MLPBackbone(2, cond_dim=16, hidden_dim=32, num_blocks=2)
        model = TimeConditionedModel(backbone, time_emb_dim=16, num_time_steps=50)
        try:
            history = train_denoiser(
                model, data, LinearNoiseSchedule(50, beta_start=1e-3, beta_end=0.2), epochs=2, batch_size=32,
                checkpoint_dir=folder or None, max_steps=int(max_steps) or None, save_every_steps=5,
                augment=park_after_first_checkpoint(folder) if name.endswith("-killed") else None,
                show_progress=False, device="cpu",
            )
            result = {"model": model.state_dict(), "ema": history.ema_model.state_dict(), "losses": history.losses,
                      "step": history.step}
        except ValueError as error:
            if not name.endswith("-refused"):
                raise
            result = {"error": str(error)}
        torch.save(result, os.path.join(sys.argv[1], f"{name}-rank{rank}.pt"))
    """
)
TIMEOUT = 120  # seconds for one launch; a few are enough on an idle 2-core machine


def start(root: Path, processes: int, *jobs: str) -> subprocess.Popen:
    """Start SCRIPT's ``jobs`` as one plain process or as ``processes`` torchrun workers, in a session of its own."""
    launcher = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env |= {"OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo", "PYTHONUNBUFFERED": "1"}
    command = [*launcher, str(root / "train.py"), str(root), *jobs]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )


def stop(process: subprocess.Popen) -> str:
    """End a launch that overran: SIGTERM to torchrun, which passes it on to its workers (they run in sessions of
    their own, out of reach of its process group), then SIGKILL to whatever is left of its group."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        stdout, stderr = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
    return stdout + stderr


def finish(process: subprocess.Popen) -> str:
    """Wait for a launch (at most TIMEOUT seconds), check it succeeded, return its output."""
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(process.args)} did not finish in {TIMEOUT} s:\n{stop(process)}")
    assert process.returncode == 0, stdout + stderr
    return stdout


def launch(root: Path, processes: int, *jobs: str) -> str:
    return finish(start(root, processes, *jobs))


def wait_until(condition: Callable[[], bool], process: subprocess.Popen) -> None:
    """Poll ``condition`` while ``process`` runs; fail if it ends first or TIMEOUT passes."""
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if process.poll() is not None:
            stdout, stderr = process.communicate()
            pytest.fail(f"{' '.join(process.args)} ended (exit code {process.returncode}) too early:\n{stdout}{stderr}")
        if time.monotonic() > deadline:
            pytest.fail(f"{' '.join(process.args)}: still waiting after {TIMEOUT} s:\n{stop(process)}")
        time.sleep(0.05)


def kill_parked_run(root: Path, process: subprocess.Popen) -> tuple[str, list[str]]:
    """SIGKILL a launch once both workers of its "-killed" job are parked; returns (output, checkpoints left)."""
    parked = [root / f"parked-rank{rank}" for rank in range(2)]
    wait_until(lambda: all(path.is_file() for path in parked), process)
    os.killpg(process.pid, signal.SIGKILL)  # torchrun, the agent
    for path in parked:  # and each worker (torchrun starts them in sessions of their own)
        os.kill(int(path.read_text()), signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL, stdout + stderr
    return stdout, [path.name for path in ckpt.list_checkpoints(root / "two-ckpt")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Straight runs on 1 and 2 processes; runs stopped at step 5 (a 2-process one killed by SIGKILL) and resumed
    on the same and on the other process count; a DataLoader run stopped at step 5 and resumed on 2 and on 1."""
    root = tmp_path_factory.mktemp("ddp")
    (root / "train.py").write_text(SCRIPT)
    one_ckpt, two_ckpt, two_ckpt_copy = root / "one-ckpt", root / "two-ckpt", root / "two-ckpt-copy"
    loader_ckpt = root / "loader-ckpt"
    first = start(root, 2, "two::0", "loader::0", f"loader-first:{loader_ckpt}:5", f"two-killed:{two_ckpt}:0")
    first_output, kept = kill_parked_run(root, first)
    shutil.copytree(two_ckpt, two_ckpt_copy)  # the killed 2-process run's folder, for a 1-process resume
    checkpoint = ckpt.read_checkpoint(two_ckpt / "checkpoint-step00000005.pt")
    launch(root, 1, "one::0", f"one-first:{one_ckpt}:5", f"two-then-one:{two_ckpt_copy}:0",
           f"loader-then-one-refused:{loader_ckpt}:0")  # fmt: skip
    resumed = launch(
        root, 2, f"two-then-two:{two_ckpt}:0", f"one-then-two:{one_ckpt}:0", f"loader-then-two:{loader_ckpt}:0"
    )
    results = {path.stem: torch.load(path, weights_only=True) for path in root.glob("*-rank*.pt")}
    return {"stdout": first_output + resumed, "results": results, "checkpoint": checkpoint, "left_after_kill": kept}


def assert_same_weights(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for name, value in a.items():
        torch.testing.assert_close(value, b[name], rtol=0.0, atol=atol, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize(("rows", "world"), [(32, 2), (26, 2), (7, 3), (1, 2)])
def test_shards_cover_a_batch_once_in_order(rows, world):
    parts = [shard_rows(rows, rank, world) for rank in range(world)]
    assert [i for part in parts for i in range(rows)[part]] == list(range(rows))
    assert max(p.stop - p.start for p in parts) - min(p.stop - p.start for p in parts) <= 1


def test_the_environment_decides_between_one_process_and_torchrun(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert context_from_environment() is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert context_from_environment() is None
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ValueError, match="LOCAL_RANK are not; start the script with torchrun"):
        context_from_environment()
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert context_from_environment() == DistributedContext(rank=1, local_rank=1, world_size=2)


def test_a_global_batch_that_does_not_split_over_the_processes_is_refused(points):
    with pytest.raises(ValueError, match="batch_size=33 is the global batch .* use a multiple of 2"):
        _announce_data_parallel(DistributedContext(rank=0, local_rank=0, world_size=2), points, 33, 1e-3)


def test_two_processes_agree_with_each_other_and_with_one_process_on_the_same_global_batch(runs):
    two0, two1, one = (runs["results"][name] for name in ("two-rank0", "two-rank1", "one-rank0"))
    assert "global batch 32 (16 per process), lr 0.001" in runs["stdout"]
    assert two0["step"] == two1["step"] == one["step"] == 16
    assert_same_weights(two0["model"], two1["model"])  # DDP: the ranks never drift apart
    assert_same_weights(two0["ema"], two1["ema"])
    assert two0["losses"] == two1["losses"]
    # same data, t and noise as the single process: only the order of float sums differs
    assert_same_weights(two0["model"], one["model"], atol=1e-6)
    assert_same_weights(two0["ema"], one["ema"], atol=1e-6)
    torch.testing.assert_close(torch.tensor(two0["losses"]), torch.tensor(one["losses"]), rtol=1e-5, atol=1e-6)


def test_a_dataloader_with_a_distributed_sampler_trains_in_step_on_every_rank(runs):
    rank0, rank1 = runs["results"]["loader-rank0"], runs["results"]["loader-rank1"]
    assert rank0["step"] == rank1["step"] == 2 * 8  # 125 rows per rank in batches of 16, for 2 epochs
    assert_same_weights(rank0["model"], rank1["model"])
    assert_same_weights(rank0["ema"], rank1["ema"])
    assert rank0["losses"] == rank1["losses"]
    assert "global batch 32 (16 per process)" in runs["stdout"]


def test_a_distributed_checkpoint_holds_the_unwrapped_model(runs):
    state = runs["checkpoint"]
    assert state["step"] == 5
    assert not [name for name in state["model"] if name.startswith("module.")]  # no DDP prefixes
    assert state["model"].keys() == runs["results"]["one-rank0"]["model"].keys()


def test_a_run_killed_after_its_first_checkpoint_resumes_on_two_processes_and_on_one(runs):
    results = runs["results"]
    assert runs["left_after_kill"] == ["checkpoint-step00000005.pt"]  # killed at step 5 of 16, mid-epoch
    assert not [name for name in results if name.startswith("two-killed")]  # it never got to save its results
    two, one, straight = results["two-then-two-rank0"], results["two-then-one-rank0"], results["one-rank0"]
    assert two["step"] == one["step"] == 16 and len(two["losses"]) == len(one["losses"]) == 16
    assert_same_weights(results["two-then-two-rank1"]["model"], two["model"])
    # batch_size is the global batch: both resumes take the steps of the uninterrupted run, up to float sums
    assert_same_weights(two["model"], one["model"], atol=1e-6)
    assert_same_weights(two["ema"], one["ema"], atol=1e-6)
    assert_same_weights(one["model"], straight["model"], atol=1e-6)


@pytest.mark.parametrize(
    "name", ["two-then-two-rank0", "two-then-two-rank1", "two-then-one-rank0", "one-then-two-rank0"]
)
def test_a_run_stopped_at_a_checkpoint_resumes_on_either_process_count_and_finishes(runs, name):
    resumed, straight = runs["results"][name], runs["results"]["one-rank0"]
    assert resumed["step"] == 16 and len(resumed["losses"]) == 16
    assert_same_weights(resumed["model"], straight["model"], atol=1e-6)
    assert_same_weights(resumed["ema"], straight["ema"], atol=1e-6)


def test_a_dataloader_run_resumes_on_as_many_processes_and_refuses_another_count(runs):
    resumed, straight = runs["results"]["loader-then-two-rank0"], runs["results"]["loader-rank0"]
    assert resumed["step"] == 16
    assert_same_weights(resumed["model"], straight["model"], atol=1e-6)
    # the DistributedSampler gave each of the 2 ranks 125 rows (8 batches of 16 an epoch); one process sees all
    # 250 rows (16 batches): the position in the epoch means other batches, so the trainer refuses to resume
    message = runs["results"]["loader-then-one-refused-rank0"]["error"]
    assert "DataLoader run on 2 process(es) and this run has 1" in message, message
    assert "Resume on 2 process(es), or train from a tensor dataset" in message, message


def test_under_torchrun_only_rank_0_logs(runs):
    assert runs["stdout"].count("Resuming from") == 3  # three resumed 2-process runs, one line each
    assert runs["stdout"].count("global batch 32") == 7  # one line per 2-process run, the killed one included
