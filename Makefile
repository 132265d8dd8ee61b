# Setup, demo, tests and the full reproduction. Every target sets up what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SYSTEM_DATA := /usr/share/datasets/fashion-mnist

.PHONY: setup data quick demo test reproduce clean-demo

setup: $(VENV)/.installed data

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

# Debian's dataset-fashion-mnist puts the real data set in $(SYSTEM_DATA); the
# scripts copy it into data/fashion_mnist on first use. Without it (not root, or
# not Debian) they fall back to TensorLayer's download.
data:
	@if [ ! -f $(SYSTEM_DATA)/t10k-labels-idx1-ubyte.gz ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	  else \
	    echo "note: $(SYSTEM_DATA) not found; run 'sudo apt-get install dataset-fashion-mnist'," \
	         "or the scripts will try TensorLayer's download"; \
	  fi; \
	fi

# No training: convert the shipped models (MLP at k = 0, 1, 2, LeNet at the k
# values in QUICK_LENET_K), simulate the full test set with --verify, and draw
# the three figures of each architecture.
QUICK := demo/quick
# LeNet at k=2 is left out: its counts settle only after 42 steps, so --verify
# fails at 40, and it needs 80 steps (about 2 minutes here).
QUICK_LENET_K := 0 1
quick: setup
	mkdir -p $(QUICK)/MLP/figs $(QUICK)/LeNet/figs
	for arch in MLP LeNet; do \
	    $(PY) -c "import sys; from ann2snn.logs import copy_ann_accuracy; copy_ann_accuracy(*sys.argv[1:])" \
	        $$arch/figs $(QUICK)/$$arch/figs || exit 1; done
	cd MLP && for k in 0 1 2; do \
	    ../$(PY) Spiking_MLP_FashionMNIST.py --k $$k --time_steps 40 --verify \
	        --data_dir ../data --model_dir ../pretrained/MLP/k$$k --figs_dir ../$(QUICK)/MLP/figs \
	        || exit 1; done
	cd LeNet && for k in $(QUICK_LENET_K); do \
	    ../$(PY) Spiking_LeNet_FashionMNIST.py --k $$k --time_steps 40 --verify \
	        --data_dir ../data --model_dir ../pretrained/LeNet/k$$k --figs_dir ../$(QUICK)/LeNet/figs \
	        || exit 1; done
	for arch in MLP LeNet; do \
	    for figure in accuracy_speed sops sparsity; do \
	        (cd $$arch && ../$(PY) figs/$$figure.py --figs_dir ../$(QUICK)/$$arch/figs) || exit 1; \
	    done; done
	@echo "figures: $$(ls $(QUICK)/*/figs/*.png | tr '\n' ' ')"

# A short end-to-end run on the real data: train the quantized MLP (k=1) for 5
# epochs, convert it, simulate the full test set and draw the three figures.
DEMO := demo/MLP
demo: setup
	cd MLP && ../$(PY) Quant_MLP_FashionMNIST.py --k 1 --resume False --mode training --n_epoch 5 \
	    --data_dir ../data --model_dir ../$(DEMO)/k1 --figs_dir ../$(DEMO)/figs
	cd MLP && ../$(PY) Spiking_MLP_FashionMNIST.py --k 1 --time_steps 30 --verify \
	    --data_dir ../data --model_dir ../$(DEMO)/k1 --figs_dir ../$(DEMO)/figs
	cd MLP && for figure in accuracy_speed sops sparsity; do \
	    ../$(PY) figs/$$figure.py --figs_dir ../$(DEMO)/figs || exit 1; done
	@echo "demo figures: $$(ls $(DEMO)/figs/*.png | tr '\n' ' ')"

test: setup
	$(PY) -m pytest -q

reproduce: setup
	$(PY) -m ann2snn.reproduce

clean-demo:
	rm -rf demo
