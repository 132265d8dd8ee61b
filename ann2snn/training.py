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
from .cli import MAX_SEED, UsageError, check_output_folder
from .data import TEST_SIZE, TRAIN_SIZE, VALIDATION_SIZE, load_fashion_mnist
from .model_file import MODEL_FILE_NAME, ModelFileError, save_model

log = logging.getLogger("ann2snn.training")

CHECKPOINT_PREFIX = "model_fashion_mnist_advanced.ckpt"
CHECKPOINT_SUFFIXES = (".data-00000-of-00001", ".index", ".meta")
# TensorFlow's checkpoint state file, which names the checkpoint to restore.
CHECKPOINT_STATE_NAME = "checkpoint"
PARTIAL_SUFFIX = ".partial"
# Marks the full-precision model in the checkpoint's config/k variable.
FULL_PRECISION_K = -1


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
    return (f"{_checkpoint_request(args)} needs a checkpoint, but the checkpoint state file "
            f"in {os.path.abspath(args.model_dir)} names no checkpoint whose files exist. "
            f"{_NO_CHECKPOINT_HINT}")


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


def find_checkpoint(args, k):
    """Return the path of the newest complete checkpoint in --model_dir, checked against `k`.

    Raises UsageError when there is none and ModelFileError when it is unreadable or
    was trained at another quantization level.
    """
    tf = _import_tensorflow()
    tf1 = tf.compat.v1
    # tf1.train.latest_checkpoint would do, but it logs its own error when the files are missing.
    state = tf1.train.get_checkpoint_state(args.model_dir)
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

    def describe(value):
        return "full precision" if value == FULL_PRECISION_K else f"k={value}"

    if found_k != expected_k:
        raise ModelFileError(
            f"checkpoint {path} was trained with {describe(found_k)}, but "
            f"{describe(expected_k)} was requested. Pass the matching --k or another --model_dir.")
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
    tf1 = _import_tensorflow().compat.v1
    state = tf1.train.get_checkpoint_state(model_dir)
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

    Raises ModelFileError when the checkpoint belongs to another network or cannot be read.
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
    return int(session.run(graph.epoch))


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
    """Train or evaluate `arch` at quantization level `k` (None: full precision), as `args` request."""
    check_options(args)
    tf = _import_tensorflow()
    from . import tf_model
    tf1 = tf.compat.v1
    tf1.disable_eager_execution()
    tf1.reset_default_graph()

    checkpoint = None
    if args.resume or args.mode == "inference":
        checkpoint = find_checkpoint(args, k)

    data = load_fashion_mnist(args.data_dir)
    x_train, y_train = data.x_train[:args.num_train_images], data.y_train[:args.num_train_images]
    x_val, y_val = data.x_val[:args.num_eval_images], data.y_val[:args.num_eval_images]
    x_test, y_test = data.x_test[:args.num_eval_images], data.y_test[:args.num_eval_images]
    precision = "full precision" if k is None else f"k={k}"
    log.info("%s %s: %d training, %d validation, %d test images from %s",
             arch.name, precision, len(x_train), len(x_val), len(x_test), data.source)

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

    metadata = {
        "k": k,
        "test_accuracy": test_acc,
        "test_loss": test_loss,
        "num_test_images": len(x_test),
        "epochs": finished_epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "seed": args.seed,
        "bn_epsilon": tf_model.BN_EPSILON,
        "num_train_images": len(x_train),
        "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
    }
    model_path = os.path.join(args.model_dir, MODEL_FILE_NAME)
    save_model(model_path, arch, params, metadata)
    key = "fp32" if k is None else f"k{k}"
    logs.record_ann_accuracy(args.figs_dir, key, {
        "accuracy": test_acc, "loss": test_loss, "num_test_images": len(x_test),
        "epochs": finished_epochs, "model": os.path.relpath(os.path.abspath(model_path), os.path.abspath(args.figs_dir))})
    print(f"{arch.name} {precision}: test loss {test_loss:.4f}, test accuracy "
          f"{100 * test_acc:.2f}% on {len(x_test)} images after {finished_epochs} epoch{'' if finished_epochs == 1 else 's'}; "
          f"model written to {model_path}")
    return 0
