"""Interrupted runs: SIGINT, SIGTERM and SIGKILL during training, saving and simulation.

A training run stopped at any moment must leave a checkpoint that restores to one
finished epoch, and the npz of the previous run, so that --resume True continues.
A Spiking_ run stopped at any moment must leave the previous complete logs or none.

The subprocess tests run the real scripts through a small tracer (TRACER below)
that announces chosen operations on stderr and can pause at one of them, so that a
signal lands at a known point instead of a random one.
"""

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from ann2snn import logs, training
from ann2snn.architectures import MLP, Architecture, ConvLayer
from ann2snn.model_file import MODEL_FILE_NAME, load_model

REPO = Path(__file__).resolve().parents[1]
QUANT_SCRIPT = REPO / "MLP" / "Quant_MLP_FashionMNIST.py"
SPIKING_SCRIPT = REPO / "MLP" / "Spiking_MLP_FashionMNIST.py"
TRAIN_OPTIONS = ["--k", "0", "--batch_size", "100", "--num_train_images", "400",
                 "--num_eval_images", "200"]
BATCHES_PER_EPOCH = 4
FINAL = training.CHECKPOINT_PREFIX
PARTIAL = training.CHECKPOINT_PREFIX + training.PARTIAL_SUFFIX

TRACER = r'''
"""Run a script while announcing file operations and training batches on stderr.

    python tracer.py SCRIPT [ARGS...]

Every os.replace, os.rename and os.remove on a path under TRACE_DIR, and every
training minibatch, prints "TRACE <number> <event>". The event whose number or text
equals TRACE_PAUSE_AT prints "TRACE paused" and waits, so that the test can signal
the process right before that operation runs.
"""
import os
import runpy
import sys
import time

watched = os.path.abspath(os.environ["TRACE_DIR"]) + os.sep
pause_at = os.environ.get("TRACE_PAUSE_AT", "")
count = 0


def announce(event):
    global count
    count += 1
    print(f"TRACE {count} {event}", file=sys.stderr, flush=True)
    if pause_at in (str(count), event):
        print("TRACE paused", file=sys.stderr, flush=True)
        # The pause sleeps in short steps because the kernel may deliver the signal to
        # another thread (Numba's or TensorFlow's), which does not wake this one.
        # Python then runs its handler between two sleeps.
        for _ in range(6000):
            time.sleep(0.1)


def traced(name, function):
    def wrapper(path, *args, **kwargs):
        if os.path.abspath(os.fspath(path)).startswith(watched):
            names = [os.path.basename(os.fspath(value)) for value in (path, *args)]
            announce(" ".join([name, *names]))
        return function(path, *args, **kwargs)
    return wrapper


os.replace = traced("replace", os.replace)
os.rename = traced("rename", os.rename)
os.remove = traced("remove", os.remove)

if os.environ.get("TRACE_BATCHES"):
    import tensorlayer

    original_minibatches = tensorlayer.iterate.minibatches
    batch_count = 0

    def minibatches(*args, **kwargs):
        global batch_count
        for batch in original_minibatches(*args, **kwargs):
            if kwargs.get("shuffle"):
                batch_count += 1
                announce(f"batch {batch_count}")
            yield batch

    tensorlayer.iterate.minibatches = minibatches

sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
'''


@pytest.fixture(scope="module")
def tracer(tmp_path_factory):
    path = tmp_path_factory.mktemp("tracer") / "tracer.py"
    path.write_text(TRACER)
    return path


def run_traced(tracer, script, args, trace_dir, pause_at=None, signum=None, batches=False,
               timeout=240):
    """Run `script` under the tracer; send `signum` once it pauses at `pause_at`.

    Returns (exit code, stderr lines). Fails the test if the pause never came.
    """
    env = dict(os.environ, TRACE_DIR=str(trace_dir), TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONUNBUFFERED="1")
    env["TRACE_PAUSE_AT"] = "" if pause_at is None else str(pause_at)
    if batches:
        env["TRACE_BATCHES"] = "1"
    command = [sys.executable, str(tracer), str(script), *map(str, args)]
    process = subprocess.Popen(command, cwd=script.parent, env=env, text=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lines = queue.Queue()

    def read_stderr():
        for line in process.stderr:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read_stderr, daemon=True).start()
    seen, signalled = [], False
    try:
        while True:
            line = lines.get(timeout=timeout)
            if line is None:
                break
            seen.append(line)
            if line == "TRACE paused" and not signalled:
                process.send_signal(signum)
                signalled = True
        process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if pause_at is not None:
        assert signalled, "\n".join(seen)
    return process.returncode, seen


