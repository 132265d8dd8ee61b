"""Training and evaluation loop shared by the Quant_ and FP32_ scripts.

`run(arch, args, k)` carries out one script invocation:

    training   build the graph, restore the checkpoint if --resume True, train the
               remaining epochs (checkpoint after each), then evaluate on the test
               set and write model_fashion_mnist.npz
    inference  restore the checkpoint, evaluate on the test set, write the npz

The test accuracy is also recorded in <figs_dir>/ann_accuracy.json, where the
figure scripts read it.
"""

import logging
import os
import re
import shutil
import sys
import time

import numpy as np

from . import logs
from .cli import MAX_SEED, RunError, UsageError, check_output_folder
from .data import TEST_SIZE, TRAIN_SIZE, VALIDATION_SIZE, load_fashion_mnist
from .model_file import MODEL_FILE_NAME, ModelFileError, load_model, save_model

log = logging.getLogger("ann2snn.training")

CHECKPOINT_PREFIX = "model_fashion_mnist_advanced.ckpt"
CHECKPOINT_SUFFIXES = (".data-00000-of-00001", ".index", ".meta")
# TensorFlow's checkpoint state file, which names the checkpoint to restore.
CHECKPOINT_STATE_NAME = "checkpoint"
PARTIAL_SUFFIX = ".partial"
# Marks the full-precision model in the checkpoint's config/k variable.
FULL_PRECISION_K = -1
# Metadata fields that describe the training. The checkpoint does not store them, so
# --mode inference can only copy them from the model file it replaces.
TRAINING_SETTINGS = ("batch_size", "learning_rate", "seed", "num_train_images", "command")
# Maximum number of parameter names that one message lists. Further parameters are only counted.
MAX_LISTED_PARAMETER_NAMES = 3


class TrainingError(RunError):
    """Error that stops a training or evaluation. cli.run_main reports it and exits with 1."""


def _import_tensorflow():
    # Silence TensorFlow's start-up banner before the first import.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
    return tf


class Graph:
    """The train and test graphs, sharing one set of variables."""

    def __init__(self, arch, k, learning_rate):
        tf = _import_tensorflow()
        from . import tf_model
        tf1 = tf.compat.v1

        self.images = tf1.placeholder(tf.float32, [None, *arch.input_shape], name="images")
        self.labels = tf1.placeholder(tf.int64, [None], name="labels")

        train_logits = tf_model.inference(self.images, arch, k, is_train=True)
        self.train_loss = tf_model.loss(train_logits, self.labels)
        self.train_accuracy = tf_model.accuracy(train_logits, self.labels)
        self.train_op = tf_model.train_op(self.train_loss, learning_rate)

        test_logits = tf_model.inference(self.images, arch, k, is_train=False, reuse=True)
        self.test_loss = tf_model.loss(test_logits, self.labels)
        self.test_correct = tf_model.correct_count(test_logits, self.labels)

        with tf1.variable_scope("config"):
            self.epoch = tf1.get_variable("epoch", [], tf.int64, tf1.zeros_initializer(),
                                          trainable=False)
            self.k_variable = tf1.get_variable(
                "k", [], tf.int64, tf1.constant_initializer(FULL_PRECISION_K if k is None else k),
                trainable=False)
        self.next_epoch = tf1.placeholder(tf.int64, [], name="next_epoch")
        self.set_epoch = tf1.assign(self.epoch, self.next_epoch)
        self.parameters = tf_model.parameter_variables(arch)
        self.parameter_names = [name for name, _ in arch.param_shapes()]
        self.saver = tf1.train.Saver(tf1.global_variables(), max_to_keep=None)


def evaluate(session, graph, x, y, batch_size):
    """Return (mean loss, accuracy) of the test graph on all of `x`, in batches."""
    import tensorlayer as tl

    total_loss, total_correct = 0.0, 0
    for x_batch, y_batch in tl.iterate.minibatches(
            x, y, batch_size, allow_dynamic_batch_size=True, shuffle=False):
        batch_loss, batch_correct = session.run(
            [graph.test_loss, graph.test_correct],
            feed_dict={graph.images: x_batch, graph.labels: y_batch})
        total_loss += float(batch_loss) * len(x_batch)
        total_correct += int(batch_correct)
    return total_loss / len(x), total_correct / len(x)


