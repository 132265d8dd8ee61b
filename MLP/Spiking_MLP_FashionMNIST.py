"""Convert the quantized MLP 400-400 into a spiking network and simulate it on Fashion-MNIST.

    python Spiking_MLP_FashionMNIST.py --k 0

Reads model_fashion_mnist.npz from --model_dir, simulates --time_steps steps
per test image and writes accuracy.txt, spike_num.txt, spike_collect.txt,
sop_num.txt and summary.json into figs/k<k>/.
"""
import os
import sys

try:
    import ann2snn  # noqa: F401
except ImportError:  # running from a clone without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ann2snn import cli, simulation
from ann2snn.architectures import MLP


def main(argv=None):
    parser = cli.spiking_parser(__doc__.splitlines()[0], __file__)
    args = parser.parse_args(argv)
    with cli.usage_errors(parser):
        return simulation.run(MLP, args)


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
