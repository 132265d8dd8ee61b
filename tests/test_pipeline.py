"""End to end on a slice of the real Fashion-MNIST: train, reload, convert, simulate, plot.

The scripts run as subprocesses, as a user runs them, with every output
directed into pytest's temporary folders.
"""

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from ann2snn import logs, quantized_ann
from ann2snn.architectures import LENET, MLP
from ann2snn.data import load_test_set
from ann2snn.model_file import MODEL_FILE_NAME, load_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_IMAGES = 1000
EVAL_IMAGES = 200
CHECKPOINT_FILES = ("checkpoint", "model_fashion_mnist_advanced.ckpt.data-00000-of-00001",
                    "model_fashion_mnist_advanced.ckpt.index",
                    "model_fashion_mnist_advanced.ckpt.meta")


def run_script(arch_name, script, *args, cwd=None):
    """Run `<arch>/<script>` with `args`; return the completed process (output captured)."""
    folder = os.path.join(REPO, arch_name)
    result = subprocess.run([sys.executable, os.path.join(folder, script), *map(str, args)],
                            cwd=cwd or folder, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{script} failed:\n{result.stdout}\n{result.stderr}"
    return result


def train(arch_name, tmp, k, epochs=1):
    return run_script(
        arch_name, f"Quant_{arch_name}_FashionMNIST.py", "--k", k, "--resume", "False",
        "--mode", "training", "--n_epoch", epochs, "--num_train_images", TRAIN_IMAGES,
        "--num_eval_images", EVAL_IMAGES, "--data_dir", tmp / "data",
        "--model_dir", tmp / "model", "--figs_dir", tmp / "figs")


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
    """A quantized MLP (k=1) trained for two epochs on a slice, then simulated."""
    tmp = tmp_path_factory.mktemp("mlp")
    training = train("MLP", tmp, k=1, epochs=2)
    spiking = run_script(
        "MLP", "Spiking_MLP_FashionMNIST.py", "--k", 1, "--time_steps", 30,
        "--batch_size", 64, "--num_images", EVAL_IMAGES, "--verify",
        "--data_dir", tmp / "data", "--model_dir", tmp / "model", "--figs_dir", tmp / "figs")
    return tmp, training, spiking


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory):
    """A quantized LeNet (k=0) trained for one epoch on a slice, then simulated."""
    tmp = tmp_path_factory.mktemp("lenet")
    training = train("LeNet", tmp, k=0)
    spiking = run_script(
        "LeNet", "Spiking_LeNet_FashionMNIST.py", "--k", 0, "--time_steps", 20,
        "--num_images", 100, "--verify",
        "--data_dir", tmp / "data", "--model_dir", tmp / "model", "--figs_dir", tmp / "figs")
    return tmp, training, spiking


def test_quantizer_forward_values():
    import tensorflow as tf
    from ann2snn.tf_model import quantize

    tf1 = tf.compat.v1
    values = np.array([0.0, 0.1, 0.24, 0.25, 0.26, 0.5, 0.75, 1.3, 2.0], dtype=np.float32)
    # Multiples of 1/2^k; exact halves (0.25 at k=1, 0.5 at k=0) round up.
    expected = {
        0: [0, 0, 0, 0, 0, 1, 1, 1, 2],
        1: [0, 0, 0, 0.5, 0.5, 0.5, 1, 1.5, 2],
        2: [0, 0, 0.25, 0.25, 0.25, 0.5, 0.75, 1.25, 2],
    }
    with tf.Graph().as_default(), tf1.Session() as session:
        for k, wanted in expected.items():
            found = session.run(quantize(tf.constant(values), k))
            np.testing.assert_array_equal(found, np.array(wanted, dtype=np.float32), err_msg=f"k={k}")


def test_quantizer_gradient_is_straight_through():
    import tensorflow as tf
    from ann2snn.tf_model import quantize

    tf1 = tf.compat.v1
    with tf.Graph().as_default(), tf1.Session() as session:
        x = tf.constant([0.1, 0.3, 0.7, 1.9], dtype=tf.float32)
        upstream = tf.constant([1.0, -2.0, 3.0, 0.5])
        gradient = tf1.gradients(quantize(x, 1) * upstream, x)[0]
        np.testing.assert_array_equal(session.run(gradient), [1.0, -2.0, 3.0, 0.5])