def train_epoch(session, graph, x, y, batch_size, seed, epoch):
    """Run one epoch of Adam steps; return the mean training (loss, accuracy)."""
    import tensorlayer as tl

    # Seeding per epoch makes a resumed run shuffle exactly as an uninterrupted one. The
    # modulo keeps seeds near MAX_SEED valid and leaves every smaller seed + epoch unchanged.
    np.random.seed((seed + epoch) % (MAX_SEED + 1))
    losses, accuracies = [], []
    for x_batch, y_batch in tl.iterate.minibatches(x, y, batch_size, shuffle=True):
        _, batch_loss, batch_accuracy = session.run(
            [graph.train_op, graph.train_loss, graph.train_accuracy],
            feed_dict={graph.images: x_batch, graph.labels: y_batch})
        losses.append(batch_loss)
        accuracies.append(batch_accuracy)
    if not losses:
        raise UsageError(
            f"--batch_size {batch_size} is larger than the {len(x)} training images: "
            f"no full batch to train on. Use a smaller --batch_size.")
    return float(np.mean(losses)), float(np.mean(accuracies))


def checkpoint_path(model_dir):
    return os.path.join(model_dir, CHECKPOINT_PREFIX)


def check_options(args):
    """Raise UsageError for options that cannot work, before TensorFlow or the data is loaded."""
    available = TRAIN_SIZE - VALIDATION_SIZE
    if args.num_train_images is not None and args.num_train_images > available:
        raise UsageError(
            f"--num_train_images {args.num_train_images} is larger than the training set "
            f"({available} images, the other {VALIDATION_SIZE} are held out for validation): "
            f"use at most {available}")
    evaluation_size = min(VALIDATION_SIZE, TEST_SIZE)
    if args.num_eval_images is not None and args.num_eval_images > evaluation_size:
        raise UsageError(
            f"--num_eval_images {args.num_eval_images} is larger than the validation and test "
            f"sets ({evaluation_size} images each): use at most {evaluation_size}")
    check_output_folder(args.model_dir, "--model_dir")
    check_output_folder(args.figs_dir, "--figs_dir")
    if args.mode == "training":
        num_train_images = args.num_train_images or available
        if args.batch_size > num_train_images:
            raise UsageError(
                f"--batch_size {args.batch_size} is larger than the {num_train_images} "
                f"training images: no full batch to train on. Use a smaller --batch_size.")
    if args.resume or args.mode == "inference":
        state_file = os.path.join(args.model_dir, CHECKPOINT_STATE_NAME)
        if not os.path.isfile(state_file):
            raise UsageError(
                f"{_checkpoint_request(args)} needs a checkpoint, but "
                f"{os.path.abspath(args.model_dir)} has no checkpoint state file "
                f"'{CHECKPOINT_STATE_NAME}'. {_NO_CHECKPOINT_HINT}")
        named = _checkpoint_named_in_state(args.model_dir)
        if named is not None and not os.path.isfile(named + ".index"):
            raise UsageError(_missing_checkpoint_message(args))


_NO_CHECKPOINT_HINT = ("Pass --model_dir with the folder of a trained checkpoint, or train "
                       "from scratch with --resume False --mode training.")


def _missing_checkpoint_message(args):
    message = (f"{_checkpoint_request(args)} needs a checkpoint, but the checkpoint state file "
               f"in {os.path.abspath(args.model_dir)} names no checkpoint whose files exist. ")
    final = checkpoint_path(os.path.abspath(args.model_dir))
    if os.path.isfile(final + ".index"):
        message += (f"If the checkpoint files {final}.* are intact, replace the content of the "
                    f"state file with the line: model_checkpoint_path: \"{CHECKPOINT_PREFIX}\". ")
    return message + _NO_CHECKPOINT_HINT


