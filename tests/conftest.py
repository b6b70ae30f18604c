import torch

torch.set_num_threads(1)   # robust on a shared 2-core machine (no oversubscription)