def test_training_writes_every_output_file(mlp_run):
    tmp, _, _ = mlp_run
    for name in CHECKPOINT_FILES + (MODEL_FILE_NAME,):
        assert (tmp / "model" / name).is_file(), name
    recorded = logs.read_ann_accuracy(tmp / "figs")
    assert set(recorded) == {"k1"}
    assert 0.1 < recorded["k1"]["accuracy"] <= 1.0


def test_training_logs_one_line_per_epoch(mlp_run):
    _, training, _ = mlp_run
    epoch_lines = [line for line in training.stderr.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epoch_lines] == ["1/2", "2/2"]
    assert all("val loss" in line and "train loss" in line for line in epoch_lines)


def test_npz_layout_order_shapes_metadata(mlp_run):
    tmp, _, _ = mlp_run
    with np.load(tmp / "model" / MODEL_FILE_NAME, allow_pickle=False) as archive:
        names = [str(name) for name in archive["names"]]
        shapes = [archive[f"param_{index:02d}"].shape for index in range(len(names))]
        metadata = json.loads(str(archive["metadata"]))
    assert names == [name for name, _ in MLP.param_shapes()]
    assert names[:6] == ["fc1/W", "fc1/beta", "fc1/gamma", "fc1/moving_mean",
                         "fc1/moving_variance", "fc2/W"]
    assert shapes == [tuple(shape) for _, shape in MLP.param_shapes()]
    assert shapes[0] == (28, 28, 1, 400)
    assert shapes[-1] == (400, 10)
    assert metadata["architecture"] == "MLP"
    assert metadata["k"] == 1
    assert metadata["epochs"] == 2
    assert metadata["num_test_images"] == EVAL_IMAGES


def test_lenet_npz_has_paper_shapes(lenet_run):
    tmp, _, _ = lenet_run
    model = load_model(str(tmp / "model" / MODEL_FILE_NAME), arch=LENET, k=0)
    kernels = [tuple(model.params[5 * index].shape) for index in range(5)]
    assert kernels == [(5, 5, 1, 32), (2, 2, 32, 32), (5, 5, 32, 64), (2, 2, 64, 64),
                       (4, 4, 64, 1024)]
    assert model.params[-1].shape == (1024, 10)


def test_inference_after_resume_reproduces_accuracy(mlp_run):
    tmp, _, _ = mlp_run
    recorded = logs.read_ann_accuracy(tmp / "figs")["k1"]["accuracy"]
    run_script("MLP", "Quant_MLP_FashionMNIST.py", "--k", 1, "--resume", "True",
               "--mode", "inference", "--num_eval_images", EVAL_IMAGES,
               "--data_dir", tmp / "data", "--model_dir", tmp / "model",
               "--figs_dir", tmp / "figs_inference")
    reproduced = logs.read_ann_accuracy(tmp / "figs_inference")["k1"]
    assert reproduced["accuracy"] == recorded
    assert reproduced["epochs"] == 2


def test_resume_training_continues_epoch_count(tmp_path):
    train("MLP", tmp_path, k=0, epochs=1)
    result = run_script(
        "MLP", "Quant_MLP_FashionMNIST.py", "--k", 0, "--resume", "True", "--mode", "training",
        "--n_epoch", 2, "--num_train_images", 400, "--num_eval_images", 100,
        "--data_dir", tmp_path / "data", "--model_dir", tmp_path / "model",
        "--figs_dir", tmp_path / "figs")
    epochs = [line.split()[1] for line in result.stderr.splitlines() if line.startswith("epoch ")]
    assert epochs == ["2/2"]
    assert load_model(str(tmp_path / "model" / MODEL_FILE_NAME)).metadata["epochs"] == 2


def test_resume_with_relative_model_dir(tmp_path):
    """A --model_dir relative to a working folder elsewhere resumes, as reproduce.py runs it."""
    work = tmp_path / "work"
    work.mkdir()
    common = ["--k", 0, "--mode", "training", "--num_train_images", 400,
              "--num_eval_images", 100, "--data_dir", "../data", "--model_dir", "../model",
              "--figs_dir", "../figs"]
    run_script("MLP", "Quant_MLP_FashionMNIST.py", "--resume", "False", "--n_epoch", 1,
               *common, cwd=work)
    state = (tmp_path / "model" / "checkpoint").read_text()
    assert 'model_checkpoint_path: "model_fashion_mnist_advanced.ckpt"' in state
    result = run_script("MLP", "Quant_MLP_FashionMNIST.py", "--resume", "True", "--n_epoch", 2,
                        *common, cwd=work)
    epochs = [line.split()[1] for line in result.stderr.splitlines() if line.startswith("epoch ")]
    assert epochs == ["2/2"]


