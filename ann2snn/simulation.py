"""Simulation of a converted model over the test set, and what the Spiking_ scripts log.

    simulate(model, images, labels, time_steps, batch_size)  ->  SimulationResult
    summarize(result, model)                                 ->  dict for summary.json
    run(arch, args)                                          ->  exit code of a Spiking_ script

Per batch and time step the logs hold: correct predictions, spikes of either
sign so far, net spikes so far (positive minus negative) and synaptic
operations (SOPs) so far. Every image is simulated independently, so the
totals do not depend on the batch size.
"""

import logging
import os
import sys
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from . import logs, quantized_ann
from .cli import UsageError, check_output_folder
from .data import TEST_SIZE, load_test_set
from .model_file import MODEL_FILE_NAME, load_model
from .spiking_utils import SpikingNetwork, Trace

log = logging.getLogger("ann2snn.simulation")

DEFAULT_BN_EPSILON = 1e-5
# How many mismatching neurons --verify prints in full.
MAX_REPORTED_MISMATCHES = 10


@dataclass
class Mismatch:
    """A neuron whose net spike count differs from the quantized ANN's activation."""

    image: int
    layer: str
    position: tuple
    channel: int
    snn_count: int
    ann_count: int


@dataclass
class SimulationResult:
    """Logs (num_batches, time_steps) and what the comparison with the NumPy ANN found."""

    logs: dict
    batch_sizes: list
    ann_correct: int
    # 0-based last step at which an image's prediction differed from the ANN's (-1: never).
    last_disagreement: np.ndarray
    # 0-based last step at which a hidden neuron of each batch spiked (-1: never).
    last_spike_step: np.ndarray
    mismatch_counts: dict = field(default_factory=dict)
    mismatches: list = field(default_factory=list)


