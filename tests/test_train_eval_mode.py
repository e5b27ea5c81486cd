"""A converted module follows .train() / .eval() as the original does, or the conversion says it cannot."""
import warnings

import pytest
import torch
from torch import nn

import octify

timm = pytest.importorskip("timm")


@pytest.mark.parametrize("alpha", [0, 0.5])
def test_a_timm_model_converted_in_train_mode_follows_eval_mode_afterwards(recwarn, alpha):
    torch.manual_seed(0)
    model = timm.create_model("efficientnet_b0", pretrained=False, drop_path_rate=0.2)  # timm builds in train mode
    x = torch.randn(2, 3, 64, 64)
    conversion = octify.convert(model, alpha, example_inputs=(x,))
    assert model.training and not [w for w in recwarn if "self.training" in str(w.message)]
    converted = conversion.module.eval()
    with torch.no_grad():
        first, second = converted(x), converted(x)
        assert torch.equal(first, second)  # no drop path, running statistics: eval mode
        if alpha == 0:
            torch.testing.assert_close(first, model.eval()(x), rtol=0, atol=0)
    converted.train()
    with torch.no_grad():
        assert not torch.equal(converted(x), converted(x))  # drop path draws again in train mode


class TrainingBranch(nn.Module):
    def forward(self, x):
        return x * 0.5 if self.training else x


class ReadsTheMode(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.gate = nn.Conv2d(3, 8, 3, padding=1), TrainingBranch()

    def forward(self, x):
        return self.gate(self.conv(x))


def test_code_reading_the_mode_is_reported_and_leaf_modules_keep_it_live():
    model = ReadsTheMode().train()
    with pytest.warns(UserWarning, match=r"reads self.training .* keeps train mode's choices .* `mul = conv \* 0.5"):
        conversion = octify.convert(model, 0.5, input_shape=(1, 3, 16, 16))
    assert [note.kind for note in conversion.notes].count("mode") == 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kept = octify.convert(model, 0, input_shape=(1, 3, 16, 16), leaf_modules=[TrainingBranch]).module
    assert not [w for w in caught if "self.training" in str(w.message)]
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(kept.eval()(x), model.eval()(x), rtol=0, atol=0)
