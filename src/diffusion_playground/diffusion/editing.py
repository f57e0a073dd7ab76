"""Using a trained model on an image it is given: inpainting by replacement (with RePaint's resampling) and SDEdit.

Both walk the samplers' VE variable x_sigma = x0 + sigma eps (denoiser.py) on the same grids as
:func:`~diffusion_playground.diffusion.backward.generate_samples`, so they work on any trained wrapper (eps, x0, v,
flow), on the exact :class:`~diffusion_playground.diffusion.optimal_denoiser.OptimalDenoiser`, and with guidance.

Inpainting (Song et al. 2021 "Score-based generative modeling", appendix I.2; Lugmayr et al. 2022 "RePaint", section 4.1),
with a mask m = 1 where the image y is known: after every reverse step sigma_t -> sigma_s,

    x_s = m * (y + sigma_s eps') + (1 - m) * x_s^reverse,     eps' ~ N(0, I) fresh,

i.e. the known pixels are re-noised to the current level. The unknown pixels never see the known ones except through
the network, so plain replacement does *not* draw from p(x_unknown | y): on a Gaussian it is pulled towards the prior
(tests/test_editing.py measures it). RePaint's resampling (section 4.2) repeats each step ``resample`` times, going
back up with the forward transition x_t = x_s + sqrt(sigma_t^2 - sigma_s^2) z (in the VE variable, the DDPM
q(x_t | x_s) of the strided chain) between repeats, which harmonises the two parts; with enough repeats it reaches
the exact conditional.

SDEdit (Meng et al. 2022, section 3): x_{t0} ~ q(x_{t0} | x0 = input), then the reverse process from t0 to 0. The
strength t0 / T trades faithfulness (small t0: the input survives) for realism (t0 -> T: a fresh sample).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from diffusion_playground.checks import check_integer, check_real
from diffusion_playground.diffusion.backward import (
    SamplerName,
    _check_schedule_fits_model,
    check_guidance_labels,
    class_labels_tensor,
    generate_samples,
    model_device,
    non_finite_count,
    sampler_sigmas,
    sampling_denoiser,
)
from diffusion_playground.diffusion.edm import EDMDiffusion
from diffusion_playground.diffusion.noise_schedule import NoiseSchedule
from diffusion_playground.diffusion.samplers import check_eta, ddim_step
from diffusion_playground.diffusion.step_schedules import sigmas_at_time_steps, uniform_time_steps
from diffusion_playground.diffusion.training_utils import randn_like


def check_image(image: Tensor) -> Tensor:
    """``image`` checked: a finite float (B, ...) batch."""
    if not isinstance(image, Tensor) or image.ndim < 2 or not image.is_floating_point():
        got = f"{image.dtype} tensor of shape {tuple(image.shape)}" if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"image must be a float tensor of shape (batch, ...), e.g. (1, 1, 28, 28) in [-1, 1]; got {got}")
    if not bool(torch.isfinite(image).all()):
        raise ValueError("image holds NaN or infinite values")
    return image


def check_mask(mask: Tensor, image: Tensor) -> Tensor:
    """``mask`` (0/1 or bool, of ``image``'s shape or broadcastable to it) as a float tensor of ``image``'s shape."""
    if not isinstance(mask, Tensor):
        raise ValueError(f"mask must be a tensor (1 where the image is known, 0 where it is filled in); got {type(mask).__name__}")
    try:
        mask = mask.to(image.device).broadcast_to(image.shape)
    except RuntimeError:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not fit the image of shape {tuple(image.shape)}: give it the "
            "image's shape, or one that broadcasts to it, such as (1, H, W)"
        ) from None
    mask = mask.float()
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("mask must hold only 0 (fill in) and 1 (known), or be a bool tensor; threshold it first, e.g. mask > 0.5")
    return mask


@torch.no_grad()
def inpaint(
    model: nn.Module,
    noise_schedule: NoiseSchedule | EDMDiffusion,
    image: Tensor,
    mask: Tensor,
    *,
    sampler: SamplerName = "ddpm",
    steps: int | None = None,
    eta: float | None = None,
    resample: int = 1,
    class_labels: Tensor | Sequence[int] | int | None = None,
    guidance_scale: float = 0.0,
    clip_denoised: bool = False,
    generator: torch.Generator | None = None,
    return_trajectory: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Fill in the pixels of ``image`` where ``mask`` is 0, keeping those where it is 1 (see the module docstring).

    Args:
        model: a trained wrapper, or any denoiser D(x, sigma) (e.g. ``OptimalDenoiser(data)``).
        noise_schedule: the process it was trained with.
        image: (B, ...) the images (or points) to complete, in data space; the masked-out values are ignored.
        mask: 1 (or True) where ``image`` is known, 0 where it is filled in (RePaint's m; diffusers' inpainting
            masks are the other way round, white = repaint); of the image's shape or broadcastable to it.
        sampler: a sampler that walks the posterior: ``"ddpm"`` (Ho et al. 2020; eta = 1) or ``"ddim"`` (Song et
            al. 2021; its ``eta``, default 0).
        steps: reverse steps N (None: every trained step), on the grid ``generate_samples`` walks with them.
        resample: RePaint's U, the times each step is taken (U - 1 trips back up in between); 1 = plain replacement.
            Network evaluations: N U.
        class_labels, guidance_scale, clip_denoised, generator: as for ``generate_samples``.
        return_trajectory: also return the states (N + 1, B, ...) after each step, on the process's x_t scale.
    Returns:
        the completed images of ``image``'s shape (exactly ``image`` where ``mask`` is 1), or ``(images, trajectory)``.
    """
    if sampler not in ("ddpm", "ddim"):
        raise ValueError(f"inpainting walks the reverse posterior: sampler must be 'ddpm' or 'ddim'; got {sampler!r}")
    if eta is not None and sampler == "ddpm":
        raise ValueError("sampler='ddpm' is DDIM with eta = 1; pass sampler='ddim' to choose eta")
    eta = 1.0 if sampler == "ddpm" else 0.0 if eta is None else check_eta(check_real("eta", eta))
    resample = check_integer("resample", resample, minimum=1)
    guidance_scale = check_real("guidance_scale", guidance_scale, minimum=0.0)
    if isinstance(noise_schedule, NoiseSchedule):
        _check_schedule_fits_model(model, noise_schedule)
    elif not isinstance(noise_schedule, EDMDiffusion):  # an EDMDiffusion's sampler is checked by sampler_sigmas
        raise TypeError(f"noise_schedule must be the NoiseSchedule (or EDMDiffusion) the model was trained with; got {type(noise_schedule).__name__}")
    device = model_device(model)
    image = check_image(image).to(device)
    mask = check_mask(mask, image)
    labels = class_labels_tensor(model, class_labels, image.shape[0], device)
    check_guidance_labels(guidance_scale, labels)
    schedule = copy.copy(noise_schedule).to(device)  # a device copy: the caller's schedule stays where it is
    sigmas = [float(s) for s in sampler_sigmas(model, schedule, sampler, steps)]  # the grid generate_samples walks

    def known(sigma: float) -> Tensor:  # the known pixels at noise level sigma: y + sigma eps'
        return image if sigma == 0 else image + sigma * randn_like(image, generator)

    was_training = model.training
    model.eval()
    try:
        denoiser = sampling_denoiser(model, schedule, guidance_scale, clip_denoised)
        x = randn_like(image, generator) / float(schedule.input_scale(torch.tensor(sigmas[0])))  # x_sigma_0
        x = mask * known(sigmas[0]) + (1 - mask) * x
        trajectory = [x * float(schedule.input_scale(torch.tensor(sigmas[0])))] if return_trajectory else None
        for sigma_t, sigma_s in zip(sigmas, sigmas[1:]):
            for repeat in range(resample):
                x_s, _ = ddim_step(denoiser, x, sigma_t, sigma_s, labels=labels, eta=eta, generator=generator)
                x_s = mask * known(sigma_s) + (1 - mask) * x_s  # replacement (RePaint, section 4.1)
                if repeat < resample - 1:  # back up to sigma_t with the forward transition (RePaint, section 4.2)
                    x = x_s + (sigma_t**2 - sigma_s**2) ** 0.5 * randn_like(x_s, generator)
            x = x_s
            if trajectory is not None:
                trajectory.append(x * float(schedule.input_scale(torch.tensor(sigma_s))))
    finally:
        model.train(was_training)
    bad = non_finite_count(x)
    if bad:  # as generate_samples: say so rather than return NaN quietly
        warnings.warn(f"{bad} of {x.shape[0]} inpainted images contain NaN or infinite values", RuntimeWarning, stacklevel=3)
    return (x, torch.stack(trajectory).cpu()) if trajectory is not None else x


def sdedit_start_step(noise_schedule: NoiseSchedule, strength: float) -> int:
    """t0 for ``strength`` in (0, 1]: round(strength T) trained steps are walked, t0 = that - 1 (strength 1: T - 1)."""
    strength = check_real("strength", strength)
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must lie in (0, 1] (the fraction of the trained steps to noise the input by); got {strength}")
    return max(round(strength * noise_schedule.T), 1) - 1


@torch.no_grad()
def sdedit(
    model: nn.Module,
    noise_schedule: NoiseSchedule,
    image: Tensor,
    strength: float,
    *,
    sampler: SamplerName = "ddpm",
    steps: int | None = None,
    eta: float = 0.0,
    class_labels: Tensor | Sequence[int] | int | None = None,
    guidance_scale: float = 0.0,
    clip_denoised: bool = False,
    generator: torch.Generator | None = None,
    return_trajectory: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """SDEdit (Meng et al. 2022): noise ``image`` to step t0 and denoise it back with ``sampler``.

    x_{t0} = a_{t0} image + s_{t0} eps (the forward process, ``sample_xt``), with t0 = round(strength T) - 1, then
    ``generate_samples(..., x_start=x_{t0})`` from sigma_{t0} down: every trained step below t0 (``steps=None``) or
    ``steps`` of the sampler's grid with sigma_max = sigma_{t0}. ``strength=0`` returns ``image`` itself.

    Args:
        model: a trained wrapper, or any denoiser (e.g. ``OptimalDenoiser(data)``), trained with ``noise_schedule``.
        image: (B, ...) the inputs, in data space.
        strength: in [0, 1], the fraction of the T trained steps the input is noised by.
        sampler, steps, eta, class_labels, guidance_scale, clip_denoised, generator, return_trajectory: as for
            ``generate_samples``.
    Returns:
        the edited images of ``image``'s shape, or ``(images, trajectory)``.
    """
    if not isinstance(noise_schedule, NoiseSchedule):
        raise TypeError(
            f"sdedit's strength is a fraction of the trained steps of a NoiseSchedule; got {type(noise_schedule).__name__} "
            "(for an EDMDiffusion, noise the image to a sigma yourself and pass generate_samples(..., sigmas=, x_start=))"
        )
    image = check_image(image)
    if check_real("strength", strength) == 0.0:
        return (image.clone(), image[None].cpu()) if return_trajectory else image.clone()
    t0 = sdedit_start_step(noise_schedule, strength)
    if steps is None:  # every trained step t0, ..., 0
        grid = sigmas_at_time_steps(noise_schedule, uniform_time_steps(noise_schedule.T, t0 + 1, first=t0))
        steps = t0 + 1
    else:
        steps = min(check_integer("steps", steps, minimum=1), t0 + 1)  # at most every trained step below t0
        grid = sampler_sigmas(model, noise_schedule, sampler, steps, sigma_max=float(noise_schedule.sigmas[t0]))
    sigma_start = grid[0].to(image.device)
    x_start = noise_schedule.input_scale(sigma_start) * (image + sigma_start * randn_like(image, generator))
    options = {"steps": steps, "sigma_max": float(sigma_start)} if sampler == "ddpm" else {"sigmas": grid}
    return generate_samples(
        model, noise_schedule, tuple(image.shape), sampler=sampler, eta=eta, class_labels=class_labels,
        guidance_scale=guidance_scale, clip_denoised=clip_denoised, generator=generator,
        return_trajectory=return_trajectory, x_start=x_start, device=image.device, **options,
    )  # fmt: skip


__all__ = ["check_image", "check_mask", "inpaint", "sdedit", "sdedit_start_step"]