def _checkpoint_named_in_state(model_dir):
    """Return the checkpoint path that the state file names, read without TensorFlow.

    The state file is a text protobuf. Only a plain, unescaped model_checkpoint_path
    is read here, and anything else returns None, so find_checkpoint checks it later
    with TensorFlow.
    """
    with open(os.path.join(model_dir, CHECKPOINT_STATE_NAME), encoding="utf-8",
              errors="replace") as stream:
        match = re.search(r'^model_checkpoint_path: "([^"\\]+)"$', stream.read(), re.MULTILINE)
    if match is None:
        return None
    return os.path.join(model_dir, match.group(1))


def _checkpoint_request(args):
    return "--mode inference" if args.mode == "inference" else "--resume True"


def check_accuracy_record(figs_dir):
    """Raise TrainingError when <figs_dir>/ann_accuracy.json exists but is not a readable JSON object.

    The run records its test accuracy there at its very end, so a damaged file is
    reported before any work instead of after it.
    """
    try:
        logs.read_ann_accuracy(figs_dir)
    except logs.LogError as error:
        raise TrainingError(
            f"{error}. This run records its test accuracy in that file, so it stopped before "
            f"training or writing anything. Repair the file, or delete it (the next run then "
            f"writes a new one with its own entry only), or pass another --figs_dir.") from None


def _read_checkpoint_state(model_dir):
    """Return TensorFlow's CheckpointState of `model_dir`, or None if it is missing or unreadable."""
    tf1 = _import_tensorflow().compat.v1
    try:
        return tf1.train.get_checkpoint_state(model_dir)
    except ValueError:
        # TensorFlow 2.21 raises ValueError (UnicodeDecodeError included) for a state
        # without model_checkpoint_path or with bytes that are not UTF-8. It returns
        # None for other text that does not parse.
        return None


def _checkpoint_state_problem(model_dir):
    """Return the reason why the checkpoint state file in `model_dir` is damaged.

    Returns None when the file is intact or missing. Raises ModelFileError when the file
    cannot be opened, for example because it is a folder, which a save cannot replace.
    """
    path = os.path.abspath(os.path.join(model_dir, CHECKPOINT_STATE_NAME))
    if not os.path.lexists(path):
        return None
    try:
        with open(path, "rb") as stream:
            content = stream.read()
    except OSError as error:
        raise ModelFileError(
            f"checkpoint state file {path} cannot be read ({error.strerror or error}). "
            f"Delete it or make it a readable file, or pass another --model_dir.") from None
    if not content:
        return "it is empty"
    try:
        content.decode("utf-8")
    except UnicodeDecodeError:
        return "it is not UTF-8 text"
    if _read_checkpoint_state(model_dir) is None:
        return ("it is not a checkpoint state in TensorFlow's text format with a "
                "model_checkpoint_path")
    return None


def check_checkpoint_state(args):
    """Raise ModelFileError when --resume True or --mode inference needs a damaged state file.

    With --resume False a damaged state file only gets a warning, because the first
    save of the new training replaces it.
    """
    problem = _checkpoint_state_problem(args.model_dir)
    if problem is None:
        return
    path = os.path.abspath(os.path.join(args.model_dir, CHECKPOINT_STATE_NAME))
    if not (args.resume or args.mode == "inference"):
        log.warning("checkpoint state file %s is damaged (%s). This training from scratch "
                    "replaces it when it saves its first epoch.", path, problem)
        return
    final = checkpoint_path(os.path.abspath(args.model_dir))
    if os.path.isfile(final + ".index"):
        fix = (f"If the checkpoint files {final}.* are intact, replace the content of the "
               f"state file with the line: model_checkpoint_path: \"{CHECKPOINT_PREFIX}\". "
               f"Otherwise train from scratch with --resume False, which replaces the file.")
    else:
        fix = ("Restore it from a copy, or train from scratch with --resume False, which "
               "replaces the file.")
    raise ModelFileError(
        f"checkpoint state file {path} is damaged: {problem}, so {_checkpoint_request(args)} "
        f"cannot tell which checkpoint to restore. {fix}")


