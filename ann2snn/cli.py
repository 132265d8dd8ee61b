"""Command-line options shared by the scripts of LeNet/ and MLP/.

The option names and defaults are those of the paper's scripts: Adam with a
learning rate of 1e-4, batch 200, a checkpoint every epoch, SNN batch 50 and
20 time steps.
"""

import argparse
import contextlib
import errno
import logging
import os
import signal
import sys
import tempfile
import threading

# A spiking neuron sends at most one spike per time step, so a level above this
# needs thousands of time steps per activation unit and is almost surely a typo.
MAX_K = 8
# NumPy's legacy random generator, which the training shuffles with, takes seeds below 2^32.
MAX_SEED = 2 ** 32 - 1
# simulation.simulate first allocates its four logs as int64 arrays of shape (batches,
# time steps), with up to 10,000 batches. NumPy raises ValueError, not MemoryError, for an
# array of more than 2^63 - 1 bytes, and 10,000 * 10^14 * 8 bytes stays below that. Near
# this bound even one batch needs petabytes for its logs, so such values end in the "not
# enough memory" usage error instead of a traceback.
MAX_TIME_STEPS = 10 ** 14


class UsageError(Exception):
    """Options that parse but do not fit together or with the data; exits with code 2."""


class RunError(Exception):
    """Error that stops a run after its options were accepted. run_main exits with 1."""


class Terminated(KeyboardInterrupt):
    """Raised by the SIGTERM handler, so that a terminated run unwinds like one stopped by Ctrl+C."""


def str2bool(text):
    """Parse True/False as the paper's commands write them (also yes/no, 1/0)."""
    value = text.strip().lower()
    if value in ("true", "yes", "1"):
        return True
    if value in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean {text!r}: use True or False")


def positive_int(text):
    """Parse an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {value}: must be at least 1")
    return value


def count_at_most(maximum, reason):
    """Return an argparse type that parses an integer from 1 to `maximum`.

    Its error message for a larger value ends with `reason`.
    """
    def parse(text):
        value = positive_int(text)
        if value > maximum:
            raise argparse.ArgumentTypeError(f"invalid value {value}: use at most {maximum} {reason}")
        return value
    return parse


time_step_count = count_at_most(MAX_TIME_STEPS, "time steps (the default is 20)")


def nonempty_path(text):
    """Parse a file or folder path, rejecting an empty or blank one.

    An empty path would otherwise act as the current folder, so that an unset shell
    variable would make a script write its data, model or logs there.
    """
    if not text.strip():
        problem = "empty" if not text else "blank"
        raise argparse.ArgumentTypeError(
            f"invalid path {text!r}: the path is {problem}. Pass a path, such as . for the "
            f"current folder")
    return text


def quantization_level(text):
    """Parse the quantization level k: activations are multiples of 1/2^k."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid quantization level {text!r}: use an integer") from None
    if not 0 <= value <= MAX_K:
        raise argparse.ArgumentTypeError(
            f"invalid quantization level {value}: use 0 to {MAX_K} (the paper uses 0, 1 and 2)")
    return value


def positive_float(text):
    """Parse a float > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"invalid value {text}: must be a positive number")
    return value


def seed_value(text):
    """Parse a random seed: an integer from 0 to MAX_SEED."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid seed {text!r}: use an integer from 0 to {MAX_SEED}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"invalid seed {value}: use an integer from 0 to {MAX_SEED}")
    return value


def check_output_folder(path, option):
    """Raise UsageError unless `path` is a folder, or can become one, that this process can write to.

    Creates nothing. A missing folder is checked at its nearest existing parent, where
    a temporary file is created and removed again.
    """
    target = os.path.abspath(path)
    existing = target
    while not os.path.exists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        if existing == target:
            raise UsageError(f"{option} {path} is a file, not a folder: pass a folder")
        raise UsageError(f"{option} {path} cannot be created because {existing} is a file: "
                         f"pass another folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise UsageError(f"cannot write to {option} {path}: {existing} is not writable "
                         f"({error.strerror}). Pass a folder you can write to.") from None


