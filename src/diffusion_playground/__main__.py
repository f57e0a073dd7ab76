"""Command line: train a model, then sample, evaluate or animate any checkpoint it wrote.

    python -m diffusion_playground train {moons,swiss_roll,eight_gaussians,checkerboard,digits,mnist,cifar10}
                                         [--epochs N] [--out DIR] [--device D] [--num-samples N] [--quick]
                                         [--data DIR] [--recipe {auto,full,cpu}] [--objective {eps,x0,v,flow,edm}]
    python -m diffusion_playground sample CHECKPOINT [--sampler S] [--steps N] [--class K] [--guidance W] [--n N] [--out PATH]
    python -m diffusion_playground evaluate CHECKPOINT
    python -m diffusion_playground animate CHECKPOINT [--frames N] [--fps N] [--out PATH]
    python -m diffusion_playground inpaint CHECKPOINT --image FILE --mask FILE [--resample U] [--out PATH]
    python -m diffusion_playground edit CHECKPOINT --image FILE --strength S [--out PATH]

CHECKPOINT is a checkpoint-step*.pt file or the checkpoints/ folder of a run (its newest valid file); the
checkpoint rebuilds its own model and noise schedule, and a 2-D checkpoint knows its dataset (samples are compared
with fresh points of it). Every command ends by listing the files it wrote.

`train` also runs data-parallel under torchrun (one process per GPU, or gloo on CPUs):

    torchrun --nproc_per_node=N -m diffusion_playground train DATASET [...]

Every process trains; rank 0 alone writes the checkpoints, samples, evaluates, writes the figures and prints.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import torch

from diffusion_playground.data.toys_2d import TOY_DATASETS
from diffusion_playground.diffusion.backward import SAMPLERS
from diffusion_playground.experiments import editing
from diffusion_playground.experiments import from_checkpoint as ckpt_tools
from diffusion_playground.experiments.images import IMAGE_RECIPES, OBJECTIVES, run_images
from diffusion_playground.experiments.moons import MoonsConfig, run_moons
from diffusion_playground.training import distributed


def _device(name: str) -> str:
    if name == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu")
    return name


def _seed(text: str) -> int:
    seed = int(text)  # argparse turns a ValueError here into "invalid _seed value"
    if not 0 <= seed < 2**32:
        raise argparse.ArgumentTypeError(f"--seed must lie in 0 .. 2**32 - 1; got {seed}")
    return seed


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", type=_device, choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu",
        help="where to run (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument("--seed", type=_seed, default=0, help="random seed, 0 to 2**32 - 1 (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def _add_sampling(parser: argparse.ArgumentParser, *, default_steps: int = 50) -> None:
    parser.add_argument("checkpoint", help="a checkpoint-step*.pt file, or a folder of them (the newest valid one is used)")
    parser.add_argument("--sampler", choices=list(SAMPLERS), default="ddim", help="reverse-process sampler (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=default_steps, help="sampling steps (default: %(default)s)")
    parser.add_argument("--class", dest="class_label", type=int, default=None,
                        help="images: draw this class only (default: every class, one row each)")  # fmt: skip
    parser.add_argument("--guidance", type=float, default=0.0,
                        help="classifier-free guidance weight w (Ho & Salimans): (1 + w) D(x, y) - w D(x, null); "
                             "default 0 = none. Diffusers' guidance_scale is 1 + w: its 7.5 is --guidance 6.5")  # fmt: skip
    parser.add_argument("--n", type=int, default=None,
                        help="points: number of samples (default 2000); images: samples per class (default 8)")  # fmt: skip
    parser.add_argument("--no-clip", action="store_true",
                        help="images: do not clip the x0 estimate to [-1, 1] at each step (clipping is on by default)")  # fmt: skip
    _add_common(parser)


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors in one line ("error: ... (see --help)") like every other CLI failure."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m diffusion_playground", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train", help="train a diffusion model on a dataset, then sample (and, for the 2-D toys, evaluate) it"
    )
    toys = ", ".join(TOY_DATASETS)
    train.add_argument("dataset", choices=[*TOY_DATASETS, *IMAGE_RECIPES],
                       help=f"which experiment to run: a 2-D toy ({toys}) or an image dataset")  # fmt: skip
    train.add_argument("--epochs", type=int, default=None,
                       help=f"passes over the data (default: 2-D toys {MoonsConfig.epochs}, "
                            + ", ".join(f"{k} {r.defaults.epochs}" for k, r in IMAGE_RECIPES.items())
                            + "; the mnist CPU recipe: about "
                            + f"{IMAGE_RECIPES['mnist'].cpu_defaults.train_steps:,} steps, whatever the data size)")  # fmt: skip
    train.add_argument("--out", default=None, help="folder for checkpoints and figures (default: outputs/DATASET)")
    train.add_argument(
        "--num-samples", type=int, default=MoonsConfig.num_eval_samples,
        help="2-D toys: samples drawn and compared with as many fresh data points (default: %(default)s)",
    )  # fmt: skip
    train.add_argument("--data", default="data", help="mnist/cifar10: folder holding the dataset files (default: %(default)s)")
    train.add_argument("--download", action="store_true", help="mnist/cifar10: download missing files into --data")
    train.add_argument(
        "--quick", action="store_true",
        help="digits/mnist/cifar10: a smoke test of the whole pipeline: a small U-Net, at most 20 training steps, "
        "2 samples per class in 8 DDIM steps (the samples are still noise)",
    )  # fmt: skip
    train.add_argument(
        "--recipe", choices=["auto", "full", "cpu"], default="auto",
        help="mnist: 'full' = unet_mnist sized for the 60,000 images on a GPU, 'cpu' = the smaller U-Net and "
        "settings measured on 2 CPU cores with the 4,000-digit sample; auto (default) = full on a CUDA device with "
        "the whole dataset, else cpu",
    )  # fmt: skip
    train.add_argument(
        "--objective", choices=list(OBJECTIVES), default=None,
        help="images: what the U-Net learns instead of the recipe's target: eps / x0 / v on the linear schedule, "
        "flow = flow matching on the straight path (RectifiedFlow), edm = Karras et al.'s preconditioned denoiser "
        "(EDMPreconditioner on EDMDiffusion); same budget (default: the recipe's, v for the mnist CPU recipe)",
    )  # fmt: skip
    _add_common(train)

    sample = commands.add_parser("sample", help="draw samples from a checkpoint: a PNG figure and a .pt tensor")
    _add_sampling(sample)
    sample.add_argument("--out", default="outputs/samples", help="output path without suffix, or a folder to write samples.png/.pt in (default: %(default)s)")

    evaluate = commands.add_parser(
        "evaluate", help="measure a checkpoint's samples (points: sliced W2 and MMD^2 vs fresh points of its 2-D toy; "
        "class-conditional images: a small classifier's accuracy and feature Fréchet distance)",
    )  # fmt: skip
    _add_sampling(evaluate)
    evaluate.add_argument("--data", default="data", help="mnist/cifar10: folder holding the dataset files (default: %(default)s)")
    evaluate.add_argument("--download", action="store_true", help="mnist/cifar10: download missing files into --data")
    evaluate.add_argument("--classifier", default=None,
                          help="images: the cached classifier, trained there if absent (default: outputs/classifiers/DATASET.pt)")  # fmt: skip

    animate = commands.add_parser("animate", help="a GIF of the reverse process, from noise to samples")
    _add_sampling(animate)
    animate.add_argument("--frames", type=int, default=40, help="frames of the GIF (default: %(default)s)")
    animate.add_argument("--fps", type=int, default=10, help="frames per second (default: %(default)s)")
    animate.add_argument("--out", default="outputs/reverse_process", help="output path, .gif added, or a folder to write reverse_process.gif in (default: %(default)s)")

    inpaint = commands.add_parser(
        "inpaint", help="fill in the black pixels of --mask in --image (replacement, RePaint's resampling): a before/after PNG and a .pt"
    )  # fmt: skip
    _add_sampling(inpaint)
    inpaint.set_defaults(sampler="ddpm")
    inpaint.add_argument("--image", required=True, help="the image file (PNG, JPEG, ...) of the checkpoint's size; digits white on black")
    inpaint.add_argument("--mask", required=True, help="a file of the same size: white = known, kept; black = filled in (diffusers' masks are the other way round)")
    inpaint.add_argument("--resample", type=int, default=1, help="RePaint's U: each step taken U times, with U - 1 trips back up (default: %(default)s = plain replacement)")
    inpaint.add_argument("--out", default="outputs/inpainted", help="output path without suffix, or a folder to write inpainted.png/.pt in (default: %(default)s)")

    edit = commands.add_parser("edit", help="SDEdit: noise --image to --strength and denoise it back: a before/after PNG and a .pt")
    _add_sampling(edit)
    edit.add_argument("--image", required=True, help="the image file (PNG, JPEG, ...) of the checkpoint's size; digits white on black")
    edit.add_argument("--strength", type=float, required=True, help="in [0, 1]: the fraction of the trained steps the image is noised by (0 = unchanged, 1 = a fresh sample)")
    edit.add_argument("--out", default="outputs/edited", help="output path without suffix, or a folder to write edited.png/.pt in (default: %(default)s)")
    return parser


def _print_written(paths: Sequence[Path | str | None]) -> None:
    paths = [path for path in paths if path is not None]
    print("Wrote:" if paths else "Wrote: no files")
    for path in paths:
        print(f"  {path}")


def _train(args: argparse.Namespace) -> None:
    if args.epochs is not None and args.epochs < 1:
        raise SystemExit(f"error: --epochs must be >= 1; got {args.epochs}")
    out = args.out or f"outputs/{args.dataset}"
    if args.dataset not in TOY_DATASETS:
        result = run_images(
            args.dataset, out, data_root=args.data, download=args.download, epochs=args.epochs, seed=args.seed,
            quick=args.quick, recipe=args.recipe, device=args.device, show_progress=not args.no_progress,
            objective=args.objective,
        )  # fmt: skip
        if not distributed.is_main_process():  # torchrun: rank 0 reports what the run wrote
            return
        print(f"\n{args.dataset}: the {result['recipe']} recipe. Trained {result['steps']} steps in {result['train_seconds']:.0f} s and drew the sample grid in "
              f"{result['sample_seconds']:.0f} s on {args.device}.")  # fmt: skip
        _print_written([*result["paths"].values(), result["checkpoint"]])
        return
    ignored = [flag for flag, used in (("--data", args.data != "data"), ("--download", args.download),
                                       ("--recipe", args.recipe != "auto"), ("--objective", args.objective is not None))
               if used]  # fmt: skip
    if ignored:
        raise SystemExit(
            f"error: {', '.join(ignored)} {'is' if len(ignored) == 1 else 'are'} for the image datasets; {args.dataset} is "
            "generated, not read (the 2-D objectives are compared in notebooks/experiments/moons/flow_matching.ipynb)"
        )
    if args.quick:
        raise SystemExit(
            f"error: --quick shrinks the image experiments; {args.dataset} is small already: "
            "use --epochs, --num-samples"
        )
    if args.num_samples < 2:
        raise SystemExit(f"error: --num-samples must be >= 2; got {args.num_samples}")
    epochs = MoonsConfig.epochs if args.epochs is None else args.epochs
    result = run_moons(
        MoonsConfig(epochs=epochs, num_eval_samples=args.num_samples, seed=args.seed, dataset=args.dataset), out,
        device=args.device, show_progress=not args.no_progress,
    )  # fmt: skip
    if not distributed.is_main_process():
        return
    print(
        f"\nTrained {result['steps']} steps in {result['train_seconds']:.0f} s and drew {args.num_samples} samples "
        f"({result['config']['time_steps']} DDPM steps) in {result['sample_seconds']:.0f} s on {args.device}."
    )
    _print_point_quality(result["quality"], args.num_samples, args.dataset)
    _print_written([*result["paths"].values(), result["checkpoint"]])


def _print_point_quality(quality: dict[str, float], n: int, dataset: str) -> None:
    print(f"Sample quality ({n} samples vs {n} fresh {dataset} points; floor = a second fresh real sample of {n}):")
    print(
        f"  sliced Wasserstein-2: {quality['sliced_wasserstein']:.4f}   floor {quality['sliced_wasserstein_floor']:.4f}"
        f"   ratio {quality['sliced_wasserstein_ratio']:.2f}x"
    )
    print(f"  MMD^2 (RBF):          {quality['mmd2']:.2e}   floor {quality['mmd2_floor']:.2e}   ratio {quality['mmd2_ratio']:.2f}x")


def _sampling_options(args: argparse.Namespace) -> ckpt_tools.SamplingOptions:
    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1; got {args.steps}")
    if args.n is not None and args.n < 1:
        raise ValueError(f"--n must be >= 1; got {args.n}")
    return ckpt_tools.SamplingOptions(
        sampler=args.sampler, steps=args.steps, class_label=args.class_label, guidance_scale=args.guidance,
        num_samples=args.n, seed=args.seed, clip_denoised=not args.no_clip,
    )  # fmt: skip


def _sample(args: argparse.Namespace) -> None:
    trained = ckpt_tools.open_checkpoint(args.checkpoint, device=args.device)
    paths = ckpt_tools.write_samples(trained, _sampling_options(args), args.out, show_progress=not args.no_progress)
    _print_written(paths)


def _evaluate(args: argparse.Namespace) -> None:
    trained = ckpt_tools.open_checkpoint(args.checkpoint, device=args.device)
    options = _sampling_options(args)
    if not trained.is_points:
        _evaluate_images(args, trained, options)
        return
    if args.classifier is not None or args.data != "data" or args.download:
        raise ValueError("--classifier, --data and --download are for image checkpoints; this one makes 2-D points")
    quality = ckpt_tools.evaluate_points(trained, options, show_progress=not args.no_progress)
    n = options.num_samples or 2000
    print(f"{options.sampler}, {options.steps} steps:")
    _print_point_quality(quality, n, trained.dataset)
    _print_written([])


def _evaluate_images(args: argparse.Namespace, trained: ckpt_tools.TrainedModel, options: ckpt_tools.SamplingOptions) -> None:
    classifier = Path(args.classifier or f"outputs/classifiers/{trained.dataset}.pt")
    if options.num_samples is None:
        options = ckpt_tools.SamplingOptions(**{**options.__dict__, "num_samples": 50})  # per class
    figures, trained_now = ckpt_tools.evaluate_images(
        trained, options, data_root=args.data, download=args.download, classifier_path=classifier,
        show_progress=not args.no_progress,
    )  # fmt: skip
    print(f"{trained.dataset}: {options.num_samples} samples per class, {options.sampler}, {options.steps} steps, "
          f"guidance {options.guidance_scale}; small-CNN classifier {classifier} (figures comparable only within this package):")  # fmt: skip
    print(f"  class accuracy of the samples:   {figures['accuracy']:.1%}   on real test images {figures['accuracy_real']:.1%}")
    print(f"  classifier-feature Fréchet dist: {figures['frechet']:.3f}   floor (real test vs real train) {figures['frechet_floor']:.3f}"
          f"   (biased upward at small n: {figures['num_generated']} generated vs {figures['num_real_test']} real test images)")
    _print_written([classifier] if trained_now else [])


def _animate(args: argparse.Namespace) -> None:
    trained = ckpt_tools.open_checkpoint(args.checkpoint, device=args.device)
    paths = ckpt_tools.animate_checkpoint(
        trained, _sampling_options(args), args.out, frames=args.frames, fps=args.fps, show_progress=not args.no_progress
    )
    _print_written(paths)


def _inpaint(args: argparse.Namespace) -> None:
    trained = ckpt_tools.open_checkpoint(args.checkpoint, device=args.device)
    paths = editing.inpaint_checkpoint(
        trained, _sampling_options(args), args.image, args.mask, args.out, resample=args.resample, count=args.n or 8
    )
    _print_written(paths)


def _edit(args: argparse.Namespace) -> None:
    trained = ckpt_tools.open_checkpoint(args.checkpoint, device=args.device)
    paths = editing.edit_checkpoint(trained, _sampling_options(args), args.image, args.out, strength=args.strength, count=args.n or 8)
    _print_written(paths)


_COMMANDS = {"train": _train, "sample": _sample, "evaluate": _evaluate, "animate": _animate, "inpaint": _inpaint, "edit": _edit}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    context = distributed.context_from_environment()  # None unless started by torchrun with WORLD_SIZE > 1
    if context is not None and args.command != "train":
        raise SystemExit(f"error: only `train` runs under torchrun; run `{args.command}` as one process")
    try:
        with distributed.main_rank_output(context), warnings.catch_warnings():  # other ranks would repeat rank 0's lines
            warnings.showwarning = _show_warning
            _COMMANDS[args.command](args)
    except _USER_ERRORS as error:  # every message says what was wrong and what to do: one line, no traceback
        raise SystemExit("error: " + " ".join(str(error).split())) from None
    except KeyboardInterrupt:  # Ctrl-C: the checkpoints written so far are complete (atomic); `train` resumes from them
        again = "; run the same command again to resume from the last checkpoint" if args.command == "train" else ""
        print(f"error: interrupted{again}", file=sys.stderr)
        return 130
    finally:
        distributed.shutdown()  # leave the process group (train joined it) before the interpreter exits
    return 0


# What bad input, a bad file or a full disk raise (OSError covers missing files, permissions, DatasetNotFoundError;
# ValueError covers CheckpointError; ImportError an optional package that is missing; FloatingPointError a
# diverged training run). Anything else is a bug and keeps its traceback.
_USER_ERRORS = (OSError, ValueError, TypeError, ImportError, FloatingPointError)


def _show_warning(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
    """Warnings as one line on stderr ("warning: ..."), without the source line Python shows by default."""
    print(f"warning: {' '.join(str(message).split())}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
