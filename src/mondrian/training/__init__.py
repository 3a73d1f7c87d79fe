"""LoRA training for advisors: data sets, training runs and the adapter registry.

    data sets      dataset (build_dataset), targets (what each image teaches), dataset_files
                   (the files, their hashes, reading back), augment
    a run          config (TrainConfig), train (the PyTorch loop), setup (model, LoRA, loaders,
                   optimizer), collate (batches), run_dir (folder, metrics, checkpoints),
                   publish (the run becomes advisor@vN), plot (loss curve), mlx_train (MLX)
    versions       registry, merge, export_mlx

`dataset`, `targets`, `dataset_files`, `augment`, `config`, `registry`, `plot`, `merge`
and `export_mlx` import without torch (merge and export load it inside their functions);
the modules of a run import torch at the top, and the CLI imports them only inside its
handlers.
"""
