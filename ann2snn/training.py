"""Training and evaluation loop shared by the Quant_ and FP32_ scripts.

`run(arch, args, k)` does what one script invocation asks:

    training   build the graph, restore the checkpoint if --resume True, train the
               remaining epochs (checkpoint after each), then evaluate on the test
               set and write model_fashion_mnist.npz
    inference  restore the checkpoint, evaluate on the test set, write the npz

The test accuracy is also recorded in <figs_dir>/ann_accuracy.json, where the
figure scripts read it.
"""

import logging
import os
import shutil
import sys
import time

import numpy as np

from . import logs
from .cli import UsageError
from .data import load_fashion_mnist
from .model_file import MODEL_FILE_NAME, ModelFileError, save_model

log = logging.getLogger("ann2snn.training")

CHECKPOINT_PREFIX = "model_fashion_mnist_advanced.ckpt"
CHECKPOINT_SUFFIXES = (".data-00000-of-00001", ".index", ".meta")
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

    # Seeding per epoch makes a resumed run shuffle exactly as an uninterrupted one.
    np.random.seed(seed + epoch)
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


def save_checkpoint(session, graph, model_dir):
    """Save the variables under the paper's checkpoint names without a window of damage.

    The checkpoint is first written under a `.partial` prefix and the `checkpoint`
    state file pointed at it; only then are its files copied over the final names
    (each by an atomic rename) and the state pointed back. Whenever the process
    dies, the state file names a complete checkpoint.
    """
    tf = _import_tensorflow()
    tf1 = tf.compat.v1
    final = checkpoint_path(model_dir)
    partial = final + ".partial"
    graph.saver.save(session, partial, write_meta_graph=True, write_state=False)
    tf1.train.update_checkpoint_state(model_dir, os.path.basename(partial),
                                      all_model_checkpoint_paths=[os.path.basename(partial)])
    for suffix in CHECKPOINT_SUFFIXES:
        shutil.copyfile(partial + suffix, final + suffix + ".tmp")
        os.replace(final + suffix + ".tmp", final + suffix)
    tf1.train.update_checkpoint_state(model_dir, os.path.basename(final),
                                      all_model_checkpoint_paths=[os.path.basename(final)])
    for suffix in CHECKPOINT_SUFFIXES:
        os.remove(partial + suffix)


def restore_checkpoint(session, graph, model_dir, k):
    """Restore the newest complete checkpoint in `model_dir`; return the epochs it finished."""
    tf = _import_tensorflow()
    tf1 = tf.compat.v1
    path = tf1.train.latest_checkpoint(model_dir)
    if path is None:
        raise ModelFileError(
            f"no checkpoint found in {os.path.abspath(model_dir)}: train first with "
            f"--resume False --mode training, or pass --model_dir with the folder of "
            f"{CHECKPOINT_PREFIX}")
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
    try:
        graph.saver.restore(session, path)
    except tf.errors.OpError as error:
        first_line = str(error).strip().splitlines()[0]
        raise ModelFileError(
            f"checkpoint {path} does not fit this network (another architecture?): "
            f"{first_line}") from error
    return int(session.run(graph.epoch))


def run(arch, args, k):
    """Train or evaluate `arch` at quantization level `k` (None: full precision), as `args` say."""
    tf = _import_tensorflow()
    from . import tf_model
    tf1 = tf.compat.v1
    tf1.disable_eager_execution()
    tf1.reset_default_graph()

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
        if args.resume or args.mode == "inference":
            finished_epochs = restore_checkpoint(session, graph, args.model_dir, k)
            log.info("restored %s after epoch %d", checkpoint_path(args.model_dir), finished_epochs)

        if args.mode == "training":
            for epoch in range(finished_epochs, args.n_epoch):
                start = time.time()
                train_loss, train_acc = train_epoch(
                    session, graph, x_train, y_train, args.batch_size, args.seed, epoch)
                val_loss, val_acc = evaluate(session, graph, x_val, y_val, args.batch_size)
                session.run(graph.set_epoch, feed_dict={graph.next_epoch: epoch + 1})
                save_checkpoint(session, graph, args.model_dir)
                finished_epochs = epoch + 1
                log.info("epoch %d/%d  train loss %.4f acc %.2f%%  val loss %.4f acc %.2f%%  %.1f s",
                         epoch + 1, args.n_epoch, train_loss, 100 * train_acc,
                         val_loss, 100 * val_acc, time.time() - start)

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
        "epochs": finished_epochs, "model": os.path.abspath(model_path)})
    print(f"{arch.name} {precision}: test loss {test_loss:.4f}, test accuracy "
          f"{100 * test_acc:.2f}% on {len(x_test)} images after {finished_epochs} epochs; "
          f"model written to {model_path}")
    return 0