def _describe_k(value):
    return "full precision" if value == FULL_PRECISION_K else f"k={value}"


def _other_k_message(path, found_k, expected_k, arch):
    """Return the message for a checkpoint of another quantization level, with a fitting fix."""
    mismatch = (f"checkpoint {path} was trained with {_describe_k(found_k)}, but "
                f"{_describe_k(expected_k)} was requested.")
    if expected_k == FULL_PRECISION_K:
        return (f"{mismatch} Use it with Quant_{arch.name}_FashionMNIST.py --k {found_k}, "
                f"or pass --model_dir with a checkpoint of FP32_{arch.name}_FashionMNIST.py.")
    if found_k == FULL_PRECISION_K:
        return (f"{mismatch} No --k matches a full-precision checkpoint: use it with "
                f"FP32_{arch.name}_FashionMNIST.py, or pass --model_dir with a "
                f"k={expected_k} checkpoint.")
    return (f"{mismatch} Pass --k {found_k} to use it, or pass --model_dir with a "
            f"k={expected_k} checkpoint.")


def find_checkpoint(args, k, arch):
    """Return the path of the newest complete checkpoint in --model_dir, checked against `k`.

    Raises UsageError when there is none and ModelFileError when it is unreadable or
    was trained at another quantization level.
    """
    tf = _import_tensorflow()
    tf1 = tf.compat.v1
    # tf1.train.latest_checkpoint would do, but it logs its own error when the files are missing.
    state = _read_checkpoint_state(args.model_dir)
    path = state.model_checkpoint_path if state is not None else None
    if path is None or not os.path.isfile(path + ".index"):
        raise UsageError(_missing_checkpoint_message(args))
    try:
        reader = tf1.train.load_checkpoint(path)
        found_k = int(reader.get_tensor("config/k"))
    except (tf.errors.OpError, ValueError) as error:
        raise ModelFileError(f"checkpoint {path} is not readable or was not written by "
                             f"this project: {error}") from error
    expected_k = FULL_PRECISION_K if k is None else k
    if found_k != expected_k:
        raise ModelFileError(_other_k_message(path, found_k, expected_k, arch))
    return path


def _copy_durably(source, target):
    """Copy `source` over `target` through `target`.tmp, flushed to disk, then renamed."""
    temporary = target + ".tmp"
    try:
        with open(source, "rb") as input_stream, open(temporary, "wb") as output_stream:
            shutil.copyfileobj(input_stream, output_stream, 1 << 20)
            output_stream.flush()
            os.fsync(output_stream.fileno())
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    os.replace(temporary, target)


def _point_state_at(model_dir, path):
    tf1 = _import_tensorflow().compat.v1
    name = os.path.basename(path)
    # With a relative folder, TensorFlow 2.21 rewrites a relative name as if it were
    # relative to the working directory. With an absolute folder it stores the name
    # as given and later resolves it inside the folder.
    tf1.train.update_checkpoint_state(os.path.abspath(model_dir), name,
                                      all_model_checkpoint_paths=[name])


def _promote_partial_checkpoint(model_dir):
    """Copy the complete `.partial` checkpoint over the final names and point the state there."""
    final = checkpoint_path(model_dir)
    partial = final + PARTIAL_SUFFIX
    for suffix in CHECKPOINT_SUFFIXES:
        _copy_durably(partial + suffix, final + suffix)
    # The renames must reach the disk before the state file names the final checkpoint.
    logs._fsync_dir(model_dir)
    _point_state_at(model_dir, final)
    for suffix in CHECKPOINT_SUFFIXES:
        os.remove(partial + suffix)


