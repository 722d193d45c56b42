"""Test helpers of ndif-jupyter: tiny checkpoints, plain-hook ground truth, real Jupyter processes and notebook checks.

- `tiny_models`: tiny GPT-2 and Llama checkpoints built from a config, with a byte-level BPE tokenizer.
- `reference`: plain PyTorch forward hooks on a separately loaded model, the ground truth results are checked against.
- `jupyter_process`: a real `jupyter server`, JupyterLab or Kernel Gateway process, and kernels driven over websockets.
- `notebook_check`: run a notebook in a real kernel and compare its outputs with the stored ones
  (`python -m ndif_testing.notebook_check [--update] NOTEBOOK...`).
"""