def traced_events(lines):
    """Return the event texts of the TRACE lines, without their numbers."""
    return [line.split(" ", 2)[2] for line in lines
            if line.startswith("TRACE ") and line != "TRACE paused"]


def state_names(model_dir):
    """Return the checkpoint that the state file of `model_dir` names (its basename)."""
    text = (Path(model_dir) / training.CHECKPOINT_STATE_NAME).read_text()
    first = text.splitlines()[0]
    assert first.startswith("model_checkpoint_path: "), text
    return os.path.basename(first.split('"')[1])


def assert_clean_interrupt(code, lines, signum):
    text = "\n".join(lines)
    assert code == 128 + signum, text
    assert f"interrupted by {signal.Signals(signum).name}" in text, text
    assert "Traceback" not in text, text


# --- The checkpoint save protocol, interrupted at every step ---------------------------

TINY = Architecture(name="Tiny", hidden=(ConvLayer("fc1", 28, 3),))


class SimulatedKill(BaseException):
    """The stand-in for a process killed right before one step of a save."""


class StepInterrupter:
    """Counts the steps of training.save_checkpoint and raises SimulatedKill at one of them.

    A step is a call of Saver.save, of update_checkpoint_state, or of os.replace or
    os.remove on a path in the model folder. At Saver.save the `.partial` files are
    first overwritten with garbage, as a process killed in the middle of writing them
    would leave them.
    """

    def __init__(self, model_dir):
        self.model_dir = str(model_dir)
        self.steps = []
        self.stop_at = None

    def arm(self, stop_at):
        self.steps = []
        self.stop_at = stop_at

    def step(self, name):
        self.steps.append(name)
        if len(self.steps) - 1 == self.stop_at:
            if name.startswith("save"):
                for suffix in training.CHECKPOINT_SUFFIXES:
                    Path(self.model_dir, PARTIAL + suffix).write_bytes(b"torn write")
            raise SimulatedKill(name)

    def wrap_path_function(self, name, function):
        def wrapper(path, *args, **kwargs):
            if os.path.abspath(path).startswith(self.model_dir + os.sep):
                self.step(f"{name} {os.path.basename(path)}")
            return function(path, *args, **kwargs)
        return wrapper

    def wrap_function(self, name, function):
        def wrapper(*args, **kwargs):
            self.step(name)
            return function(*args, **kwargs)
        return wrapper


@pytest.fixture(scope="module")
def tiny_session():
    tf = training._import_tensorflow()
    tf1 = tf.compat.v1
    with tf.Graph().as_default():
        graph = training.Graph(TINY, 0, 1e-3)
        session = tf1.Session()
        session.run(tf1.global_variables_initializer())
        yield tf1, graph, session
        session.close()


def set_epoch(tf1, graph, session, epoch):
    """Give every parameter the value `epoch`, so that a mixed checkpoint is detectable."""
    for variable in graph.parameters:
        variable.load(np.full(variable.shape, epoch, dtype=np.float32), session)
    session.run(graph.set_epoch, feed_dict={graph.next_epoch: epoch})


def restored_epoch(tf1, graph, session, model_dir):
    """Restore the newest checkpoint and return its epoch after checking every parameter."""
    path = tf1.train.latest_checkpoint(str(model_dir))
    assert path is not None, sorted(os.listdir(model_dir))
    set_epoch(tf1, graph, session, -1)
    graph.saver.restore(session, path)
    epoch = int(session.run(graph.epoch))
    for variable, value in zip(graph.parameters, session.run(graph.parameters)):
        assert np.all(value == epoch), f"{variable.name} of {path} is not from epoch {epoch}"
    return epoch


