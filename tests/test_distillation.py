"""octify.distill and octify.DistillationLoss: the converted network learns from the original."""
import copy
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import octify
from octify.recovery.features import FeatureTap

from test_convert_oracles import block_constant, randomize_batchnorm

WORLD_SIZE, BATCH = 2, 8


class SmallClassifier(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.body = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()),
            nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU()),
            nn.Sequential(nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU()))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, classes))

    def forward(self, x):
        return self.head(self.body(x))


class PointwiseSegmenter(nn.Module):
    """1x1 convolutions returning a map: exact at any alpha on 2x2-block-constant inputs."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Sequential(nn.Conv2d(3, 16, 1), nn.BatchNorm2d(16), nn.ReLU()),
                                  nn.Sequential(nn.Conv2d(16, 16, 1), nn.BatchNorm2d(16), nn.ReLU()))
        self.out = nn.Conv2d(16, 2, 1)

    def forward(self, x):
        return self.out(self.body(x))


def teacher_and_student(alpha=0.5, size=16, **options):
    torch.manual_seed(0)
    teacher = randomize_batchnorm(SmallClassifier()).eval()
    return teacher, octify.convert(teacher, alpha, input_shape=(1, 3, size, size), **options).module


def test_alpha_zero_student_has_zero_loss():
    teacher, student = teacher_and_student(alpha=0.0)
    x = torch.randn(4, 3, 16, 16)
    with octify.DistillationLoss(student.eval(), teacher, features=["body.0", "body.1"]) as loss:
        value = loss(x)
    assert set(loss.last) == {"output", "features"}
    assert value.item() == pytest.approx(0.0, abs=1e-6)


def test_octave_features_are_compared_with_the_original_split_and_merged():
    torch.manual_seed(0)
    teacher = randomize_batchnorm(PointwiseSegmenter()).eval()
    x = block_constant(3, 12, 12, batch=4)
    student = octify.convert(teacher, 0.5, example_inputs=(x,), plain_stem=False, min_size=2).module.eval()
    with octify.DistillationLoss(student, teacher) as exact:
        assert exact.features == ["body.0", "body.1"]  # the blocks; their layers are inside them
        assert all(tap.split is not None for tap in exact._taps.values())  # both octave
        assert exact(x).item() == pytest.approx(0.0, abs=1e-6)  # block-constant: the student is exact
        noisy = x + torch.randn_like(x)  # detail the low branches cannot hold
        loss = exact(noisy)
        assert exact.last["output"] > 1e-3 and exact.last["features"] > 1e-3
        assert loss.item() == pytest.approx(exact.last["output"].item() + exact.last["features"].item(), rel=1e-5)


def _calibrated_teacher_and_student(data):
    teacher, _ = teacher_and_student()
    teacher = octify.calibrate(teacher, data).eval()  # statistics of the data, as a trained network's are
    return teacher, octify.convert(teacher, 0.5, input_shape=(1, 3, 16, 16)).module


def _eval_loss(student, teacher, data):
    with octify.DistillationLoss(student.eval(), teacher) as loss, torch.no_grad():
        return loss(data).item()


def test_distillation_lowers_the_loss_and_leaves_no_taps():
    data = torch.randn(64, 3, 16, 16)
    teacher, student = _calibrated_teacher_and_student(data)
    code, state = student.code, copy.deepcopy(teacher.state_dict())
    result = octify.distill(student, teacher, data, steps=30, progress=False)
    assert result.features == ["body.1", "body.2"]  # body.0 is the stem, plain
    assert len(result.losses) == 30 and result.seconds > 0
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < 0.8 * first, result.losses  # batch-to-batch noise is about 5%
    assert student.code == code and not any(isinstance(m, FeatureTap) for m in student.modules())
    assert all(torch.equal(v, state[k]) for k, v in teacher.state_dict().items())
    assert not any(m._forward_hooks for m in teacher.modules())


def test_distillation_with_frozen_batch_norm_lowers_the_eval_mode_loss():
    data = torch.randn(64, 3, 16, 16)
    teacher, student = _calibrated_teacher_and_student(data)
    before = _eval_loss(student, teacher, data)
    octify.distill(student, teacher, data, steps=30, progress=False, train_batch_norm=False)
    assert _eval_loss(student, teacher, data) < 0.8 * before


def test_labels_add_a_cross_entropy_term():
    teacher, student = teacher_and_student()
    x, labels = torch.randn(4, 3, 16, 16), torch.tensor([1, 2, 3, 4])
    with octify.DistillationLoss(student.eval(), teacher, features=None, label_weight=0.5) as loss:
        value = loss(x, labels)
        with torch.no_grad():
            expected = nn.functional.cross_entropy(student(x), labels)
    torch.testing.assert_close(loss.last["labels"], expected)
    torch.testing.assert_close(value, loss.last["output"] + 0.5 * expected)
    result = octify.distill(student, teacher, [(x, labels)], steps=2, features=None, progress=False)
    assert len(result.losses) == 2


def test_feature_names_are_checked():
    teacher, student = teacher_and_student()
    with pytest.raises(ValueError, match="'body.5' is not a module of the original; did you mean"):
        octify.DistillationLoss(student, teacher, features=["body.5"])
    with pytest.raises(ValueError, match="features must be 'auto', None or a list"):
        octify.DistillationLoss(student, teacher, features="body.0")
    with pytest.raises(ValueError, match="the student must be a network from octify.convert"):
        octify.DistillationLoss(teacher, teacher)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        octify.distill(student, teacher, torch.randn(4, 3, 16, 16), steps=0)


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _gradients(module):
    return {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}


def _ddp_worker(rank, port, data_path, result_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    try:
        teacher, student = teacher_and_student()
        x = torch.load(data_path)[rank * BATCH // WORLD_SIZE:(rank + 1) * BATCH // WORLD_SIZE]
        ddp = DistributedDataParallel(student.eval())
        with octify.DistillationLoss(ddp, teacher, features=["body.0", "body.1"]) as loss:
            loss(x).backward()
        torch.save(_gradients(student), f"{result_path}.{rank}")
    finally:
        dist.destroy_process_group()


def test_loss_under_distributed_data_parallel_averages_gradients_like_one_process(tmp_path):
    x = torch.randn(BATCH, 3, 16, 16)
    torch.save(x, tmp_path / "data.pt")
    mp.spawn(_ddp_worker, args=(_free_port(), tmp_path / "data.pt", tmp_path / "grads"), nprocs=WORLD_SIZE, join=True)
    ranks = [torch.load(tmp_path / f"grads.{rank}") for rank in range(WORLD_SIZE)]

    teacher, student = teacher_and_student()
    with octify.DistillationLoss(student.eval(), teacher, features=["body.0", "body.1"]) as loss:
        (sum(loss(half) for half in x.split(BATCH // WORLD_SIZE)) / WORLD_SIZE).backward()
    expected = _gradients(student)
    assert set(ranks[0]) == set(expected) and len(expected) > 10
    for name, gradient in expected.items():
        assert torch.equal(ranks[0][name], ranks[1][name]), name
        torch.testing.assert_close(ranks[0][name], gradient, rtol=1e-4, atol=1e-6)


def test_a_module_loaded_from_a_file_names_no_features(tmp_path):
    teacher, student = teacher_and_student()
    torch.save(student, tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    with pytest.raises(ValueError, match="records no module names and splits .* pass features=None"):
        octify.DistillationLoss(loaded, teacher)
    with octify.DistillationLoss(loaded.eval(), teacher, features=None) as loss:
        assert loss(torch.randn(2, 3, 16, 16)).item() > 0
