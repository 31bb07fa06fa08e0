"""Pin ultralytics 8.4 to THREADS torch threads on the CPU, as kubeyolo runs with RAYON_NUM_THREADS.

ultralytics' select_device resets torch to NUM_THREADS = cpu_count - 1 (1 on a 2-core machine)
in the trainer and again in the validator; `pin(threads)` makes both keep `threads`. Import this
before building a YOLO model. Used by train_ultralytics.py and tune_ultralytics.py.
"""
import os


def pin(threads: int):
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch
    from ultralytics.utils import torch_utils
    import ultralytics.engine.trainer as trainer

    torch.set_num_threads(threads)
    torch_utils.NUM_THREADS = threads
    sel = torch_utils.select_device

    def select(*a, **k):
        d = sel(*a, **k)
        torch.set_num_threads(threads)
        return d

    torch_utils.select_device = select
    trainer.select_device = select
    return torch
