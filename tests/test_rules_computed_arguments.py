"""Ops whose arguments are computed in the graph, such as pooling sized by the input (rules/pooling.py).

``F.avg_pool2d(x, x.size()[2:])`` (global pooling written as a pooling over the whole map, as
in DPN and many older CNNs) has a kernel that symbolic tracing records as graph nodes: the
pooling rule cannot read its geometry, so the pooling gets a plain tensor, and the network
still converts and runs at any size.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import octify
from octify.layers import OctConv2d


class GlobalPoolNet(nn.Module):
    def __init__(self, kernel):
        super().__init__()
        self.kernel = kernel
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.conv1 = nn.Conv2d(16, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1)

    def forward(self, x):
        x = self.conv2(F.relu(self.conv1(F.relu(self.stem(x)))))
        return F.avg_pool2d(x, kernel_size=self.kernel(x)).flatten(1) + self.conv3(x).mean((2, 3))


@pytest.mark.parametrize("kernel", [lambda x: x.size()[2:], lambda x: (x.size(2), x.size(3)), lambda x: x.shape[-1]],
                         ids=["size-slice", "size-pair", "shape-item"])
def test_pooling_sized_in_the_graph_gets_a_plain_tensor(kernel):
    model = GlobalPoolNet(kernel).eval()
    conversion = octify.convert(model, 0.5, input_shape=(1, 3, 32, 32))
    octave = [name for name, m in conversion.module.named_modules() if isinstance(m, OctConv2d) and not m.is_plain]
    assert octave == ["conv1", "conv2", "conv3"]
    assert "computed in the graph" in conversion.explain()
    for size in ((32, 32), (33, 31)):
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            assert conversion.module.eval()(x).shape == model(x).shape == (2, 16)
    assert octify.convert(model, 0.0, input_shape=(1, 3, 32, 32)).module.eval()(x).allclose(model(x), atol=1e-6)
