"""Train or evaluate the quantized LeNet 32C5-P2-64C5-P2-1024 on Fashion-MNIST.

    python Quant_LeNet_FashionMNIST.py --k 0 --resume False --mode training
    python Quant_LeNet_FashionMNIST.py --k 0 --resume True --mode inference

Writes the checkpoint and model_fashion_mnist.npz into --model_dir; the npz is
what Spiking_LeNet_FashionMNIST.py converts.
"""
import os
import sys

try:
    import ann2snn  # noqa: F401
except ImportError:  # running from a clone without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ann2snn import cli, training
from ann2snn.architectures import LENET


def main(argv=None):
    parser = cli.training_parser(__doc__.splitlines()[0], __file__, quantized=True,
                                 default_epochs=100)
    args = parser.parse_args(argv)
    with cli.usage_errors(parser):
        return training.run(LENET, args, k=args.k)


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