def default_engine():
    """Return "events" when Numba can be imported, else "layers"."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return "layers"
    return "events"


def simulate(model, images, labels, time_steps, batch_size, verify=False, progress=True,
             stepwise=False, compare_with_ann=True, engine=None):
    """Simulate the spiking network of `model` on `images` for `time_steps` steps per batch.

    `engine` picks the implementation, and all three give the same results.
    "events" simulates spike by spike, compiled with Numba, and is the default
    when Numba is installed. "layers" feeds each layer's whole spike train
    through NumPy matrix products. "steps" advances the whole network one time
    step at a time, the plainest code.

    `compare_with_ann` also runs the NumPy quantized ANN on every batch, for its
    accuracy and the step from which the predictions agree. `verify` needs it,
    because it compares every neuron's final net spike count with that ANN.

    `stepwise=True` is the same as engine="steps".
    """
    arch = model.architecture
    epsilon = model.metadata.get("bn_epsilon", DEFAULT_BN_EPSILON)
    network = SpikingNetwork(arch, model.params, model.k, epsilon)
    num_batches = -(-len(images) // batch_size)
    records = {name: np.zeros((num_batches, time_steps), dtype=np.int64) for name in logs.LOG_NAMES}
    last_disagreement = np.full(len(images), -1)
    last_spike_step = np.full(num_batches, -1)
    batch_sizes, ann_correct = [], 0
    engine = "steps" if stepwise else (engine or default_engine())
    if engine not in ("events", "layers", "steps"):
        raise ValueError(f"unknown engine {engine!r}: use events, layers or steps")
    if verify and not compare_with_ann:
        raise ValueError("verify=True needs compare_with_ann=True")
    mismatch_counts = {layer.name: 0 for layer in arch.hidden}
    mismatches = []

    bar = tqdm(total=len(images), unit="img", disable=None if progress else True,
               desc=f"{arch.name} k={model.k}")
    for batch in range(num_batches):
        start = batch * batch_size
        x_batch, y_batch = images[start:start + batch_size], labels[start:start + batch_size]
        batch_sizes.append(len(x_batch))
        if compare_with_ann:
            ann_counts, ann_logits = quantized_ann.forward_network(network, x_batch)
            ann_predictions = np.argmax(ann_logits, axis=1)
            ann_correct += int(np.sum(ann_predictions == y_batch))

        trace = _run_batch(network, x_batch, time_steps, engine, keep_counts=verify)
        predictions = trace.predictions
        records["accuracy"][batch] = np.sum(predictions == y_batch, axis=1)
        records["spike_num"][batch] = np.cumsum(trace.spikes.sum(axis=1))
        records["spike_collect"][batch] = np.cumsum(trace.net_spikes.sum(axis=1))
        records["sop_num"][batch] = np.cumsum(trace.sops.sum(axis=1))
        spiking_steps = np.nonzero(trace.spikes.sum(axis=1))[0]
        if len(spiking_steps):
            last_spike_step[batch] = spiking_steps[-1]
        if compare_with_ann:
            disagree = predictions != ann_predictions
            last_disagreement[start:start + len(x_batch)] = np.where(
                disagree.any(axis=0), time_steps - 1 - np.argmax(disagree[::-1], axis=0), -1)

        if verify:
            _compare_counts(arch, trace.final_counts, ann_counts, start,
                            mismatch_counts, mismatches)
        bar.update(len(x_batch))
    bar.close()
    if not compare_with_ann:
        ann_correct, last_disagreement = None, None
    return SimulationResult(records, batch_sizes, ann_correct, last_disagreement,
                            last_spike_step, mismatch_counts if verify else {}, mismatches)


def _run_batch(network, images, time_steps, engine, keep_counts):
    """Return the Trace of `images` from the chosen engine.

    The events engine writes the final counts only if `keep_counts`, and the others always do.
    """
    if engine == "events":
        return network.run_events(images, time_steps, keep_counts)
    if engine == "layers":
        return network.run(images, time_steps)
    network.reset(len(images))
    columns = {name: np.zeros((time_steps, len(images)), dtype=np.int64)
               for name in ("predictions", "spikes", "net_spikes", "sops")}
    for time_step in range(time_steps):
        potential, per_image = network.step(images, time_step, per_image=True)
        columns["predictions"][time_step] = np.argmax(potential, axis=1)
        columns["spikes"][time_step], columns["net_spikes"][time_step], \
            columns["sops"][time_step] = per_image
    return Trace(final_counts=network.spike_counts(), **columns)


def _compare_counts(arch, snn_counts, ann_counts, first_image, mismatch_counts, mismatches):
    for layer, snn, ann in zip(arch.hidden, snn_counts, ann_counts):
        differ = snn != ann
        mismatch_counts[layer.name] += int(np.count_nonzero(differ))
        room = MAX_REPORTED_MISMATCHES - len(mismatches)
        for image, row, column, channel in np.argwhere(differ)[:max(room, 0)]:
            mismatches.append(Mismatch(
                int(first_image + image), layer.name, (int(row), int(column)), int(channel),
                int(snn[image, row, column, channel]), int(ann[image, row, column, channel])))


def first_stable_step(values):
    """Return the first 1-based index from which `values` keep their last value."""
    values = np.asarray(values)
    changed = np.nonzero(values != values[-1])[0]
    return int(changed[-1]) + 2 if len(changed) else 1


def summarize(result, model, time_steps, batch_size, run_dir=None):
    """Return the summary.json content of a run: settings, accuracies, latencies, counts."""
    arch = model.architecture
    num_images = int(sum(result.batch_sizes))
    accuracy_per_step = result.logs["accuracy"].sum(axis=0)
    final = {name: int(values[:, -1].sum()) for name, values in result.logs.items()}
    compared = result.ann_correct is not None
    last_disagreement = int(result.last_disagreement.max()) if compared else None
    last_spike = int(result.last_spike_step.max())
    return {
        "architecture": arch.name,
        "k": model.k,
        "time_steps": time_steps,
        "batch_size": batch_size,
        "num_images": num_images,
        "num_batches": len(result.batch_sizes),
        "batch_sizes": result.batch_sizes,
        "neuron_count": arch.neuron_count(),
        "ann_operation_count": arch.ann_operation_count(),
        "ann_accuracy": model.metadata.get("test_accuracy"),
        "ann_accuracy_images": model.metadata.get("num_test_images"),
        "numpy_ann_accuracy": result.ann_correct / num_images if compared else None,
        "snn_accuracy": final["accuracy"] / num_images,
        # 1-based time steps; None when not reached within time_steps.
        "stable_accuracy_step": first_stable_step(accuracy_per_step),
        "ann_agreement_step": (last_disagreement + 2
                               if compared and last_disagreement < time_steps - 1 else None),
        "settled_step": last_spike + 2 if last_spike < time_steps - 1 else None,
        "spikes_per_image": final["spike_num"] / num_images,
        "positive_spikes_per_image": (final["spike_num"] + final["spike_collect"]) / 2 / num_images,
        "negative_spikes_per_image": (final["spike_num"] - final["spike_collect"]) / 2 / num_images,
        "sops_per_image": final["sop_num"] / num_images,
        "verify_mismatches": result.mismatch_counts or None,
        # Relative to the run folder, so that committed logs hold no machine's paths.
        "model": os.path.relpath(os.path.abspath(model.path), os.path.abspath(run_dir))
        if run_dir else os.path.abspath(model.path),
    }


def run(arch, args):
    """Convert the model in --model_dir at --k, simulate it, write figs/k<k>/; return the exit code."""
    # Options and the model are checked before the data is read, so a mistake costs no time.
    # load_test_set raises DataError unless the test set has exactly TEST_SIZE images.
    if args.num_images is not None and args.num_images > TEST_SIZE:
        raise UsageError(
            f"--num_images {args.num_images} is larger than the test set "
            f"({TEST_SIZE} images): use at most {TEST_SIZE}")

    check_output_folder(args.figs_dir, "--figs_dir")
    logs.check_figs_architecture(args.figs_dir, arch.name, k=args.k)

    model = load_model(os.path.join(args.model_dir, MODEL_FILE_NAME), arch=arch, k=args.k,
                       allow_pickle=args.allow_pickle)
    if model.k == "unknown":
        model.metadata["k"] = args.k
        log.warning("%s is in the original layout without metadata: converting it as k=%d "
                    "(from --k) with batch-norm epsilon %g", model.path, args.k,
                    DEFAULT_BN_EPSILON)

    x_test, y_test = load_test_set(args.data_dir)
    x_test, y_test = x_test[:args.num_images], y_test[:args.num_images]

    try:
        result = simulate(model, x_test, y_test, args.time_steps, args.batch_size,
                          verify=args.verify, engine=args.engine)
    except MemoryError as error:
        raise UsageError(
            f"not enough memory to simulate {len(x_test)} images for --time_steps "
            f"{args.time_steps} with --batch_size {args.batch_size} ({error}). Use fewer "
            f"--time_steps, a smaller --batch_size or fewer --num_images.") from None
    run_dir = os.path.join(args.figs_dir, f"k{args.k}")
    summary = summarize(result, model, args.time_steps, args.batch_size, run_dir)
    summary["command"] = " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:])
    logs.write_run_logs(run_dir, result.logs, summary)

    _report(summary, result, run_dir, verify=args.verify)
    if args.verify and (any(result.mismatch_counts.values()) or summary["settled_step"] is None):
        return 1
    return 0


def _report(summary, result, run_dir, verify):
    def percent(value):
        return "n/a" if value is None else f"{100 * value:.2f}%"

    def since(value):
        if value is None:
            steps = summary["time_steps"]
            return "not within the 1 step" if steps == 1 else f"not within the {steps} steps"
        return f"from step {value}"

    recorded_images = summary.get("ann_accuracy_images")
    recorded = percent(summary["ann_accuracy"])
    if recorded_images is not None:
        recorded += f" on {recorded_images} images"

    if verify:
        for layer, count in result.mismatch_counts.items():
            log.info("verify %s: %d neurons differ from the quantized ANN", layer, count)
        for mismatch in result.mismatches:
            log.error("mismatch: image %d, layer %s, position %s, channel %d: net spike count %d, "
                      "ANN activation %d", mismatch.image, mismatch.layer, mismatch.position,
                      mismatch.channel, mismatch.snn_count, mismatch.ann_count)
        if summary["settled_step"] is None:
            log.error("verify: neurons were still spiking at the last time step; counts have not "
                      "settled. Run again with more --time_steps.")

    print(f"{summary['architecture']} k={summary['k']}: SNN accuracy "
          f"{percent(summary['snn_accuracy'])} after {summary['time_steps']} time "
          f"step{'' if summary['time_steps'] == 1 else 's'} "
          f"(NumPy ANN {percent(summary['numpy_ann_accuracy'])} on the same "
          f"{summary['num_images']} image{'' if summary['num_images'] == 1 else 's'}; "
          f"TensorFlow ANN recorded in the model file "
          f"{recorded}); accuracy final {since(summary['stable_accuracy_step'])}, "
          f"predictions equal the ANN's {since(summary['ann_agreement_step'])}, spikes settled "
          f"{since(summary['settled_step'])}; {summary['spikes_per_image']:.0f} spikes and "
          f"{summary['sops_per_image']:.0f} SOPs per image; logs in {run_dir}")
