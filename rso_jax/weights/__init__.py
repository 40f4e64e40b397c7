"""Model weights on disk: T5X checkpoints, HF safetensors and orbax parameter checkpoints.

  formats        the one dispatcher: detect a checkpoint's format, check it fits a model,
                 restore it onto the mesh or read it onto the host
  t5x            T5X checkpoints (t5x_adafactor: the optimizer state a written one carries)
  hf             HF safetensors directories (hf_keys: HF's names and config fields)
  orbax_params   our orbax parameter checkpoints, with the model config beside them
  tree           flat views of parameter trees and the shape check every format uses
  read_errors    how an unreadable checkpoint is reported
  convert        the command-line converter (`python -m rso_jax.weights.convert`)
  roundtrip      a T5X checkpoint through every format and back, scored on the mesh
"""
