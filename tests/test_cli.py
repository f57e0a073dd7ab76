"""The command line that `make demo` runs, end to end in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from image_files import write_mnist
from PIL import Image

from diffusion_playground.__main__ import main
from diffusion_playground import load_checkpoint
from diffusion_playground.data.fake_files import write_fake_cifar10

ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # torch reads these: one thread per subprocess


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "diffusion_playground", *args], check=False, capture_output=True, text=True, timeout=600, env=ONE_THREAD
    )


def written(result: subprocess.CompletedProcess) -> list[str]:
    """The paths listed after the final "Wrote:" line."""
    lines = result.stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("Wrote:"))
    return [line.strip() for line in lines[start + 1 :]]


def test_help_lists_every_command(capsys):
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("train", "sample", "evaluate", "animate", "inpaint", "edit"):
        assert command in result.stdout
    for command, options in [("train", ("{moons,swiss_roll,eight_gaussians,checkerboard,digits,mnist,cifar10}", "--data", "--download", "--quick")),
                             ("sample", ("--sampler", "--steps", "--class", "--guidance", "--n", "--out", "--seed", "--device")),
                             ("animate", ("--frames", "--fps", "--out"))]:  # fmt: skip
        with pytest.raises(SystemExit):
            main([command, "--help"])
        shown = capsys.readouterr().out
        assert all(option in shown for option in options), (command, shown)


@pytest.fixture(scope="module")
def moons_run(tmp_path_factory) -> tuple:
    """One short `train moons` run shared by the tests below: (output folder, completed process)."""
    out = tmp_path_factory.mktemp("cli") / "moons"
    result = run_cli("train", "moons", "--epochs", "1", "--out", str(out), "--device", "cpu", "--num-samples", "200", "--no-progress")
    assert result.returncode == 0, result.stderr
    return out, result


def test_train_moons_writes_figures_checkpoint_and_quality(moons_run):
    out, result = moons_run
    for name in ("samples.png", "loss_curve.png", "trajectory.png"):
        assert (out / name).stat().st_size > 1000, name
        assert str(out / name) in result.stdout
    assert (out / "checkpoints" / "checkpoint-step00000032.pt").is_file()
    assert "sliced Wasserstein-2" in result.stdout and "MMD^2" in result.stdout


def test_bad_arguments_are_refused_with_a_message():
    result = run_cli("train", "moons", "--epochs", "0")
    assert result.returncode != 0 and "--epochs must be >= 1" in result.stderr
    result = run_cli("train", "cifar100")
    assert result.returncode != 0 and "invalid choice" in result.stderr


def run_in_process(capsys, *args: str) -> str:
    """main(args) in this process (no interpreter start-up); returns what it printed."""
    assert main(list(args)) == 0
    return capsys.readouterr().out


def error_of(capsys, *args: str) -> str:
    """The message main(args) exits with."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    message = str(exit_info.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


@pytest.fixture(scope="module")
def moons_checkpoint(moons_run):
    return moons_run[0] / "checkpoints"