def test_save_protocol_survives_every_interruption(tiny_session, tmp_path, monkeypatch):
    """Interrupt two consecutive saves at every pair of steps, then restore a complete epoch."""
    tf1, graph, session = tiny_session

    def attempt(model_dir, first_stop, second_stop):
        interrupter = StepInterrupter(model_dir)
        with monkeypatch.context() as patch:
            patch.setattr(os, "replace", interrupter.wrap_path_function("replace", os.replace))
            patch.setattr(os, "remove", interrupter.wrap_path_function("remove", os.remove))
            patch.setattr(tf1.train, "update_checkpoint_state", interrupter.wrap_function(
                "state", tf1.train.update_checkpoint_state))
            patch.setattr(graph.saver, "save", interrupter.wrap_function("save", graph.saver.save))
            step_lists = []
            for epoch, stop_at in ((1, None), (2, first_stop), (3, second_stop)):
                set_epoch(tf1, graph, session, epoch)
                interrupter.arm(stop_at)
                try:
                    training.save_checkpoint(session, graph, str(model_dir))
                except SimulatedKill:
                    pass
                step_lists.append(interrupter.steps)
        return step_lists

    # One uninterrupted sequence gives the steps of a save.
    steps = attempt(tmp_path / "uninterrupted", None, None)[1]
    assert steps[:2] == ["save", "state"], steps
    first_save_steps = len(steps)

    for first_stop in range(first_save_steps):
        second_save_steps = None
        second_stop = 0
        while second_save_steps is None or second_stop < second_save_steps:
            model_dir = tmp_path / f"stop-{first_stop}-{second_stop}"
            step_lists = attempt(model_dir, first_stop, second_stop)
            if second_save_steps is None:
                # The save after an interrupted one may first finish the interrupted one.
                second_save_steps = len(attempt(tmp_path / f"count-{first_stop}",
                                                first_stop, None)[2])
            case = f"first save stopped at {step_lists[1][-1]!r} (step {first_stop}), " \
                   f"second at {step_lists[2][-1]!r} (step {second_stop})"

            epoch = restored_epoch(tf1, graph, session, model_dir)
            # Once the state file named the new checkpoint, epoch 1 must never come back.
            lowest = 2 if first_stop > 1 else 1
            assert lowest <= epoch <= 3, case

            # An uninterrupted save afterwards repairs everything.
            set_epoch(tf1, graph, session, 4)
            training.save_checkpoint(session, graph, str(model_dir))
            assert restored_epoch(tf1, graph, session, model_dir) == 4, case
            assert state_names(model_dir) == FINAL, case
            assert not list(model_dir.glob(PARTIAL + "*")), case
            second_stop += 1


# --- Training runs stopped by signals --------------------------------------------------


