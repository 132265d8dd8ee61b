"""Train or evaluate the full-precision MLP 400-400 on Fashion-MNIST.

    python FP32_MLP_FashionMNIST.py --mode training

The same network as the Quant_ script without the activation quantizer; its
test accuracy is the full-precision line of figs/accuracy_speed.py.
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
    parser = cli.training_parser(__doc__.splitlines()[0], __file__, quantized=False,
                                 default_epochs=150)
    args = parser.parse_args(argv)
    with cli.usage_errors(parser):
        return training.run(MLP, args, k=None)


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
