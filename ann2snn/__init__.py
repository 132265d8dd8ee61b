"""Lossless conversion of quantized ANNs into spiking networks with negative spikes.

Modules: `architectures` (the layer descriptions), `data` (Fashion-MNIST),
`tf_model` and `training` (the TensorFlow 1 ANN), `model_file` (the npz),
`spiking_utils` (NumPy spiking layers and neurons), `quantized_ann` (the same
network as a NumPy ANN, for verification), `simulation` (runs the spiking
network over the test set), `logs` and `plotting` (logs and figures).
"""
