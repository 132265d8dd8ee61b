"""Options and loading shared by the analysis scripts in benchmarks/.

`add_model_options` adds --model_dir, --k (optional), --num_images and
--data_dir to a parser. `load_model_and_images` loads the model and the first
--num_images test images that these options name. `spiking_network` builds the
model's SpikingNetwork with its recorded batch-norm epsilon. `time_step_count`
and `image_count` parse --time_steps and --num_images with their upper bounds.
Importing this module also puts the repository on sys.path, so the scripts can
import ann2snn from a clone without installing it.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ann2snn import cli  # noqa: E402
from ann2snn.cli import positive_int  # noqa: E402,F401  (for the scripts' own options)
from ann2snn.data import TEST_SIZE, DataError, load_test_set  # noqa: E402
from ann2snn.model_file import MODEL_FILE_NAME, ModelFileError, load_model  # noqa: E402
from ann2snn.simulation import DEFAULT_BN_EPSILON  # noqa: E402
from ann2snn.spiking_utils import SpikingNetwork  # noqa: E402

# Upper bound of --time_steps. No neuron of the shipped models spikes from step 42 on
# (README.md, Results), so more steps only repeat the settled state. The run time
# and the logs (int64 per batch and time step) still grow with every step.
MAX_TIME_STEPS = 1000


time_step_count = cli.count_at_most(
    MAX_TIME_STEPS, "time steps (no neuron of the shipped models spikes from step 42 on)")
image_count = cli.count_at_most(TEST_SIZE, f"images: the test set has {TEST_SIZE}")


def add_model_options(parser, num_images, images_help,
                      model_help="folder of a model_fashion_mnist.npz", with_k=True):
    """Add --model_dir, --k (if `with_k`), --num_images (default `num_images`) and --data_dir."""
    parser.add_argument("--model_dir", type=cli.nonempty_path, required=True, help=model_help)
    if with_k:
        parser.add_argument("--k", type=cli.quantization_level, default=1,
                            help="quantization level of the model (default: 1)")
    parser.add_argument("--num_images", type=image_count, default=num_images,
                        help=f"{images_help} (default: {num_images})")
    parser.add_argument("--data_dir", type=cli.nonempty_path, default="./data",
                        help="folder of the Fashion-MNIST files (default: ./data)")


def load_model_and_images(args):
    """Return the model of args.model_dir and the first args.num_images test images and labels.

    Exits with the loader's message and code 1 when the model or the data cannot be used.
    """
    try:
        model = load_model(os.path.join(args.model_dir, MODEL_FILE_NAME), k=getattr(args, "k", "any"))
        images, labels = load_test_set(args.data_dir)
    except (ModelFileError, DataError) as error:
        sys.exit(f"error: {error}")
    return model, images[:args.num_images], labels[:args.num_images]


def spiking_network(model):
    """Return the SpikingNetwork of `model`, with its recorded batch-norm epsilon."""
    return SpikingNetwork(model.architecture, model.params, model.k,
                          model.metadata.get("bn_epsilon", DEFAULT_BN_EPSILON))


if __name__ == "__main__":
    sys.exit("model_options.py is a module of the scripts in benchmarks/, not a script: run one of "
             "them, for example python benchmarks/kernel_speed.py --help")
