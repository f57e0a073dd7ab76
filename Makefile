# Two commands do all setup on a fresh machine with Python 3.11 and pip:
#   make demo   trains the moons model on the CPU and writes figures to outputs/moons/
#   make test   runs the whole test suite, notebooks included
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test notebook notebooks benchmark clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m diffusion_playground train moons --device cpu --out outputs/moons

test: $(STAMP)
	DP_QUICK=1 MPLBACKEND=Agg $(BIN)/python -m pytest tests notebooks --nbval-lax -p no:cacheprovider

notebook: $(STAMP)
	$(BIN)/jupyter lab notebooks/experiments

# re-execute every notebook in the mode it is committed in: about 22 min on 2 CPU cores when outputs/mnist_sample/ holds
# the MNIST CPU run (benchmarks/mnist_sample.py writes it), about 14 min more when the MNIST notebook must train it
notebooks: $(STAMP)
	$(BIN)/python notebooks/execute_notebooks.py

benchmark: $(STAMP)
	$(BIN)/python benchmarks/trainer_overhead.py

clean:
	rm -rf $(VENV) outputs
