"""A converted module is an ordinary module: state_dict, deepcopy, save/load, and DistributedDataParallel."""
import copy
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torchvision
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import octify
from octify.layers import OctStochasticDepth

WORLD_SIZE, STEPS, BATCH = 2, 3, 8


def converted_resnet18():
    torch.manual_seed(0)
    return octify.convert(torchvision.models.resnet18(weights=None, num_classes=10), 0.5,
                          input_shape=(1, 3, 64, 64), min_size=4).module


def test_state_dict_round_trips_and_deepcopy_works():
    module = converted_resnet18().eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = module(x)
    twin = converted_resnet18()
    for parameter in twin.parameters():
        nn.init.normal_(parameter)
    twin.load_state_dict(module.state_dict())
    clone = copy.deepcopy(module)
    with torch.no_grad():
        torch.testing.assert_close(twin.eval()(x), expected)
        torch.testing.assert_close(clone(x), expected)


def test_saved_module_loads_back_and_runs(tmp_path):
    module = converted_resnet18().eval()
    x = torch.randn(1, 3, 72, 56)
    torch.save(module, tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), module(x))


def test_stochastic_depth_draws_one_mask_for_both_branches():
    torch.manual_seed(0)
    layer = OctStochasticDepth(0.5, "row").train()
    high, low = layer((torch.ones(64, 2, 4, 4), torch.ones(64, 3, 2, 2)))
    kept_high = high.flatten(1).amax(1) > 0
    kept_low = low.flatten(1).amax(1) > 0
    assert torch.equal(kept_high, kept_low) and 0 < kept_high.sum() < 64


def test_efficientnet_stochastic_depth_is_converted_branch_aware():
    model = torchvision.models.efficientnet_b0(weights=None)
    module = octify.convert(model, 0.5).module
    assert any(isinstance(m, OctStochasticDepth) for m in module.modules())


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _train(module, inputs, targets, optimizer):
    losses = []
    for _ in range(STEPS):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(module(inputs), targets)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def _ddp_worker(rank, port, state_path, data_path, result_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    try:
        module = converted_resnet18()
        module.load_state_dict(torch.load(state_path))
        inputs, targets = torch.load(data_path)
        shard = slice(rank * BATCH // WORLD_SIZE, (rank + 1) * BATCH // WORLD_SIZE)
        ddp = DistributedDataParallel(module.eval())  # eval: BatchNorm uses running statistics
        _train(ddp, inputs[shard], targets[shard], torch.optim.SGD(ddp.parameters(), lr=0.1))
        if rank == 0:
            torch.save(module.state_dict(), result_path)
    finally:
        dist.destroy_process_group()


def test_trains_under_distributed_data_parallel_like_one_process(tmp_path):
    module = converted_resnet18()
    torch.manual_seed(1)
    inputs, targets = torch.randn(BATCH, 3, 64, 64), torch.randint(0, 10, (BATCH,))
    torch.save(module.state_dict(), tmp_path / "state.pt")
    torch.save((inputs, targets), tmp_path / "data.pt")

    mp.spawn(_ddp_worker, args=(_free_port(), tmp_path / "state.pt", tmp_path / "data.pt", tmp_path / "ddp.pt"),
             nprocs=WORLD_SIZE, join=True)

    single = converted_resnet18()
    single.load_state_dict(torch.load(tmp_path / "state.pt"))
    _train(single.eval(), inputs, targets, torch.optim.SGD(single.parameters(), lr=0.1))
    distributed = converted_resnet18()
    distributed.load_state_dict(torch.load(tmp_path / "ddp.pt"))
    with torch.no_grad():
        loss_single = nn.functional.cross_entropy(single(inputs), targets)
        loss_distributed = nn.functional.cross_entropy(distributed.eval()(inputs), targets)
    torch.testing.assert_close(loss_distributed, loss_single, rtol=1e-4, atol=1e-5)