@pytest.mark.parametrize("fixture", ["mlp_run", "lenet_run"])
def test_spiking_counts_equal_quantized_ann(fixture, request):
    _, _, spiking = request.getfixturevalue(fixture)
    verify_lines = [line for line in spiking.stderr.splitlines() if line.startswith("verify ")]
    assert verify_lines, spiking.stderr
    assert all(": 0 neurons differ" in line for line in verify_lines), verify_lines


@pytest.mark.parametrize("fixture", ["mlp_run", "lenet_run"])
def test_spiking_accuracy_equals_numpy_ann(fixture, request):
    tmp, _, _ = request.getfixturevalue(fixture)
    run = logs.read_run_logs(next(iter(logs.find_runs(tmp / "figs").values())))
    assert run.summary["snn_accuracy"] == run.summary["numpy_ann_accuracy"]
    assert run.summary["ann_agreement_step"] is not None
    assert run.summary["settled_step"] is not None


def test_snn_predictions_equal_tensorflow_ann(mlp_run):
    """The TensorFlow graph, fed the npz, predicts what the spiking network ends with."""
    import tensorflow as tf
    from ann2snn import tf_model

    tmp, _, _ = mlp_run
    model = load_model(str(tmp / "model" / MODEL_FILE_NAME), arch=MLP, k=1)
    images, labels = load_test_set(str(tmp / "data"))
    images, labels = images[:EVAL_IMAGES], labels[:EVAL_IMAGES]

    tf1 = tf.compat.v1
    with tf.Graph().as_default(), tf1.Session() as session:
        placeholder = tf1.placeholder(tf.float32, [None, 28, 28, 1])
        logits = tf_model.inference(placeholder, MLP, 1, is_train=False)
        for variable, value in zip(tf_model.parameter_variables(MLP), model.params):
            variable.load(value, session)
        tf_predictions = np.argmax(session.run(logits, {placeholder: images}), axis=1)

    _, numpy_logits = quantized_ann.forward(MLP, model.params, 1, 1e-5, images)
    numpy_predictions = np.argmax(numpy_logits, axis=1)
    # The spiking network ends on the NumPy ANN's predictions (ann_agreement_step above);
    # here the NumPy ANN is checked against TensorFlow's float32 graph.
    assert np.array_equal(numpy_predictions, tf_predictions)
    run = logs.read_run_logs(logs.find_runs(tmp / "figs")[1])
    assert run.accuracy[:, -1].sum() == np.sum(tf_predictions == labels)


def test_logs_have_one_line_per_batch_per_step(mlp_run):
    tmp, _, _ = mlp_run
    run_dir = tmp / "figs" / "k1"
    batches = -(-EVAL_IMAGES // 64)
    for name in logs.LOG_NAMES:
        lines = (run_dir / f"{name}.txt").read_text().splitlines()
        assert len(lines) == batches * 30, name
        assert all(line.lstrip("-").isdigit() for line in lines), name


def test_accuracy_curve_rises_to_ann(mlp_run):
    tmp, _, _ = mlp_run
    run = logs.read_run_logs(tmp / "figs" / "k1")
    per_step = run.accuracy.sum(axis=0)
    assert per_step[-1] > per_step[0]
    assert per_step[-1] / EVAL_IMAGES == run.summary["numpy_ann_accuracy"]


@pytest.mark.parametrize("figure", ["accuracy_speed", "sops", "sparsity"])
def test_figure_renders_from_simulation_logs(figure, mlp_run):
    tmp, _, _ = mlp_run
    result = run_script("MLP", os.path.join("figs", f"{figure}.py"), "--figs_dir", tmp / "figs")
    png = tmp / "figs" / f"smlp_{figure}_fashionmnist.png"
    assert str(png) in result.stdout
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 300
    assert height > 200