def _finish_interrupted_save(model_dir):
    """Finish a save that stopped while the state file named the `.partial` checkpoint.

    The next save rewrites the `.partial` files, so the state file must name the
    final checkpoint again before that, or a crash during the rewrite would leave
    no complete checkpoint.
    """
    # A damaged state file names no save to finish, and this save replaces it.
    state = _read_checkpoint_state(model_dir)
    partial = checkpoint_path(model_dir) + PARTIAL_SUFFIX
    if state is None or os.path.basename(state.model_checkpoint_path) != os.path.basename(partial):
        return
    if not all(os.path.isfile(partial + suffix) for suffix in CHECKPOINT_SUFFIXES):
        # NOTE: the state names a checkpoint whose files were deleted by hand. Nothing
        # complete is left to promote, so the save goes ahead without this repair.
        log.warning("checkpoint state names %s, but its files are missing", partial)
        return
    log.info("finishing the interrupted save of %s", checkpoint_path(model_dir))
    _promote_partial_checkpoint(model_dir)


def save_checkpoint(session, graph, model_dir):
    """Save the variables as model_fashion_mnist_advanced.ckpt without a window of damage.

    The checkpoint is first written under a `.partial` prefix and the `checkpoint`
    state file pointed at it. Only then are its files copied over the final names
    (each through a temporary file and an atomic rename) and the state pointed back.
    Whenever the process dies, the state file names a complete checkpoint. A save
    that died while the state named the `.partial` checkpoint is finished first,
    because the `.partial` files are about to be rewritten.
    """
    _finish_interrupted_save(model_dir)
    partial = checkpoint_path(model_dir) + PARTIAL_SUFFIX
    graph.saver.save(session, partial, write_meta_graph=True, write_state=False)
    _point_state_at(model_dir, partial)
    _promote_partial_checkpoint(model_dir)


def restore_checkpoint(session, graph, path, arch):
    """Restore the checkpoint at `path` (from find_checkpoint); return the epochs it finished.

    Raises ModelFileError when the checkpoint belongs to another network, cannot be
    read or contains NaN or Inf parameter values.
    """
    tf = _import_tensorflow()
    try:
        graph.saver.restore(session, path)
    except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError) as error:
        # TensorFlow's message spans many lines and ends in a stack trace, so only its type is kept.
        raise ModelFileError(
            f"checkpoint {path} does not fit the {arch.name} network: it lacks some of its "
            f"variables or stores them with other shapes ({type(error).__name__}), so it was "
            f"probably written for another architecture. Pass --model_dir with a "
            f"{arch.name} checkpoint, or train from scratch with --resume False.") from error
    except tf.errors.OpError as error:
        raise ModelFileError(
            f"checkpoint {path} could not be read ({type(error).__name__}): its files are "
            f"probably truncated or damaged. Restore them from a copy, or train from scratch "
            f"with --resume False.") from error
    non_finite = _non_finite_parameters(graph, session.run(graph.parameters))
    if non_finite is not None:
        raise ModelFileError(
            f"checkpoint {path} contains {non_finite}: the training that wrote it diverged, "
            f"or its files are damaged. Train from scratch with --resume False and a smaller "
            f"--learning_rate, or pass --model_dir with another checkpoint.")
    return int(session.run(graph.epoch))


def _non_finite_parameters(graph, params):
    """Describe the NaN and Inf values in `params`, the values of graph.parameters.

    Returns None when every value is finite.
    """
    counts = [(name, int(np.count_nonzero(~np.isfinite(value))))
              for name, value in zip(graph.parameter_names, params)]
    damaged = [(name, count) for name, count in counts if count]
    if not damaged:
        return None
    total = sum(count for _, count in damaged)
    listed = ", ".join(f"{name} ({count})" for name, count in damaged[:MAX_LISTED_PARAMETER_NAMES])
    more = len(damaged) - MAX_LISTED_PARAMETER_NAMES
    if more > 0:
        listed += f" and {more} more parameter{'s' if more > 1 else ''}"
    return f"{total} NaN or Inf parameter values in {listed}"


