"""diffusion_playground: denoising diffusion models to read, run and modify.

The public API (names and call shapes kept stable across versions)::

    from diffusion_playground import (
        BaseBackbone, MLPBackbone, TimeConditionedModel, TimeAndClassConditionedModel,
        MultimodalModel, NoiseSchedule, LinearNoiseSchedule, CosineNoiseSchedule, RectifiedFlow,
        CategoricalDiffusion, MultimodalDiffusion, EDMDiffusion, EDMPreconditioner,
        sample_xt, generate_samples, train_denoiser, load_checkpoint,
        OptimalDenoiser, ClassifierFreeGuidance, as_denoiser, log_likelihood, inpaint, sdedit,
    )
"""

__version__ = "0.1.0"

from diffusion_playground.diffusion import (  # noqa: E402
    CategoricalDiffusion,
    ClassifierFreeGuidance,
    CosineNoiseSchedule,
    EDMDiffusion,
    LinearNoiseSchedule,
    MultimodalDiffusion,
    NoiseSchedule,
    OptimalDenoiser,
    RectifiedFlow,
    as_denoiser,
    generate_samples,
    inpaint,
    log_likelihood,
    sample_xt,
    sdedit,
)
from diffusion_playground.models import (  # noqa: E402
    BaseBackbone,
    MLPBackbone,
    MultimodalModel,
    TimeAndClassConditionedModel,
    TimeConditionedModel,
)
from diffusion_playground.models.edm_preconditioner import EDMPreconditioner  # noqa: E402
from diffusion_playground.training import TrainingHistory, load_checkpoint, train_denoiser  # noqa: E402

__all__ = [
    "BaseBackbone",
    "CategoricalDiffusion",
    "ClassifierFreeGuidance",
    "CosineNoiseSchedule",
    "EDMDiffusion",
    "EDMPreconditioner",
    "LinearNoiseSchedule",
    "MLPBackbone",
    "MultimodalDiffusion",
    "MultimodalModel",
    "NoiseSchedule",
    "OptimalDenoiser",
    "RectifiedFlow",
    "TimeAndClassConditionedModel",
    "TimeConditionedModel",
    "TrainingHistory",
    "__version__",
    "as_denoiser",
    "generate_samples",
    "inpaint",
    "load_checkpoint",
    "log_likelihood",
    "sample_xt",
    "sdedit",
    "train_denoiser",
]
