"""LoRA training for advisors: data sets, training runs and the adapter registry.

`dataset`, `augment`, `config`, `registry`, `plot`, `merge` and `export_mlx` import
without torch (merge and export load it inside their functions); `train` and `collate`
import torch at the top, and the CLI imports them only inside its handlers.
"""