def script_folder(script_path):
    """Return the folder of the script at `script_path` (where figs/ lives)."""
    return os.path.dirname(os.path.abspath(script_path))


def add_common_options(parser, script_path, seed_help):
    """Add the options that every script shares: the three folders and --seed.

    `seed_help` is the whole help text of --seed, because only the training scripts use the seed.
    """
    parser.add_argument("--data_dir", type=nonempty_path, default="./data",
                        help="folder with Fashion-MNIST in TensorLayer's layout "
                             "(<data_dir>/fashion_mnist/*.gz); if missing, the copy of Debian's "
                             "dataset-fashion-mnist is used, then a download (default: ./data)")
    parser.add_argument("--model_dir", type=nonempty_path, default=".",
                        help="folder of the checkpoint and model_fashion_mnist.npz "
                             "(default: the current folder)")
    parser.add_argument("--figs_dir", type=nonempty_path,
                        default=os.path.join(script_folder(script_path), "figs"),
                        help="folder for logs and recorded accuracies "
                             "(default: figs/ next to the script)")
    parser.add_argument("--seed", type=seed_value, default=0,
                        help=seed_help)


def training_parser(description, script_path, quantized, default_epochs):
    """Return the parser of a Quant_ (quantized=True) or FP32_ script."""
    parser = argparse.ArgumentParser(description=description)
    if quantized:
        parser.add_argument("--k", type=quantization_level, default=0,
                            help="quantization level: activations are multiples of 1/2^k "
                                 "(integer, default: 0)")
    parser.add_argument("--resume", type=str2bool, default=False,
                        help="True: restore the checkpoint in --model_dir and continue from its "
                             "last finished epoch (training) or evaluate it (inference); "
                             "False: start from a fresh initialization (default: False)")
    parser.add_argument("--mode", choices=("training", "inference"), default="training",
                        help="training: train, then evaluate and write the npz; inference: "
                             "evaluate the checkpoint and write the npz (default: training)")
    parser.add_argument("--n_epoch", type=positive_int, default=default_epochs,
                        help=f"total number of training epochs (default: {default_epochs})")
    parser.add_argument("--batch_size", type=positive_int, default=200,
                        help="training batch size in images (default: 200)")
    parser.add_argument("--learning_rate", type=positive_float, default=1e-4,
                        help="Adam learning rate (default: 1e-4)")
    add_common_options(parser, script_path,
                       seed_help=f"random seed for initialization and shuffling, 0 to "
                                 f"{MAX_SEED} (default: 0)")
    parser.add_argument("--num_train_images", type=positive_int, default=None,
                        help="train on the first N of the 50,000 training images only, "
                             "for quick tests (default: all)")
    parser.add_argument("--num_eval_images", type=positive_int, default=None,
                        help="evaluate on the first N validation and test images only, "
                             "for quick tests (default: all 10,000)")
    return parser


