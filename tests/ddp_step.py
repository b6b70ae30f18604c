"""One doctor-loss training step, in one process or under torchrun (used by test_distributed).

    PYTHONPATH=. python tests/ddp_step.py OUT.pt            # one process, batch of 8
    PYTHONPATH=. torchrun --nproc_per_node 2 tests/ddp_step.py OUT.pt   # 2 ranks x 4 samples
"""
import sys

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

import models
from core.channel_stats import ChannelStatistics
from core.grad_constraint import ChannelTerm, DoctorLoss, SpatialTerm
from loaders import Batch
from utils.distributed import cleanup, init_distributed


def main(out: str) -> None:
    info, device = init_distributed(torch.device("cpu"))
    torch.manual_seed(0)
    model = models.load_model("smallcnn", 1, 4, image_size=32)
    x, y = torch.randn(8, 1, 32, 32), torch.tensor([0, 1, 2, 3, 3, 2, 1, 0])
    masks = (torch.rand(8, 1, 32, 32) > 0.5).float()
    annotated = torch.tensor([True, False] * 4)
    stats = ChannelStatistics.for_model(model, [0], 4)
    stats.sums[next(iter(stats.sums))] = torch.rand(4, 128, dtype=torch.float64)
    stats.counts[:] = 1
    doctor = DoctorLoss([ChannelTerm(model, stats, [0], 0.5),
                         SpatialTerm(model, [0], 0.5, expand_px=1)], model=model)
    # BatchNorm in eval mode: batch statistics would differ between 8 samples and 2 x 4.
    model.eval()
    net = DistributedDataParallel(model) if info.enabled else model
    part = slice(info.rank * 8 // info.world_size, (info.rank + 1) * 8 // info.world_size)
    x, y, masks, annotated = x[part], y[part], masks[part], annotated[part]
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    logits = net(x)
    extra, _ = doctor(Batch(x, y, [], masks, annotated), x, y, logits)
    (F.cross_entropy(logits, y) + extra).backward()
    optimizer.step()
    if info.is_main:
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, out)
    doctor.remove()
    cleanup()


if __name__ == "__main__":
    main(sys.argv[1])
