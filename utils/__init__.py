"""Small shared helpers: seeding, device choice, atomic files, run records."""
from utils.io import atomic_save, atomic_write, atomic_write_text, load_checkpoint, safe_child
from utils.checkpoint import load_weights, save_weights, unwrap, weights_fingerprint
from utils.runtime import add_device_args, get_device, seed_worker, set_seed
from utils.run import RunRecorder, save_args

__all__ = [
    "atomic_save", "atomic_write", "atomic_write_text", "load_checkpoint", "safe_child",
    "load_weights", "save_weights", "unwrap", "weights_fingerprint", "add_device_args", "get_device", "seed_worker", "set_seed", "RunRecorder", "save_args",
]