def _check_epoch_finite(session, graph, args, epoch, train_loss, val_loss):
    """Raise TrainingError when epoch `epoch` (0-based) ended with a NaN or Inf loss or parameter.

    Runs before the epoch is saved, so the checkpoint keeps the last finite epoch.
    """
    problems = [f"the {name} loss is {value}"
                for name, value in (("training", train_loss), ("validation", val_loss))
                if not np.isfinite(value)]
    parameters = _non_finite_parameters(graph, session.run(graph.parameters))
    if parameters is not None:
        problems.append(parameters)
    if not problems:
        return
    if epoch > 0:
        file_status = (f"so the checkpoint in {os.path.abspath(args.model_dir)} still contains "
                       f"epoch {epoch}, and {MODEL_FILE_NAME} is as it was before this run. "
                       f"With --resume True training continues after epoch {epoch}.")
    else:
        file_status = (f"and nothing was written to {os.path.abspath(args.model_dir)}, where "
                       f"any earlier files are as they were.")
    raise TrainingError(
        f"training diverged in epoch {epoch + 1}: {'; '.join(problems)}. This epoch was not "
        f"saved, {file_status} Train again with a smaller --learning_rate than "
        f"{args.learning_rate:g}.")


def train_epochs(session, graph, args, finished_epochs, train_set, validation_set):
    """Train from epoch `finished_epochs` to --n_epoch, saving a checkpoint after each.

    Returns the number of finished epochs. On KeyboardInterrupt (Ctrl+C or SIGTERM,
    see cli.run_main) it logs where training stopped and re-raises.
    """
    saving = False
    try:
        for epoch in range(finished_epochs, args.n_epoch):
            start = time.time()
            train_loss, train_acc = train_epoch(
                session, graph, *train_set, args.batch_size, args.seed, epoch)
            val_loss, val_acc = evaluate(session, graph, *validation_set, args.batch_size)
            _check_epoch_finite(session, graph, args, epoch, train_loss, val_loss)
            session.run(graph.set_epoch, feed_dict={graph.next_epoch: epoch + 1})
            saving = True
            save_checkpoint(session, graph, args.model_dir)
            saving = False
            finished_epochs = epoch + 1
            log.info("epoch %d/%d  train loss %.4f acc %.2f%%  val loss %.4f acc %.2f%%  %.1f s",
                     epoch + 1, args.n_epoch, train_loss, 100 * train_acc,
                     val_loss, 100 * val_acc, time.time() - start)
    except KeyboardInterrupt:
        log.info("training stopped %s epoch %d of %d; the checkpoint in %s keeps the last "
                 "saved epoch, and --resume True continues from it",
                 "while saving" if saving else "in", finished_epochs + 1, args.n_epoch,
                 os.path.abspath(args.model_dir))
        if os.path.isfile(os.path.join(args.model_dir, MODEL_FILE_NAME)):
            log.info("%s still contains the model of the previous finished run: the training "
                     "rewrites it when it finishes, or run --mode inference to write it from the "
                     "checkpoint now", MODEL_FILE_NAME)
        raise
    return finished_epochs


