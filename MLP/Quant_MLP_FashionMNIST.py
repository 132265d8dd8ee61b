"""Train or evaluate the quantized MLP 400-400 on Fashion-MNIST.

    python Quant_MLP_FashionMNIST.py --k 0 --resume False --mode training
    python Quant_MLP_FashionMNIST.py --k 0 --resume True --mode inference

Writes the checkpoint and model_fashion_mnist.npz into --model_dir; the npz is
what Spiking_MLP_FashionMNIST.py converts.
"""
import os
import sys

try:
    import ann2snn  # noqa: F401
except ImportError:  # running from a clone without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ann2snn import cli, training
from ann2snn.architectures import MLP


def main(argv=None):
    parser = cli.training_parser(__doc__.splitlines()[0], __file__, quantized=True,
                                 default_epochs=150)
    args = parser.parse_args(argv)
    with cli.usage_errors(parser):
        return training.run(MLP, args, k=args.k)


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
