import torch

torch.set_num_threads(1)   # robust on a shared 2-core machine (no oversubscription)

import pytest  # noqa: E402


@pytest.fixture
def interrupt_at_epoch(monkeypatch):
    """``interrupt_at_epoch(n)``: the next training raises KeyboardInterrupt when epoch ``n``
    starts (a kill between checkpoints); ``interrupt_at_epoch(None)`` restores the loop."""
    from core import engine
    original = engine.train_one_epoch

    def arm(epoch):
        def killed(*args, **kwargs):
            if args[4] == epoch:
                raise KeyboardInterrupt
            return original(*args, **kwargs)
        monkeypatch.setattr(engine, "train_one_epoch", original if epoch is None else killed)
    return arm
