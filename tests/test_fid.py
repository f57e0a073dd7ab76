"""The optional true FID: the clear error without torchmetrics, and what it hands to torchmetrics when present.

torchmetrics is not a dependency, so both cases are staged through ``sys.modules``: a ``None`` entry makes the
import fail even where torchmetrics is installed, and a fake module records the tensors our code passes to it.
"""

from __future__ import annotations

import sys
import types

import pytest
import torch

from diffusion_playground.evaluation import FIDUnavailableError, frechet_inception_distance
from diffusion_playground.evaluation.fid import to_uint8_rgb


class _FakeFID:
    """Stands in for torchmetrics.image.fid.FrechetInceptionDistance and records every call."""

    instances: list[_FakeFID] = []
    error: Exception | None = None  # raised by the constructor, as a missing torch-fidelity or download would

    def __init__(self, feature: int = 2048, normalize: bool = False) -> None:
        if _FakeFID.error is not None:
            raise _FakeFID.error
        self.feature, self.normalize, self.device = feature, normalize, None
        self.updates: list[tuple[torch.Tensor, bool]] = []
        _FakeFID.instances.append(self)

    def to(self, device: torch.device) -> _FakeFID:
        self.device = device
        return self

    def update(self, imgs: torch.Tensor, real: bool) -> None:
        self.updates.append((imgs.clone(), real))

    def compute(self) -> torch.Tensor:
        return torch.tensor(12.5)


@pytest.fixture
def fake_torchmetrics(monkeypatch):
    _FakeFID.instances, _FakeFID.error = [], None
    fid_module = types.ModuleType("torchmetrics.image.fid")
    fid_module.FrechetInceptionDistance = _FakeFID
    for name, module in (
        ("torchmetrics", types.ModuleType("torchmetrics")),
        ("torchmetrics.image", types.ModuleType("torchmetrics.image")),
        ("torchmetrics.image.fid", fid_module),
    ):
        monkeypatch.setitem(sys.modules, name, module)
    return _FakeFID


def test_without_torchmetrics_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchmetrics", None)  # import fails even where torchmetrics is installed
    monkeypatch.setitem(sys.modules, "torchmetrics.image.fid", None)
    images = torch.zeros(4, 1, 8, 8)
    with pytest.raises(FIDUnavailableError) as caught:
        frechet_inception_distance(images, images)
    message = str(caught.value)
    assert isinstance(caught.value, ImportError)
    assert "pip install torchmetrics[image]" in message and "torch-fidelity" in message
    assert "downloads the Inception-v3 weights once" in message and "classifier_metrics" in message


def test_a_missing_torch_fidelity_or_weights_download_gives_the_same_clear_error(fake_torchmetrics):
    images = torch.zeros(4, 3, 8, 8)
    fake_torchmetrics.error = ModuleNotFoundError("FrechetInceptionDistance metric requires `Torch-fidelity`")
    with pytest.raises(FIDUnavailableError, match="torch-fidelity is missing"):
        frechet_inception_distance(images, images)
    fake_torchmetrics.error = OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")
    with pytest.raises(FIDUnavailableError, match="weights could not be downloaded.*pip install torchmetrics"):
        frechet_inception_distance(images, images)


def test_torchmetrics_gets_uint8_rgb_batches_and_its_value_is_returned(fake_torchmetrics):
    real = torch.tensor([-1.0, 0.0, 1.0, 0.5]).reshape(4, 1, 1, 1).expand(4, 1, 2, 2)  # grey, (N, 1, H, W)
    fake = torch.tensor([1.5, -3.0, -0.5]).reshape(3, 1, 1, 1).expand(3, 1, 2, 2)  # out of range: clipped
    value = frechet_inception_distance(real, fake, device="cpu", batch_size=3)
    assert value == 12.5
    (metric,) = fake_torchmetrics.instances
    assert metric.feature == 2048 and metric.normalize is False and metric.device == torch.device("cpu")
    assert [(imgs.shape[0], is_real) for imgs, is_real in metric.updates] == [(3, True), (1, True), (3, False)]
    for imgs, _ in metric.updates:
        assert imgs.dtype == torch.uint8 and imgs.shape[1:] == (3, 2, 2)
        assert torch.equal(imgs[:, 0], imgs[:, 1]) and torch.equal(imgs[:, 0], imgs[:, 2])  # grey repeated
    real_pixels = torch.cat([imgs for imgs, is_real in metric.updates if is_real])[:, 0, 0, 0]
    fake_pixels = torch.cat([imgs for imgs, is_real in metric.updates if not is_real])[:, 0, 0, 0]
    assert real_pixels.tolist() == [0, 128, 255, 191]  # round((x + 1) * 127.5)
    assert fake_pixels.tolist() == [255, 0, 64]


def test_rgb_images_keep_their_channels_and_shapes_are_checked(fake_torchmetrics):
    rgb = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert torch.equal(to_uint8_rgb(rgb), ((rgb + 1) * 127.5).round().to(torch.uint8))
    with pytest.raises(ValueError, match="C = 1 or 3"):
        frechet_inception_distance(torch.zeros(4, 2, 8, 8), torch.zeros(4, 2, 8, 8))
    with pytest.raises(ValueError, match="differ in shape"):
        frechet_inception_distance(torch.zeros(4, 1, 8, 8), torch.zeros(4, 3, 8, 8))
    with pytest.raises(ValueError, match="N >= 2"):
        frechet_inception_distance(torch.zeros(1, 1, 8, 8), torch.zeros(4, 1, 8, 8))
    assert not fake_torchmetrics.instances  # the shapes are checked before torchmetrics is touched