def test_sample_a_moons_checkpoint_written_by_train(moons_checkpoint, tmp_path):
    result = run_cli("sample", str(moons_checkpoint), "--n", "300", "--steps", "10", "--out", str(tmp_path / "s"), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert written(result) == [str(tmp_path / "s.png"), str(tmp_path / "s.pt")]
    assert torch.load(tmp_path / "s.pt")["samples"].shape == (300, 2)
    assert (tmp_path / "s.png").stat().st_size > 1000


def test_evaluate_and_animate_a_moons_checkpoint(moons_checkpoint, tmp_path, capsys):
    shown = run_in_process(capsys, "evaluate", str(moons_checkpoint), "--n", "300", "--steps", "10", "--no-progress")
    assert "sliced Wasserstein-2" in shown and "MMD^2" in shown and "floor" in shown
    gif = tmp_path / "anim.gif"
    shown = run_in_process(capsys, "animate", str(moons_checkpoint), "--steps", "10", "--frames", "8", "--fps", "4",
                           "--out", str(gif), "--no-progress")  # fmt: skip
    assert shown.splitlines()[-2:] == ["Wrote:", f"  {gif}"]
    with Image.open(gif) as image:
        assert image.n_frames == 8
    assert "--frames 8 needs at least 7 sampling steps" in error_of(capsys, "animate", str(moons_checkpoint), "--steps", "3", "--frames", "8")


def test_train_digits_then_sample_one_class_with_guidance(tmp_path, capsys):
    out = tmp_path / "digits"
    result = run_cli("train", "digits", "--epochs", "1", "--out", str(out), "--device", "cpu", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert str(out / "samples.png") in written(result) and (out / "samples.png").stat().st_size > 1000
    shown = run_in_process(capsys, "sample", str(out / "checkpoints"), "--class", "3", "--guidance", "2", "--n", "4",
                           "--steps", "5", "--out", str(tmp_path / "threes"), "--no-progress")  # fmt: skip
    assert shown.splitlines()[-3:] == ["Wrote:", f"  {tmp_path / 'threes.png'}", f"  {tmp_path / 'threes.pt'}"]
    saved = torch.load(tmp_path / "threes.pt")
    assert saved["samples"].shape == (4, 1, 8, 8) and saved["labels"].tolist() == [3, 3, 3, 3]
    assert "--class must lie in [0, 10)" in error_of(capsys, "sample", str(out / "checkpoints"), "--class", "10")
    assert "guidance_scale must be a finite number; got nan" in error_of(
        capsys, "sample", str(out / "checkpoints"), "--class", "3", "--guidance", "nan", "--out", str(tmp_path / "nan")
    )
    assert not (tmp_path / "nan.pt").exists()
    assert "samples came out NaN or infinite" in error_of(
        capsys, "sample", str(out / "checkpoints"), "--class", "3", "--guidance", "1e300", "--out", str(tmp_path / "inf")
    )
    assert not (tmp_path / "inf.pt").exists()
    assert "is not a classifier cache" in error_of(
        capsys, "evaluate", str(out / "checkpoints"), "--n", "3", "--steps", "5", "--classifier", str(out / "checkpoints")
    )
    classifier = tmp_path / "classifier.pt"
    shown = run_in_process(capsys, "evaluate", str(out / "checkpoints"), "--n", "3", "--steps", "5",
                           "--classifier", str(classifier), "--no-progress")  # fmt: skip
    assert "class accuracy" in shown and "Fréchet" in shown and shown.splitlines()[-2:] == ["Wrote:", f"  {classifier}"]


def test_inpaint_and_edit_a_digits_checkpoint_and_refuse_bad_files(tmp_path, capsys, moons_checkpoint):
    out = tmp_path / "digits"
    run_in_process(capsys, "train", "digits", "--epochs", "1", "--quick", "--out", str(out), "--device", "cpu", "--no-progress")
    checkpoint = str(out / "checkpoints")
    digit = (np.arange(64).reshape(8, 8) * 4).astype(np.uint8)  # any 8x8 grey image
    Image.fromarray(digit).save(tmp_path / "digit.png")
    mask = np.zeros((8, 8), np.uint8)
    mask[:4] = 255  # the top half is known, the bottom half filled in
    Image.fromarray(mask).save(tmp_path / "mask.png")
    shown = run_in_process(capsys, "inpaint", checkpoint, "--image", str(tmp_path / "digit.png"), "--mask", str(tmp_path / "mask.png"),
                           "--steps", "4", "--resample", "2", "--n", "3", "--out", str(tmp_path / "filled"), "--no-progress")  # fmt: skip
    assert shown.splitlines()[-3:] == ["Wrote:", f"  {tmp_path / 'filled.png'}", f"  {tmp_path / 'filled.pt'}"]
    results = torch.load(tmp_path / "filled.pt")["results"]
    image = torch.from_numpy(digit).float() / 127.5 - 1
    assert results.shape == (3, 1, 8, 8) and torch.equal(results[:, 0, :4], image[:4].expand(3, 4, 8))
    shown = run_in_process(capsys, "edit", checkpoint, "--image", str(tmp_path / "digit.png"), "--strength", "0.3",
                           "--steps", "4", "--n", "2", "--out", str(tmp_path / "edited"), "--no-progress")  # fmt: skip
    assert torch.load(tmp_path / "edited.pt")["results"].shape == (2, 1, 8, 8) and (tmp_path / "edited.png").stat().st_size > 1000
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(tmp_path / "big.png")
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(tmp_path / "white.png")
    (tmp_path / "text.png").write_text("not an image")
    image_args = ("--image", str(tmp_path / "digit.png"))
    assert "is 9x9 pixels but this checkpoint's model makes 8x8 images" in error_of(
        capsys, "inpaint", checkpoint, *image_args, "--mask", str(tmp_path / "big.png"))
    assert "white everywhere: nothing to fill in" in error_of(capsys, "inpaint", checkpoint, *image_args, "--mask", str(tmp_path / "white.png"))
    assert "not an image file" in error_of(capsys, "edit", checkpoint, "--image", str(tmp_path / "text.png"), "--strength", "0.5")
    assert "strength must lie in (0, 1]" in error_of(capsys, "edit", checkpoint, *image_args, "--strength", "2")
    assert "--sampler must be ddpm or ddim" in error_of(
        capsys, "inpaint", checkpoint, *image_args, "--mask", str(tmp_path / "mask.png"), "--sampler", "heun")
    assert "works on image checkpoints" in error_of(capsys, "edit", str(moons_checkpoint), *image_args, "--strength", "0.5")


def test_every_checkpoint_command_runs_on_an_edm_checkpoint(tmp_path, capsys):
    out = tmp_path / "edm"
    run_in_process(capsys, "train", "digits", "--objective", "edm", "--quick", "--out", str(out), "--device", "cpu", "--no-progress")
    checkpoint = str(out / "checkpoints")
    assert type(load_checkpoint(checkpoint)).__name__ == "EDMPreconditioner"
    run_in_process(capsys, "sample", checkpoint, "--sampler", "heun", "--steps", "4", "--n", "1", "--out", str(tmp_path / "s"), "--no-progress")
    assert torch.load(tmp_path / "s.pt")["samples"].shape == (10, 1, 8, 8)
    shown = run_in_process(capsys, "evaluate", checkpoint, "--n", "2", "--steps", "4", "--classifier", str(tmp_path / "c.pt"), "--no-progress")
    assert "class accuracy" in shown
    run_in_process(capsys, "animate", checkpoint, "--steps", "8", "--frames", "6", "--out", str(tmp_path / "a"), "--no-progress")
    assert (tmp_path / "a.gif").stat().st_size > 1000
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "digit.png")
    mask = np.zeros((8, 8), np.uint8)
    mask[:, :4] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    run_in_process(capsys, "inpaint", checkpoint, "--image", str(tmp_path / "digit.png"), "--mask", str(tmp_path / "mask.png"),
                   "--sampler", "ddim", "--steps", "4", "--n", "2", "--out", str(tmp_path / "i"), "--no-progress")  # fmt: skip
    assert torch.load(tmp_path / "i.pt")["results"].shape == (2, 1, 8, 8)
    for command in ("sample", "animate"):
        assert "an EDMDiffusion has none" in error_of(capsys, command, checkpoint, "--sampler", "ddpm", "--steps", "8")


def test_a_bad_checkpoint_gives_one_line_of_error(tmp_path, capsys):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    result = run_cli("sample", str(corrupt))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: checkpoint") and "corrupt" in lines[0], result.stderr
    assert "no checkpoint file" in error_of(capsys, "sample", str(tmp_path / "missing.pt"))
    other_version = tmp_path / "old.pt"
    torch.save({"format_version": 0}, other_version)
    assert "format 0" in error_of(capsys, "evaluate", str(other_version))


def test_missing_mnist_files_are_named(tmp_path, capsys):
    message = error_of(capsys, "train", "mnist", "--data", str(tmp_path), "--epochs", "1")
    assert "train-images-idx3-ubyte" in message and str(tmp_path) in message


def test_train_cifar10_from_its_files_then_sample_the_checkpoint(tmp_path, capsys):
    write_fake_cifar10(tmp_path / "data", n_per_batch=4)  # 20 training images in the real pickle format
    out = tmp_path / "cifar10"
    result = run_cli("train", "cifar10", "--data", str(tmp_path / "data"), "--epochs", "2", "--quick",
                     "--out", str(out), "--device", "cpu", "--no-progress")  # fmt: skip
    assert result.returncode == 0, result.stderr
    checkpoint = out / "checkpoints" / "checkpoint-step00000002.pt"  # 2 epochs of one batch
    assert written(result) == [str(out / "samples.png"), str(out / "loss_curve.png"), str(checkpoint)]
    assert (out / "samples.png").stat().st_size > 1000
    shown = run_in_process(capsys, "sample", str(out / "checkpoints"), "--n", "1", "--steps", "3",
                           "--out", str(tmp_path / "s"), "--no-progress")  # fmt: skip
    assert shown.splitlines()[-3:] == ["Wrote:", f"  {tmp_path / 's.png'}", f"  {tmp_path / 's.pt'}"]
    saved = torch.load(tmp_path / "s.pt")
    assert saved["samples"].shape == (10, 3, 32, 32) and saved["labels"].tolist() == list(range(10))


def test_train_mnist_from_its_files_stops_after_the_quick_steps(tmp_path, capsys):
    write_mnist(tmp_path / "data", "train", n=4)  # raw IDX files
    out = tmp_path / "mnist"
    shown = run_in_process(capsys, "train", "mnist", "--data", str(tmp_path / "data"), "--epochs", "30", "--quick",
                           "--out", str(out), "--device", "cpu", "--no-progress")  # fmt: skip
    assert "Trained 20 steps" in shown  # --quick: at most 20 of the 30 one-batch epochs
    assert shown.splitlines()[-1] == f"  {out / 'checkpoints' / 'checkpoint-step00000020.pt'}"
    assert (out / "samples.png").stat().st_size > 1000
    with pytest.raises(SystemExit, match="--quick shrinks the image experiments; moons is small already"):
        main(["train", "moons", "--quick"])


def test_train_under_torchrun_trains_on_two_processes_and_reports_once(tmp_path):
    out = tmp_path / "digits"
    env = {k: v for k, v in ONE_THREAD.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env |= {"MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "diffusion_playground", "train", "digits", "--epochs", "1", "--quick", "--out", str(out),
               "--device", "cpu", "--no-progress"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               start_new_session=True)  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)  # torchrun passes it on to its workers (in sessions of their own)
        stdout, stderr = process.communicate(timeout=60)
        pytest.fail(f"torchrun ... train digits did not finish in 300 s:\n{stdout}{stderr}")
    assert process.returncode == 0, stdout + stderr
    assert "data-parallel training on 2 processes (gloo): global batch 128 (64 per process)" in stdout
    for line in ("unet_tiny:", "Trained 12 steps", "Wrote:"):  # one rank reports, once
        assert stdout.count(line) == 1, stdout
    assert "Warning" not in stderr, stderr  # e.g. DDP's stride warning, or a process group left undestroyed
    files = [out / "samples.png", out / "loss_curve.png", out / "checkpoints" / "checkpoint-step00000012.pt"]
    assert stdout.splitlines()[-4:] == ["Wrote:", *(f"  {path}" for path in files)]
    assert sorted(path for path in out.rglob("*") if path.is_file()) == sorted(files)


def test_only_train_runs_under_torchrun(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    message = error_of(capsys, "sample", "run/checkpoints")
    assert message == "error: only `train` runs under torchrun; run `sample` as one process"


def one_line_failure(result: subprocess.CompletedProcess) -> str:
    """The stderr of a failed command: one "error: ..." line (after one "warning: ..." line per warning)."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert lines[-1].startswith("error: ") and all(line.startswith("warning: ") for line in lines[:-1]), result.stderr
    return lines[-1]


def test_every_failure_is_one_line_and_a_nonzero_exit(moons_checkpoint, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("in the way")
    line = one_line_failure(run_cli("sample", str(moons_checkpoint), "--out", str(a_file / "s"), "--no-progress"))
    assert f"--out's folder {a_file} can't be written to" in line
    line = one_line_failure(run_cli("train", "moons", "--epochs", "1", "--out", str(a_file / "run"), "--no-progress"))
    assert "can't be written to" in line
    line = one_line_failure(run_cli("evaluate", str(moons_checkpoint), "--n", "1", "--steps", "2", "--no-progress"))
    assert "needs at least 2 samples" in line
    only_corrupt = tmp_path / "only-corrupt"
    only_corrupt.mkdir()
    (only_corrupt / "checkpoint-step00000010.pt").write_bytes(b"not a checkpoint")
    result = run_cli("sample", str(only_corrupt))
    assert "no usable checkpoint" in one_line_failure(result)
    assert result.stderr.startswith("warning: skipping unusable checkpoint") and "warnings.warn" not in result.stderr
    assert "invalid int value" in one_line_failure(run_cli("sample", str(moons_checkpoint), "--steps", "many"))
    assert "--seed must lie in 0 .. 2**32 - 1" in one_line_failure(run_cli("sample", str(moons_checkpoint), "--seed", "99999999999999999999"))
    assert "--data is for the image datasets" in one_line_failure(run_cli("train", "moons", "--data", "somewhere"))
    assert "--objective is for the image datasets" in one_line_failure(run_cli("train", "moons", "--objective", "flow"))
    assert "are for image checkpoints" in one_line_failure(run_cli("evaluate", str(moons_checkpoint), "--classifier", "c.pt"))


def test_out_naming_a_folder_writes_into_it(moons_checkpoint, tmp_path, capsys):
    folder = tmp_path / "figures"
    folder.mkdir()
    shown = run_in_process(capsys, "sample", str(moons_checkpoint), "--n", "50", "--steps", "3", "--out", str(folder), "--no-progress")
    assert shown.splitlines()[-2:] == [f"  {folder / 'samples.png'}", f"  {folder / 'samples.pt'}"]


def test_ctrl_c_during_training_is_one_line_and_the_checkpoints_stay_usable(tmp_path):
    out = tmp_path / "moons"
    command = [sys.executable, "-m", "diffusion_playground", "train", "moons", "--epochs", "500", "--out", str(out), "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ONE_THREAD)
    try:
        deadline = time.monotonic() + 120
        while not list((out / "checkpoints").glob("checkpoint-step*.pt")) and time.monotonic() < deadline:
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130 and "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines() == ["error: interrupted; run the same command again to resume from the last checkpoint"]
    assert load_checkpoint(out / "checkpoints", device="cpu") is not None


def test_animate_checks_its_frames_against_the_steps_actually_walked_before_sampling(moons_checkpoint, capsys, monkeypatch):
    from diffusion_playground.experiments import from_checkpoint

    monkeypatch.setattr(from_checkpoint, "draw_samples", lambda *a, **k: pytest.fail("sampled before checking --frames"))
    message = error_of(capsys, "animate", str(moons_checkpoint), "--sampler", "heun", "--steps", "100", "--frames", "101")
    assert "--frames 101 needs at least 100 sampling steps; got --steps 100 (on this model's trained noise levels --steps 100 walks 98)" in message