def run(arch, args, k):
    """Train or evaluate `arch` at quantization level `k` (None: full precision), as `args` request.

    Returns the exit code 0. Expected problems raise UsageError, TrainingError or
    the loaders' errors, which cli.run_main turns into one message and an exit code.
    """
    check_options(args)
    check_accuracy_record(args.figs_dir)
    logs.check_figs_architecture(args.figs_dir, arch.name)
    tf = _import_tensorflow()
    from . import tf_model
    tf1 = tf.compat.v1
    tf1.disable_eager_execution()
    tf1.reset_default_graph()

    check_checkpoint_state(args)
    checkpoint = None
    if args.resume or args.mode == "inference":
        checkpoint = find_checkpoint(args, k, arch)

    data = load_fashion_mnist(args.data_dir)
    x_train, y_train = data.x_train[:args.num_train_images], data.y_train[:args.num_train_images]
    x_val, y_val = data.x_val[:args.num_eval_images], data.y_val[:args.num_eval_images]
    x_test, y_test = data.x_test[:args.num_eval_images], data.y_test[:args.num_eval_images]
    precision = "full precision" if k is None else f"k={k}"
    if args.mode == "training":
        log.info("%s %s: %d training, %d validation, %d test images from %s",
                 arch.name, precision, len(x_train), len(x_val), len(x_test), data.source)
    else:
        log.info("%s %s: %d test images from %s", arch.name, precision, len(x_test), data.source)

    tf1.set_random_seed(args.seed)
    graph = Graph(arch, k, args.learning_rate)
    os.makedirs(args.model_dir, exist_ok=True)

    with tf1.Session() as session:
        session.run(tf1.global_variables_initializer())
        finished_epochs = 0
        if checkpoint is not None:
            finished_epochs = restore_checkpoint(session, graph, checkpoint, arch)
            log.info("restored %s after epoch %d", checkpoint, finished_epochs)

        if args.mode == "training":
            finished_epochs = train_epochs(session, graph, args, finished_epochs,
                                           (x_train, y_train), (x_val, y_val))

        test_loss, test_acc = evaluate(session, graph, x_test, y_test, args.batch_size)
        params = session.run(graph.parameters)

    model_path = os.path.join(args.model_dir, MODEL_FILE_NAME)
    metadata = {
        "k": k,
        "test_accuracy": test_acc,
        "test_loss": test_loss,
        "num_test_images": len(x_test),
        "epochs": finished_epochs,
        "bn_epsilon": tf_model.BN_EPSILON,
        **_training_settings(args, arch, k, model_path, finished_epochs, len(x_train)),
    }
    save_model(model_path, arch, params, metadata)
    summary = (f"{arch.name} {precision}: test loss {test_loss:.4f}, test accuracy "
               f"{100 * test_acc:.2f}% on {len(x_test)} images after {finished_epochs} "
               f"epoch{'' if finished_epochs == 1 else 's'}")
    key = "fp32" if k is None else f"k{k}"
    entry = {
        "architecture": arch.name, "accuracy": test_acc, "loss": test_loss,
        "num_test_images": len(x_test), "epochs": finished_epochs,
        "model": os.path.relpath(os.path.abspath(model_path), os.path.abspath(args.figs_dir)),
    }
    _record_accuracy(args.figs_dir, key, entry, summary, model_path)
    print(f"{summary}; model written to {model_path}")
    return 0


def _training_settings(args, arch, k, model_path, finished_epochs, num_train_images):
    """Return the metadata fields that describe how the saved parameters were trained.

    A training run records its own options. --mode inference trains nothing, so it
    keeps the fields of the model file it replaces if that file records the same k
    and number of epochs, and leaves them out otherwise: the checkpoint does not
    store them.
    """
    if args.mode == "training":
        return {
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "seed": args.seed,
            "num_train_images": num_train_images,
            "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
        }
    try:
        previous = load_model(model_path, arch=arch).metadata
    except ModelFileError:
        return {}
    if previous.get("epochs") != finished_epochs or previous.get("k") != k:
        return {}
    return {name: previous[name] for name in TRAINING_SETTINGS if name in previous}


def _record_accuracy(figs_dir, key, entry, summary, model_path):
    """Store `entry` under `key` in ann_accuracy.json, or raise TrainingError citing `summary`.

    check_accuracy_record and logs.check_figs_architecture ran before the training, so
    TrainingError means that during the run the file became invalid (LogError) or
    figs_dir gained another architecture's results (UsageError). An OSError while
    writing the file propagates unchanged.
    """
    try:
        logs.record_ann_accuracy(figs_dir, key, entry)
    except (logs.LogError, UsageError) as error:
        if isinstance(error, logs.LogError):
            fix = "Repair or delete that file"
        else:
            fix = "Pass a --figs_dir without results of another architecture"
        raise TrainingError(
            f"{summary}. The model was written to {model_path}, but the accuracy was not "
            f"recorded: {error}. {fix}, then run --resume True --mode inference with the "
            f"same --model_dir to record it.") from None