@pytest.fixture(scope="module")
def trained_one_epoch(tmp_path_factory):
    """A quantized MLP trained for one epoch: its folder with data/, model/ and figs/."""
    root = tmp_path_factory.mktemp("base")
    result = subprocess.run(
        [sys.executable, str(QUANT_SCRIPT), *TRAIN_OPTIONS, "--n_epoch", "1",
         "--data_dir", str(root / "data"), "--model_dir", str(root / "model"),
         "--figs_dir", str(root / "figs")],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return root


def test_resumed_training_equals_uninterrupted(trained_one_epoch, tmp_path):
    """One epoch, then a resume to two epochs, gives the parameters of two epochs in one run.

    So the from-scratch command in pretrained/manifest.json also reproduces a model
    whose training was stopped and resumed.
    """
    def train(model_dir, resume, n_epoch):
        result = subprocess.run(
            [sys.executable, str(QUANT_SCRIPT), *TRAIN_OPTIONS, "--resume", resume,
             "--n_epoch", str(n_epoch), "--data_dir", str(trained_one_epoch / "data"),
             "--model_dir", str(model_dir), "--figs_dir", str(tmp_path / "figs")],
            capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr

    resumed_dir = tmp_path / "resumed"
    shutil.copytree(trained_one_epoch / "model", resumed_dir)
    train(resumed_dir, "True", 2)
    train(tmp_path / "uninterrupted", "False", 2)

    resumed = load_model(str(resumed_dir / MODEL_FILE_NAME), arch=MLP, k=0)
    uninterrupted = load_model(str(tmp_path / "uninterrupted" / MODEL_FILE_NAME), arch=MLP, k=0)
    assert resumed.metadata["epochs"] == 2
    assert uninterrupted.metadata["epochs"] == 2
    assert len(resumed.params) == len(uninterrupted.params)
    for resumed_param, uninterrupted_param in zip(resumed.params, uninterrupted.params):
        np.testing.assert_array_equal(resumed_param, uninterrupted_param)


def test_training_interrupted_then_resumed(trained_one_epoch, tracer, tmp_path):
    """SIGTERM mid-epoch, then SIGKILL mid-save, then a resume that finishes the epochs."""
    model_dir = tmp_path / "model"
    shutil.copytree(trained_one_epoch / "model", model_dir)
    npz_before = (model_dir / MODEL_FILE_NAME).read_bytes()

    def resume(n_epoch, **trace):
        args = [*TRAIN_OPTIONS, "--resume", "True", "--n_epoch", n_epoch,
                "--data_dir", trained_one_epoch / "data", "--model_dir", model_dir,
                "--figs_dir", tmp_path / "figs"]
        return run_traced(tracer, QUANT_SCRIPT, args, model_dir, **trace)

    # 1. SIGTERM in the second batch of epoch 3: epoch 2 is saved, nothing else changes.
    code, lines = resume(3, pause_at=f"batch {BATCHES_PER_EPOCH + 2}", signum=signal.SIGTERM,
                         batches=True)
    assert_clean_interrupt(code, lines, signal.SIGTERM)
    assert any(line.startswith("restored ") and line.endswith(" after epoch 1") for line in lines)
    assert any(line.startswith("epoch 2/3") for line in lines), lines
    assert not any(line.startswith("epoch 3/3") for line in lines), lines
    assert any("--resume True continues from it" in line for line in lines), lines
    assert any(line.startswith(f"{MODEL_FILE_NAME} still contains the model of the previous finished run")
               for line in lines), lines
    assert state_names(model_dir) == FINAL
    assert (model_dir / MODEL_FILE_NAME).read_bytes() == npz_before
    assert not (tmp_path / "figs").exists()

    # 2. SIGKILL while the saved epoch 3 is copied over the final names: the final
    # files are a mix of epochs 2 and 3, and the state file names the `.partial` copy.
    index_copy = f"replace {FINAL}.index.tmp {FINAL}.index"
    code, lines = resume(3, pause_at=index_copy, signum=signal.SIGKILL)
    assert code == -signal.SIGKILL, lines
    assert any(line.startswith("restored ") and line.endswith(" after epoch 2") for line in lines)
    assert f"replace {FINAL}.data-00000-of-00001.tmp {FINAL}.data-00000-of-00001" in \
        traced_events(lines)
    assert state_names(model_dir) == PARTIAL
    assert (model_dir / MODEL_FILE_NAME).read_bytes() == npz_before

    # 3. A resume restores epoch 3 from `.partial`, trains epoch 4 only and leaves a
    # clean folder.
    code, lines = resume(4)
    assert code == 0, lines
    assert any(line.endswith(f"{PARTIAL} after epoch 3") for line in lines), lines
    assert [line.split()[1] for line in lines if line.startswith("epoch ")] == ["4/4"]
    assert load_model(str(model_dir / MODEL_FILE_NAME), arch=MLP, k=0).metadata["epochs"] == 4
    assert logs.read_ann_accuracy(tmp_path / "figs")["k0"]["epochs"] == 4
    assert state_names(model_dir) == FINAL
    assert not list(model_dir.glob(PARTIAL + "*"))


# --- Single writes killed before their rename ------------------------------------------

WRITE_BOTH = '''
import sys
from ann2snn import logs
from ann2snn.architectures import MLP
from ann2snn.model_file import load_model, save_model

model_path, figs_dir = sys.argv[1:]
model = load_model(model_path, arch=MLP, k=0)
save_model(model_path, MLP, model.params, dict(model.metadata, epochs=99))
logs.record_ann_accuracy(figs_dir, "k0", {"accuracy": 0.99, "epochs": 99})
'''


@pytest.mark.parametrize("pause_at", [1, 2], ids=["npz", "ann_accuracy"])
def test_killed_write_keeps_previous_file(trained_one_epoch, tracer, tmp_path, pause_at):
    shutil.copytree(trained_one_epoch / "model", tmp_path / "model")
    shutil.copytree(trained_one_epoch / "figs", tmp_path / "figs")
    model_path = tmp_path / "model" / MODEL_FILE_NAME
    accuracy_path = tmp_path / "figs" / logs.ANN_ACCURACY_NAME
    npz_before, accuracy_before = model_path.read_bytes(), accuracy_path.read_bytes()
    script = tmp_path / "write_both.py"
    script.write_text(f"import sys\nsys.path.insert(0, {str(REPO)!r})\n" + WRITE_BOTH)

    code, lines = run_traced(tracer, script, [model_path, tmp_path / "figs"], tmp_path,
                             pause_at=pause_at, signum=signal.SIGKILL)
    assert code == -signal.SIGKILL, lines
    assert load_model(str(model_path), arch=MLP, k=0)
    if pause_at == 1:
        assert traced_events(lines)[-1].endswith(f".tmp {MODEL_FILE_NAME}"), lines
        assert model_path.read_bytes() == npz_before
    else:
        assert traced_events(lines)[-1].endswith(f".tmp {logs.ANN_ACCURACY_NAME}"), lines
        assert load_model(str(model_path)).metadata["epochs"] == 99
        assert accuracy_path.read_bytes() == accuracy_before


# --- Spiking runs stopped by signals ---------------------------------------------------


def spiking_args(trained_one_epoch, figs_dir, time_steps):
    return ["--k", 0, "--time_steps", time_steps, "--num_images", 60,
            "--data_dir", trained_one_epoch / "data", "--model_dir", trained_one_epoch / "model",
            "--figs_dir", figs_dir]


@pytest.fixture(scope="module")
def spiking_logs(trained_one_epoch, tracer, tmp_path_factory):
    """Logs of a 3-step run, then of a 4-step run over them, with the traced steps of each."""
    root = tmp_path_factory.mktemp("spiking")
    runs = {}
    for time_steps in (3, 4):
        figs_dir = root / f"steps{time_steps}"
        if time_steps == 4:
            shutil.copytree(root / "steps3", figs_dir)
        code, lines = run_traced(tracer, SPIKING_SCRIPT,
                                 spiking_args(trained_one_epoch, figs_dir, time_steps), figs_dir)
        assert code == 0, lines
        runs[time_steps] = (figs_dir, traced_events(lines))
    return runs


def read_log_arrays(run_dir):
    run = logs.read_run_logs(run_dir)
    return {name: getattr(run, name).tolist() for name in logs.LOG_NAMES}


def test_spiking_killed_at_every_write_step(trained_one_epoch, tracer, spiking_logs, tmp_path):
    old_figs, _ = spiking_logs[3]
    new_figs, steps = spiking_logs[4]
    # Four logs and summary.json renamed into place, then the run folder swapped.
    assert len(steps) == 7, steps
    old, new = read_log_arrays(old_figs / "k0"), read_log_arrays(new_figs / "k0")

    for pause_at in range(1, len(steps) + 1):
        figs_dir = tmp_path / f"killed-at-{pause_at}"
        shutil.copytree(old_figs, figs_dir)
        code, lines = run_traced(tracer, SPIKING_SCRIPT,
                                 spiking_args(trained_one_epoch, figs_dir, 4), figs_dir,
                                 pause_at=pause_at, signum=signal.SIGKILL)
        assert code == -signal.SIGKILL, lines
        runs = logs.find_runs(figs_dir)
        if 0 in runs:
            assert read_log_arrays(runs[0]) in (old, new), f"killed before {steps[pause_at - 1]}"
        else:
            # Killed between moving the old folder aside and moving the new one in.
            assert steps[pause_at - 1].startswith("rename k0.tmp-"), steps[pause_at - 1]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_spiking_signal_keeps_previous_logs(trained_one_epoch, tracer, spiking_logs, tmp_path,
                                            signum):
    old_figs, _ = spiking_logs[3]
    figs_dir = tmp_path / "figs"
    shutil.copytree(old_figs, figs_dir)
    old = read_log_arrays(old_figs / "k0")

    # Step 3 is the rename of the third log inside the temporary run folder.
    code, lines = run_traced(tracer, SPIKING_SCRIPT,
                             spiking_args(trained_one_epoch, figs_dir, 4), figs_dir,
                             pause_at=3, signum=signum)
    assert_clean_interrupt(code, lines, signum)
    assert read_log_arrays(figs_dir / "k0") == old
    # The cleanup of write_run_logs removed its temporary folder.
    assert sorted(path.name for path in figs_dir.iterdir()) == sorted(
        path.name for path in old_figs.iterdir())
