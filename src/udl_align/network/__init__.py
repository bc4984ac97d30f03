"""The UDL network: models, their inputs, losses, prediction, the label-free calibration and the
checkpoint format (with the shipped weights)."""
