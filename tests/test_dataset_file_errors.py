"""Dataset files that are present but wrong: images of another size, a batch cut short, missing from the
folder or holding the wrong arrays. Each error names the file (and the batch), says what was expected and
what to do, the way ``dataset_error`` words it."""

from __future__ import annotations

import codecs
import pickle
import shutil
import tarfile
import zlib
from pathlib import Path

import pytest
import torch

from diffusion_playground.data import DatasetNotFoundError, load_cifar10, load_mnist

from image_files import idx_bytes, write_cifar, write_mnist

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"

# ---------------------------------------------------------------------------- MNIST


@pytest.mark.parametrize(("height", "width"), [(8, 8), (28, 32)])
def test_mnist_refuses_idx_images_that_are_not_28x28(tmp_path, height, width):
    write_mnist(tmp_path, n=6)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(torch.zeros(6, height, width), 2051))
    message = rf"train-images-idx3-ubyte .*holds images of {height}x{width}, while MNIST images are 28x28"
    with pytest.raises(DatasetNotFoundError, match=message) as caught:
        load_mnist(tmp_path)
    assert "delete it and try again" in str(caught.value) and str(tmp_path.resolve()) in str(caught.value)


# ---------------------------------------------------------------------------- CIFAR-10


def cut_archive_inside(archive: Path, member: str) -> None:
    """Truncate the .tar.gz, like an interrupted download, so that its data ends halfway through ``member``."""
    with tarfile.open(archive) as tar:
        info = tar.getmember(member)
    middle = info.offset_data + info.size // 2
    gz = archive.read_bytes()
    inflate, produced = zlib.decompressobj(wbits=31), 0  # wbits=31: a gzip stream
    for end in range(len(gz)):
        produced += len(inflate.decompress(gz[end : end + 1]))
        if produced > middle:
            break
    archive.write_bytes(gz[:end])


def rewrite_batch(path: Path, change) -> None:
    """Apply ``change`` to the dict of a batch this test wrote, and pickle it back."""
    batch = pickle.loads(path.read_bytes())
    change(batch)
    path.write_bytes(pickle.dumps(batch, protocol=2))


def test_cifar10_a_truncated_batch_in_the_folder_is_named(tmp_path):
    write_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    message = r"data_batch_3 in \S*cifar-10-batches-py is truncated or corrupt \(.*\); delete it and try again"
    with pytest.raises(DatasetNotFoundError, match=message) as caught:
        load_cifar10(tmp_path)
    assert CIFAR10_URL in str(caught.value) and str(tmp_path.resolve()) in str(caught.value)


def test_cifar10_a_truncated_archive_names_the_batch_it_stops_in(tmp_path):
    write_cifar(tmp_path, archive=True)
    cut_archive_inside(tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py/data_batch_3")
    message = (r"cifar-10-python.tar.gz is truncated or corrupt \(cifar-10-batches-py/data_batch_3: .*\); "
               "delete it and try again")  # fmt: skip
    with pytest.raises(DatasetNotFoundError, match=message):
        load_cifar10(tmp_path)


@pytest.mark.parametrize(("name", "train"), [("data_batch_5", True), ("test_batch", False)])
def test_cifar10_a_batch_missing_from_the_folder_is_named_with_the_folder_and_the_url(tmp_path, name, train):
    write_cifar(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    (folder / name).unlink()
    with pytest.raises(DatasetNotFoundError, match=rf"the folder \S+ is missing {name}\b") as caught:
        load_cifar10(tmp_path, train=train)
    message = str(caught.value)
    assert str(folder.resolve()) in message and CIFAR10_URL in message and "download=True" in message
    assert "not found" not in message  # the archive is not what the user has to look for
    load_cifar10(tmp_path, train=not train)  # the other split is complete: it still loads
    write_cifar(tmp_path, archive=True)
    assert len(load_cifar10(tmp_path, train=train)[1]) == (15 if train else 3)  # with the archive there, it is read


def lookup_error_pickle() -> bytes:
    class Payload:
        def __reduce__(self):
            return (codecs.encode, ("x", "no-such-codec"))  # an allowed global that raises LookupError

    return pickle.dumps({b"data": Payload(), b"labels": []}, protocol=2)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda batch: batch.update({b"data": batch[b"data"][:, :1024]}), r"its data is uint8 \(3, 1024\), expected"),
        (lambda batch: batch.update({b"data": batch[b"data"] / 255}), r"its data is float64 \(3, 3072\), expected"),
        (lambda batch: batch.update({b"data": list(batch[b"data"])}), r"its data is a list, expected"),
        (lambda batch: batch[b"labels"].pop(), "it holds 3 images but 2 labels"),
        (lambda batch: batch[b"labels"].__setitem__(1, 10), r"a label is 10, expected 0\.\.9"),
        (lambda batch: batch[b"labels"].__setitem__(2, -1), r"a label is -1, expected 0\.\.9"),
        (lambda batch: batch[b"labels"].__setitem__(0, 1.5), r"its labels are float64 \(3,\), expected a list of ints"),
        (lambda batch: batch.pop(b"labels"), "it is not a dict with b'data' and b'labels'"),
    ],
)
@pytest.mark.parametrize(("name", "train"), [("data_batch_2", True), ("test_batch", False)])
def test_cifar10_a_batch_with_wrong_arrays_is_named(tmp_path, change, message, name, train):
    write_cifar(tmp_path, n=3)
    rewrite_batch(tmp_path / "cifar-10-batches-py" / name, change)
    with pytest.raises(DatasetNotFoundError, match=rf"{name} in \S+ is truncated or corrupt \({message}"):
        load_cifar10(tmp_path, train=train)


def test_cifar10_a_pickle_that_fails_in_any_way_is_reported_like_a_corrupt_batch(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(lookup_error_pickle())
    with pytest.raises(DatasetNotFoundError, match=r"test_batch in \S+ is truncated or corrupt \(.*no-such-codec"):
        load_cifar10(tmp_path, train=False)


def archive_the_folder(root: Path) -> None:
    """Replace ``cifar-10-batches-py/`` by ``cifar-10-python.tar.gz`` holding what it holds."""
    folder = root / "cifar-10-batches-py"
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    shutil.rmtree(folder)


def test_cifar10_wrong_arrays_inside_the_archive_name_the_archive_and_the_batch(tmp_path):
    write_cifar(tmp_path)
    rewrite_batch(tmp_path / "cifar-10-batches-py" / "data_batch_4", lambda batch: batch[b"labels"].__setitem__(0, 12))
    archive_the_folder(tmp_path)
    message = r"cifar-10-python.tar.gz is truncated or corrupt \(cifar-10-batches-py/data_batch_4: a label is 12"
    with pytest.raises(DatasetNotFoundError, match=message):
        load_cifar10(tmp_path)
    assert len(load_cifar10(tmp_path, train=False)[1]) == 3  # the test batch is still fine


def test_cifar10_an_archive_without_a_batch_names_it(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_5").unlink()
    archive_the_folder(tmp_path)
    message = r"cifar-10-python.tar.gz is truncated or corrupt \(it lacks cifar-10-batches-py/data_batch_5\); delete it"
    with pytest.raises(DatasetNotFoundError, match=message):
        load_cifar10(tmp_path)
