"""The one trainer under torchrun: 2 CPU processes (gloo, loopback only) against 1 process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from diffusion_playground.training import checkpoint as ckpt
from diffusion_playground.training.denoiser_trainer import _announce_data_parallel
from diffusion_playground.training.distributed import DistributedContext, context_from_environment, shard_rows

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")

# Each job "name:folder:max_steps" trains the conftest-sized model for 2 epochs on 250 points (the last global
# batch of 32 is partial: 26 rows, 13 per rank) and saves every rank's weights, EMA and losses to
# OUT/name-rank{RANK}.pt. Job "loader" feeds a DataLoader with a DistributedSampler instead. One launch runs
# several jobs, one after the other, because starting torchrun and importing torch costs seconds.
SCRIPT = textwrap.dedent(
    """
    import os, sys, torch
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset
    from diffusion_playground import LinearNoiseSchedule, MLPBackbone, TimeConditionedModel, train_denoiser
    torch.set_num_threads(1)
    rank = os.environ.get("RANK", "0")
    points = torch.randn(250, 2, generator=torch.Generator().manual_seed(0))
    for job in sys.argv[2:]:
        name, folder, max_steps = job.split(":")
        data = points
        if name == "loader":  # each rank loads its half of the data, 16 rows a batch
            data = DataLoader(TensorDataset(points), batch_size=16, sampler=DistributedSampler(TensorDataset(points)))
        torch.manual_seed(int(rank))  # ranks start from different weights: DDP must make them equal
        backbone = MLPBackbone(2, cond_dim=16, hidden_dim=32, num_blocks=2)
        model = TimeConditionedModel(backbone, time_emb_dim=16, num_time_steps=50)
        history = train_denoiser(
            model, data, LinearNoiseSchedule(50, beta_start=1e-3, beta_end=0.2), epochs=2, batch_size=32,
            checkpoint_dir=folder or None, max_steps=int(max_steps) or None, save_every_steps=5,
            show_progress=False, device="cpu",
        )
        torch.save({"model": model.state_dict(), "ema": history.ema_model.state_dict(), "losses": history.losses,
                    "step": history.step}, os.path.join(sys.argv[1], f"{name}-rank{rank}.pt"))
    """
)


def launch(tmp_path, processes: int, *jobs: str) -> str:
    """Run SCRIPT's ``jobs`` as one plain process or as ``processes`` torchrun workers; return the output."""
    launcher = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env |= {"OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo"}
    command = [*launcher, str(tmp_path / "train.py"), str(tmp_path), *jobs]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # torchrun and its workers: they share the new session's group
        stdout, stderr = process.communicate()
        pytest.fail(f"{' '.join(command)} did not finish in 120 s:\n{stdout}{stderr}")
    assert process.returncode == 0, stdout + stderr
    return stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Straight runs on 1 and 2 processes, and runs stopped at step 5 then resumed on the other process count."""
    root = tmp_path_factory.mktemp("ddp")
    (root / "train.py").write_text(SCRIPT)
    one_ckpt, two_ckpt, two_ckpt_copy = root / "one-ckpt", root / "two-ckpt", root / "two-ckpt-copy"
    first = launch(root, 2, "two::0", f"two-first:{two_ckpt}:5", "loader::0")
    shutil.copytree(two_ckpt, two_ckpt_copy)  # the 2-process checkpoint at step 5, for a 1-process resume
    checkpoint = ckpt.read_checkpoint(two_ckpt / "checkpoint-step00000005.pt")
    launch(root, 1, "one::0", f"one-first:{one_ckpt}:5", f"two-then-one:{two_ckpt_copy}:0")
    resumed = launch(root, 2, f"two-then-two:{two_ckpt}:0", f"one-then-two:{one_ckpt}:0")
    results = {path.stem: torch.load(path, weights_only=True) for path in root.glob("*-rank*.pt")}
    return {"stdout": first + resumed, "results": results, "checkpoint": checkpoint}


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
    assert context_from_environment() == (1, 1, 2)


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


@pytest.mark.parametrize(
    "name", ["two-then-two-rank0", "two-then-two-rank1", "two-then-one-rank0", "one-then-two-rank0"]
)
def test_a_run_stopped_at_a_checkpoint_resumes_on_either_process_count_and_finishes(runs, name):
    resumed, straight = runs["results"][name], runs["results"]["one-rank0"]
    assert resumed["step"] == 16 and len(resumed["losses"]) == 16
    assert_same_weights(resumed["model"], straight["model"], atol=1e-6)
    assert_same_weights(resumed["ema"], straight["ema"], atol=1e-6)


def test_under_torchrun_only_rank_0_logs(runs):
    assert runs["stdout"].count("Resuming from") == 2  # two resumed 2-process runs, one line each
    assert runs["stdout"].count("global batch 32") == 5  # one line per 2-process run
