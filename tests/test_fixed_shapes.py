"""A model traced with its input's sizes fixed converts, says so, and refuses sizes that could take another path."""
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import octify


class PoolsLargeInputs(nn.Module):
    """Branches on the width: at alpha 0 the conversion must compute exactly this, or refuse."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x):
        if x.shape[-1] > 16:
            x = self.pool(x)
        return self.conv(x)


class FlattensByBatch(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 8 * 8, 4)

    def forward(self, x):
        y = self.conv(x)
        if y.size(1) > 4:
            y = F.relu(y)
        return self.fc(y.view(y.size(0), -1))


def convert_warns(model, shape):
    with pytest.warns(UserWarning, match="sizes fixed") as caught:
        conversion = octify.convert(model.eval(), 0, input_shape=shape)
    return conversion, [str(w.message) for w in caught]


def test_other_sizes_are_refused_naming_the_traced_size():
    model = PoolsLargeInputs()
    conversion, messages = convert_warns(model, (1, 3, 64, 64))
    assert any("accepts inputs of shape (*, *, *, 64) only" in m for m in messages)
    with pytest.raises(ValueError, match=re.escape("sizes fixed at (1, 3, 64, 64)") + ".*" +
                       re.escape("got (1, 3, 32, 32); convert the model again for this size")):
        conversion.module(torch.randn(1, 3, 32, 32))


def test_dimensions_the_model_does_not_read_stay_free():
    model = PoolsLargeInputs()
    conversion, _ = convert_warns(model, (1, 3, 64, 64))
    x = torch.randn(3, 3, 50, 64)  # another batch and height: the forward only reads the width
    torch.testing.assert_close(conversion.module(x), model(x), rtol=0, atol=0)


def test_reading_an_intermediate_batch_size_fixes_every_dimension_read_through_it():
    model = FlattensByBatch()
    conversion, messages = convert_warns(model, (2, 3, 8, 8))
    assert any("(2, 3, 8, 8)" in m for m in messages)  # y.size(1) fixes C, H, W; y.size(0) fixes the batch
    with pytest.raises(ValueError, match=re.escape("got (3, 3, 8, 8)")):
        conversion.module(torch.randn(3, 3, 8, 8))
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(conversion.module(x), model(x), rtol=0, atol=0)


def test_the_report_and_the_notes_say_so():
    conversion, _ = convert_warns(PoolsLargeInputs(), (1, 3, 64, 64))
    kinds = [note["kind"] for note in conversion.report.to_dict()["notes"]]
    assert kinds.count("fixed shapes") == 1


def test_symbolic_models_get_no_guard_and_no_warning(recwarn):
    conversion = octify.convert(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)),
                                0.5, input_shape=(1, 3, 32, 32))
    assert "fixed_shape" not in conversion.module.code
    assert not [w for w in recwarn if "sizes fixed" in str(w.message)]
    assert conversion.module(torch.randn(2, 3, 20, 24)).shape == (2, 8, 20, 24)