def spiking_parser(description, script_path):
    """Return the parser of a Spiking_ script."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--k", type=quantization_level, default=0,
                        help="quantization level of the trained model to convert "
                             "(integer, default: 0)")
    parser.add_argument("--time_steps", type=time_step_count, default=20,
                        help=f"time steps simulated per image, 1 to {MAX_TIME_STEPS} "
                             "(default: 20)")
    parser.add_argument("--batch_size", type=positive_int, default=50,
                        help="images simulated together; results do not depend on it "
                             "(default: 50)")
    parser.add_argument("--num_images", type=positive_int, default=None,
                        help="simulate the first N test images only, for quick runs "
                             "(default: all 10,000)")
    parser.add_argument("--verify", action="store_true",
                        help="also compute the quantized ANN in NumPy and check that every "
                             "neuron's net spike count equals its activation; exit 1 on a mismatch")
    parser.add_argument("--engine", choices=("events", "layers", "steps"), default=None,
                        help="simulator implementation, all with identical results: events "
                             "(spike by spike, compiled with Numba), layers (NumPy, one layer's "
                             "spike train at a time) or steps (NumPy, the whole network one time "
                             "step at a time) (default: events if Numba is installed, else layers)")
    parser.add_argument("--allow_pickle", action="store_true",
                        help="accept an npz in the paper's original layout, which stores the "
                             "parameters as a pickle; only for files you trust")
    add_common_options(parser, script_path,
                       seed_help=f"random seed, 0 to {MAX_SEED} (default: 0). It is unused "
                                 "here, because the conversion and simulation are "
                                 "deterministic, and accepted so that all scripts share one "
                                 "command line")
    return parser


def setup_logging():
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)


@contextlib.contextmanager
def usage_errors(parser):
    """Report a UsageError raised inside the block as `parser` reports a bad option.

    argparse prints the usage line and "<prog>: error: <message>" to stderr and exits
    with code 2.
    """
    try:
        yield
    except UsageError as error:
        parser.error(str(error))


_READ_ADVICE = "Check that the file exists and is readable, then run the command again."
_WRITE_ADVICE = ("Check that the folder exists, is writable and has free space, then run the "
                 "command again.")


def os_error_advice(error):
    """Return the advice for `error`, treated as either a failed read or a failed write.

    The errno and the file do not always tell the two apart. An access error on a file
    or folder that exists but cannot be read now, or a missing file in an existing folder,
    is taken for a failed read. Every other error is taken for a failed write, such as on
    a full disk or in a folder whose permissions changed meanwhile.
    """
    path = error.filename
    if not isinstance(path, (str, bytes, os.PathLike)):
        return _WRITE_ADVICE
    if error.errno in (errno.EACCES, errno.EPERM) and not _can_read(path):
        return _READ_ADVICE
    if error.errno == errno.ENOENT and os.path.isdir(os.path.dirname(os.path.abspath(path))):
        return _READ_ADVICE
    return _WRITE_ADVICE


def _can_read(path):
    """Return False if `path` is a file that cannot be opened or a folder that cannot be listed.

    Returns True otherwise, also when `path` does not exist.
    """
    try:
        if os.path.isdir(path):
            os.listdir(path)
        elif os.path.isfile(path):
            # Only regular files are opened, because opening a FIFO for reading would block.
            with open(path, "rb"):
                pass
    except OSError:
        return False
    return True


def _raise_terminated(signum, frame):
    raise Terminated()


def run_main(main, argv=None):
    """Run `main(argv)` and turn the project's expected errors into one message and an exit code.

    A UsageError exits with 2, and a RunError, DataError, ModelFileError, LogError or OSError
    with 1.
    SIGINT exits with 130 and SIGTERM with 143 (128 + the signal number), after the
    cleanup of the interrupted write has run.
    """
    from .data import DataError
    from .logs import LogError
    from .model_file import ModelFileError

    setup_logging()
    log = logging.getLogger("ann2snn")
    # signal.signal works only in the main thread; elsewhere SIGTERM keeps its default action.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous_handler = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    try:
        return main(argv)
    except UsageError as error:
        log.error("error: %s", error)
        return 2
    except (RunError, DataError, ModelFileError, LogError) as error:
        log.error("error: %s", error)
        return 1
    except OSError as error:
        log.error("error: %s. %s", error, os_error_advice(error))
        return 1
    except KeyboardInterrupt as error:
        signum = signal.SIGTERM if isinstance(error, Terminated) else signal.SIGINT
        log.error("interrupted by %s; files written before the interruption are complete "
                  "and were kept", signum.name)
        return 128 + signum
    finally:
        # signal.signal returns None for a handler that was not installed from Python.
        if in_main_thread and previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
